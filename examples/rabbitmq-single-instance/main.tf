# A single-instance RabbitMQ broker on one FerryMQ appliance host: the FerryMQ counterpart of an
# aws_mq_broker with engine_type = "RabbitMQ" and deployment_mode = "SINGLE_INSTANCE".

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

resource "ferrymq_broker" "rabbitmq" {
  broker_name        = var.broker_name
  engine_type        = "RabbitMQ"
  engine_version     = "3.10.8"
  host_instance_type = var.host_instance_type
  deployment_mode    = "SINGLE_INSTANCE"

  # A new host_instance_type (or engine version) is applied in the weekly maintenance window,
  # one restart, unless apply_immediately is true. Without a window the agents pick one and
  # report it in next_maintenance_window.
  apply_immediately = var.apply_immediately

  dynamic "maintenance_window_start_time" {
    for_each = var.maintenance_window == null ? [] : [var.maintenance_window]
    content {
      day_of_week = maintenance_window_start_time.value.day_of_week
      time_of_day = maintenance_window_start_time.value.time_of_day
      time_zone   = maintenance_window_start_time.value.time_zone
    }
  }

  # The appliance host (its agent listens on HOST:7443) and the blank block device that becomes
  # the broker's volume (the EBS volume of Amazon MQ). FerryMQ formats it only when it is blank.
  instance {
    host   = var.host
    volume = var.volume
  }

  dynamic "user" {
    for_each = var.users
    content {
      username       = user.value.username
      password       = user.value.password
      console_access = user.value.console_access
    }
  }

  # Encryption at rest of the volume (Amazon MQ's encryption_options), only when a key is given.
  # Hosts whose kernel lacks dm-crypt refuse it rather than store data unencrypted.
  dynamic "encryption_options" {
    for_each = var.encryption_key_file == null ? [] : [var.encryption_key_file]
    content {
      key_file = encryption_options.value
    }
  }

  # Your own server certificate instead of one the agent issues from the deployment CA: a
  # directory with cert.pem (naming the host's address), key.pem and chain.pem (your CA
  # certificates, the root last). ca_certificate is then that root. FerryMQ never renews it.
  dynamic "server_certificate" {
    for_each = var.server_certificate_dir == null ? [] : [var.server_certificate_dir]
    content {
      certificate_pem = file("${server_certificate.value}/cert.pem")
      private_key_pem = file("${server_certificate.value}/key.pem")
      ca_chain_pem    = file("${server_certificate.value}/chain.pem")
    }
  }

  timeouts {
    create = "10m"
    update = "10m"
    delete = "10m"
  }
}
