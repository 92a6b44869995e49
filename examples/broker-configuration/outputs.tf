output "broker_id" {
  value = ferrymq_broker.this.id
}

output "configuration_id" {
  value = ferrymq_configuration.this.id
}

output "latest_revision" {
  value = ferrymq_configuration.this.latest_revision
}

output "revision" {
  value = ferrymq_broker.this.configuration.revision
}

output "pending_changes" {
  value = ferrymq_broker.this.pending_changes
}

output "endpoints" {
  value = ferrymq_broker.this.instances[0].endpoints
}

output "status" {
  value = ferrymq_broker.this.status
}
