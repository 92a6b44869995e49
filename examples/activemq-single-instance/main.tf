# A single-instance ActiveMQ broker on one FerryMQ appliance host: the FerryMQ counterpart of an
# aws_mq_broker with engine_type = "ActiveMQ" and deployment_mode = "SINGLE_INSTANCE".

terraform {
  required_providers {
    ferrymq = {
      source = "ferrymq/ferrymq"
    }
  }
}

# The deployment CA and the client certificate come from FERRYMQ_CA_CERT, FERRYMQ_CLIENT_CERT and
# FERRYMQ_CLIENT_KEY (PEM text or file paths). Set ca_cert / client_cert / client_key here instead
# if you prefer.
provider "ferrymq" {}

resource "ferrymq_broker" "activemq" {
  broker_name        = var.broker_name
  engine_type        = "ActiveMQ"
  engine_version     = "5.17.2"
  host_instance_type = var.host_instance_type
  deployment_mode    = "SINGLE_INSTANCE"

  # A new host_instance_type (or engine version) is applied in the weekly maintenance window,
  # one instance at a time, unless apply_immediately is true.
  apply_immediately = var.apply_immediately

  # true: the broker runs the newest patch of its minor version, upgraded in the window, while
  # engine_version keeps the version written here.
  auto_minor_version_upgrade = var.auto_minor_version_upgrade

  # Every listener is TLS only; true also opens the plain ones (OpenWire 61616, STOMP 61613).
  plain_listeners = var.plain_listeners

  dynamic "maintenance_window_start_time" {
    for_each = var.maintenance_window == null ? [] : [var.maintenance_window]
    content {
      day_of_week = maintenance_window_start_time.value.day_of_week
      time_of_day = maintenance_window_start_time.value.time_of_day
      time_zone   = maintenance_window_start_time.value.time_zone
    }
  }
  storage_type = var.storage_type

  # The appliance host (its agent listens on HOST:7443) and the blank block device that becomes
  # the broker's volume (the EBS volume of Amazon MQ). FerryMQ formats it only when it is blank.
  instance {
    host   = var.host
    volume = var.volume
  }

  # ActiveMQ's simple authentication plugin; users change in place, without a broker restart.
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
