variable "broker_name" {
  description = "Name of the broker (as aws_mq_broker.broker_name)."
  type        = string
  default     = "example-configured"
}

variable "engine_type" {
  description = "ActiveMQ or RabbitMQ."
  type        = string
  default     = "ActiveMQ"
}

variable "engine_version" {
  description = "5.17.2 for ActiveMQ, 3.10.8 for RabbitMQ."
  type        = string
  default     = "5.17.2"
}

variable "host_instance_type" {
  description = "Amazon MQ instance type (ActiveMQ on ebs: mq.m5 types only)."
  type        = string
  default     = "mq.m5.large"
}

variable "host" {
  description = "Address of the FerryMQ appliance host that runs the broker and keeps the configuration's revisions."
  type        = string
}

variable "volume" {
  description = "Blank block device on that host for the broker's data."
  type        = string
}

variable "configuration_data" {
  description = "The configuration's data: ActiveMQ XML or RabbitMQ rabbitmq.conf."
  type        = string
}

variable "configuration_description" {
  description = "Description of the configuration (a change makes a new revision)."
  type        = string
  default     = null
}

variable "configuration_revision" {
  description = "Revision the broker runs; null for the latest."
  type        = number
  default     = null
}

variable "apply_immediately" {
  description = "Apply a new revision now (restarting the engine) instead of in the maintenance window."
  type        = bool
  default     = true
}

variable "general_log" {
  description = "The engine's general log at INFO (else warnings and errors only)."
  type        = bool
  default     = false
}

variable "audit_log" {
  description = "ActiveMQ's audit log (connections, sessions, producers, consumers). ActiveMQ only."
  type        = bool
  default     = false
}

variable "plain_listeners" {
  description = "Also serve the engines' plain (non-TLS) listeners, beside the TLS ones."
  type        = bool
  default     = false
}

variable "users" {
  description = "Broker users. Passwords: at least 12 characters, no ',', ':' or '='."
  type = list(object({
    username       = string
    password       = string
    console_access = bool
  }))
}

variable "maintenance_window" {
  description = "Weekly maintenance window start: day_of_week (MONDAY..SUNDAY), time_of_day (HH:MM), time_zone (IANA name or UTC offset; null for UTC). Null lets FerryMQ pick one."
  type = object({
    day_of_week = string
    time_of_day = string
    time_zone   = string
  })
  default = null
}
