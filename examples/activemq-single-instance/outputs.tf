output "broker_id" {
  value = ferrymq_broker.activemq.id
}

output "status" {
  value = ferrymq_broker.activemq.status
}

# Every endpoint of the instance, OpenWire first: tcp://HOST:61617, stomp://HOST:61614,
# mqtt://HOST:8883.
output "endpoints" {
  value = try(ferrymq_broker.activemq.instances[0].endpoints, null)
}

output "openwire_endpoint" {
  value = try(ferrymq_broker.activemq.instances[0].endpoints[0], null)
}

output "stomp_endpoint" {
  value = try(one([for e in ferrymq_broker.activemq.instances[0].endpoints : e if length(regexall("^stomp://", e)) > 0]), null)
}

# failover:(tcp://HOST:61617), ready for JMS/OpenWire clients; the same form as active/standby's.
output "failover_url" {
  value = ferrymq_broker.activemq.failover_url
}

output "console_url" {
  value = try(ferrymq_broker.activemq.instances[0].console_url, null)
}
