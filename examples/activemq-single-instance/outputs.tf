output "broker_id" {
  value = ferrymq_broker.activemq.id
}

output "status" {
  value = ferrymq_broker.activemq.status
}

# Every endpoint of the instance, OpenWire first, all TLS: ssl://HOST:61617,
# stomp+ssl://HOST:61614, mqtt+ssl://HOST:8883.
output "endpoints" {
  value = try(ferrymq_broker.activemq.instances[0].endpoints, null)
}

output "openwire_endpoint" {
  value = try(ferrymq_broker.activemq.instances[0].endpoints[0], null)
}

output "stomp_endpoint" {
  value = try(one([for e in ferrymq_broker.activemq.instances[0].endpoints : e if length(regexall("^stomp\\+ssl://", e)) > 0]), null)
}

# failover:(ssl://HOST:61617), ready for JMS/OpenWire clients; the same form as active/standby's.
output "failover_url" {
  value = ferrymq_broker.activemq.failover_url
}

output "console_url" {
  value = try(ferrymq_broker.activemq.instances[0].console_url, null)
}

# The deployment CA the broker's TLS certificate chains to: clients verify the broker with it
# (every listener is TLS only unless plain_listeners = true).
output "ca_certificate" {
  value = ferrymq_broker.activemq.ca_certificate
}

# Plain STOMP (stomp://HOST:61613), only with plain_listeners = true.
output "stomp_plain_endpoint" {
  value = try(one([for e in ferrymq_broker.activemq.instances[0].endpoints : e if length(regexall("^stomp://", e)) > 0]), null)
}
