# A RabbitMQ cluster of three nodes on three FerryMQ appliance hosts behind a network load
# balancer: the FerryMQ counterpart of an aws_mq_broker with engine_type = "RabbitMQ" and
# deployment_mode = "CLUSTER_MULTI_AZ".
#
# The agents form the cluster themselves (one Erlang cookie per broker, derived on every host
# from a secret the provider makes at create; node names on the hosts' addresses). New queues
# in the default vhost are quorum queues, replicated on the three nodes. Clients use one
# endpoint, load_balancer_endpoint: HAProxy on each host forwards it to the nodes that answer
# AMQP, and keepalived moves the virtual IP to another host when its holder dies.

terraform {
  required_providers {
    ferrymq = {
      source = "ferrymq/ferrymq"
    }
  }
}

# The deployment CA and the client certificate come from FERRYMQ_CA_CERT, FERRYMQ_CLIENT_CERT and
# FERRYMQ_CLIENT_KEY (PEM text or file paths).
provider "ferrymq" {}

# Optional rabbitmq.conf lines (only what FerryMQ allows). A new revision restarts the nodes one at
# a time in the maintenance window (or now with apply_immediately), each only once RabbitMQ says
# stopping it leaves every quorum queue a majority.
resource "ferrymq_configuration" "rabbitmq" {
  count          = var.configuration_data == null ? 0 : 1
  name           = "${var.broker_name}-configuration"
  engine_type    = "RabbitMQ"
  engine_version = "3.10.8"
  data           = var.configuration_data
  # The agents that keep the revisions: every node's host.
  hosts = [for i in var.instances : i.host]
}

resource "ferrymq_broker" "rabbitmq" {
  broker_name        = var.broker_name
  engine_type        = "RabbitMQ"
  engine_version     = "3.10.8"
  host_instance_type = var.host_instance_type
  deployment_mode    = "CLUSTER_MULTI_AZ"

  # A new host_instance_type (or engine version) is applied in the weekly maintenance window,
  # one instance at a time, unless apply_immediately is true.
  apply_immediately = var.apply_immediately

  dynamic "maintenance_window_start_time" {
    for_each = var.maintenance_window == null ? [] : [var.maintenance_window]
    content {
      day_of_week = maintenance_window_start_time.value.day_of_week
      time_of_day = maintenance_window_start_time.value.time_of_day
      time_zone   = maintenance_window_start_time.value.time_zone
    }
  }

  # Three hosts, ideally in three failure domains (Amazon MQ: three availability zones), each
  # with a blank block device for its node's data (the EBS volume).
  dynamic "instance" {
    for_each = var.instances
    content {
      host   = instance.value.host
      volume = instance.value.volume
    }
  }

  dynamic "configuration" {
    for_each = ferrymq_configuration.rabbitmq
    content {
      id       = configuration.value.id
      revision = configuration.value.latest_revision
    }
  }

  # HAProxy and keepalived on the broker's hosts, or on the hosts listed in load_balancer_hosts
  # (a host that is no instance's runs the load balancer only).
  load_balancer {
    virtual_ip = var.virtual_ip
    hosts      = var.load_balancer_hosts
  }

  dynamic "user" {
    for_each = var.users
    content {
      username       = user.value.username
      password       = user.value.password
      console_access = user.value.console_access
    }
  }

  timeouts {
    create = "15m"
    update = "15m"
    delete = "10m"
  }
}
