output "broker_id" {
  value = ferrymq_broker.rabbitmq.id
}

output "amqp_endpoint" {
  value = ferrymq_broker.rabbitmq.instances[0].endpoints[0]
}

output "console_url" {
  value = ferrymq_broker.rabbitmq.instances[0].console_url
}

output "status" {
  value = ferrymq_broker.rabbitmq.status
}
