# A broker that runs a configuration revision: the FerryMQ counterpart of an aws_mq_configuration
# referenced from an aws_mq_broker's configuration block, with its logs block, for either engine.
#
# Every change of `configuration_data` makes a new revision (latest_revision + 1); the earlier
# ones stay on the hosts, so setting `configuration_revision` to an earlier number rolls back.

terraform {
  required_providers {
    ferrymq = {
      source = "ferrymq/ferrymq"
    }
  }
}

provider "ferrymq" {}

resource "ferrymq_configuration" "this" {
  name           = "${var.broker_name}-configuration"
  description    = var.configuration_description
  engine_type    = var.engine_type
  engine_version = var.engine_version
  # ActiveMQ: a <broker xmlns="http://activemq.apache.org/schema/core"> document; RabbitMQ:
  # rabbitmq.conf lines. Only what FerryMQ allows: anything else is refused at plan time.
  data = var.configuration_data
  # The agents that keep the revisions: the broker's hosts (each broker host must be here).
  hosts = [var.host]
}

resource "ferrymq_broker" "this" {
  broker_name        = var.broker_name
  engine_type        = var.engine_type
  engine_version     = var.engine_version
  host_instance_type = var.host_instance_type
  deployment_mode    = "SINGLE_INSTANCE"
  # TLS listeners always; the plain ones too only when asked for (clients without TLS).
  plain_listeners = var.plain_listeners

  instance {
    host   = var.host
    volume = var.volume
  }

  configuration {
    id = ferrymq_configuration.this.id
    # The latest revision unless a revision is pinned (a rollback).
    revision = coalesce(var.configuration_revision, ferrymq_configuration.this.latest_revision)
  }

  # A new revision takes an engine restart: now with apply_immediately, else in the
  # maintenance window (meanwhile it shows in pending_changes).
  apply_immediately = var.apply_immediately

  dynamic "maintenance_window_start_time" {
    for_each = var.maintenance_window == null ? [] : [var.maintenance_window]
    content {
      day_of_week = maintenance_window_start_time.value.day_of_week
      time_of_day = maintenance_window_start_time.value.time_of_day
      time_zone   = maintenance_window_start_time.value.time_zone
    }
  }

  logs {
    general = var.general_log
    audit   = var.audit_log
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
