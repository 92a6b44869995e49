output "broker_id" {
  value = ferrymq_broker.rabbitmq.id
}

# RUNNING when the three nodes serve as one cluster.
output "status" {
  value = ferrymq_broker.rabbitmq.status
}

# amqps://VIRTUAL_IP:5671: the one endpoint clients need; it survives the loss of any one host.
output "load_balancer_endpoint" {
  value = ferrymq_broker.rabbitmq.load_balancer_endpoint
}

# Every endpoint through the virtual IP (AMQP).
output "load_balancer_endpoints" {
  value = ferrymq_broker.rabbitmq.load_balancer_endpoints
}

# Per node: address, endpoints (amqps://HOST:5671), console URL (https://HOST:15671), role.
output "instances" {
  value = try(ferrymq_broker.rabbitmq.instances, null)
}

output "amqp_endpoints" {
  value = try([for i in ferrymq_broker.rabbitmq.instances : i.endpoints[0]], null)
}

# The deployment CA the nodes' TLS certificates chain to: clients verify the broker with it
# (every listener is TLS only unless plain_listeners = true).
output "ca_certificate" {
  value = ferrymq_broker.rabbitmq.ca_certificate
}
