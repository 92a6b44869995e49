output "broker_id" {
  value = ferrymq_broker.activemq.id
}

# RUNNING when the active broker serves and the other instance is a healthy standby.
output "status" {
  value = ferrymq_broker.activemq.status
}

# failover:(ssl://HOST1:61617,ssl://HOST2:61617): the URL for JMS/OpenWire clients; they follow
# the active broker by themselves.
output "failover_url" {
  value = ferrymq_broker.activemq.failover_url
}

# Per instance (-1, -2): address, role ("active" or "standby", read live at refresh), endpoints
# (OpenWire first, then STOMP and MQTT) and console URL (empty: Debian's 5.17.2 has no web console).
output "instances" {
  value = try(ferrymq_broker.activemq.instances, null)
}

output "roles" {
  value = try({ for i in ferrymq_broker.activemq.instances : i.ip_address => i.role }, null)
}

# Each instance's STOMP endpoint, for STOMP clients that take a list of brokers.
output "stomp_endpoints" {
  value = try(flatten([for i in ferrymq_broker.activemq.instances : [for e in i.endpoints : e if length(regexall("^stomp\\+ssl://", e)) > 0]]), null)
}

output "openwire_endpoints" {
  value = try([for i in ferrymq_broker.activemq.instances : i.endpoints[0]], null)
}

# Through the load balancer's virtual IP (empty without virtual_ip): OpenWire, STOMP, MQTT.
output "load_balancer_endpoints" {
  value = ferrymq_broker.activemq.load_balancer_endpoints
}

# The deployment CA the broker's TLS certificate chains to: clients verify the broker with it
# (every listener is TLS only unless plain_listeners = true).
output "ca_certificate" {
  value = ferrymq_broker.activemq.ca_certificate
}
