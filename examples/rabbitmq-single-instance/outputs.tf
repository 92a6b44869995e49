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

output "next_maintenance_window" {
  value = ferrymq_broker.rabbitmq.next_maintenance_window
}

output "pending_changes" {
  value = ferrymq_broker.rabbitmq.pending_changes
}
