# An ActiveMQ active/standby broker on two FerryMQ appliance hosts sharing one filesystem: the
# FerryMQ counterpart of an aws_mq_broker with engine_type = "ActiveMQ" and
# deployment_mode = "ACTIVE_STANDBY_MULTI_AZ" (storage_type = "efs").
#
# Both brokers keep their KahaDB store in one directory of the shared filesystem. The one that
# holds its file lock is active and opens its listeners; the other waits as the standby and takes
# over within seconds when the active dies. Clients use the failover_url (OpenWire) or list both
# instances' endpoints.

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

resource "ferrymq_broker" "activemq" {
  broker_name        = var.broker_name
  engine_type        = "ActiveMQ"
  engine_version     = var.engine_version
  host_instance_type = var.host_instance_type
  deployment_mode    = "ACTIVE_STANDBY_MULTI_AZ"

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
  storage_type = "efs"

  # Two hosts, ideally in different failure domains (Amazon MQ: two availability zones). Each
  # names the same shared filesystem (Amazon MQ: the EFS file system): an NFS export
  # "server:/export" that the agent mounts (NFSv4.1), or a directory already shared by both hosts.
  dynamic "instance" {
    for_each = var.hosts
    content {
      host   = instance.value
      volume = var.shared_volume
    }
  }

  # Optional network load balancer (Amazon MQ's NLB): HAProxy on both hosts forwards OpenWire,
  # STOMP and MQTT to whichever broker is active (the standby opens no port, so it fails the
  # health check), behind a keepalived virtual IP. Clients then need one endpoint, which stays
  # the same across a failover.
  dynamic "load_balancer" {
    for_each = var.virtual_ip == null ? [] : [var.virtual_ip]
    content {
      virtual_ip = load_balancer.value
    }
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
    create = "10m"
    update = "10m"
    delete = "10m"
  }
}
