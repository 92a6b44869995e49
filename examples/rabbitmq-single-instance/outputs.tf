output "broker_id" {
  value = ferrymq_broker.rabbitmq.id
}

output "amqp_endpoint" {
  value = try(ferrymq_broker.rabbitmq.instances[0].endpoints[0], null)
}

output "console_url" {
  value = try(ferrymq_broker.rabbitmq.instances[0].console_url, null)
}

output "status" {
  value = ferrymq_broker.rabbitmq.status
}
