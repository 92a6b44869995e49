variable "broker_name" {
  description = "Name of the broker (as aws_mq_broker.broker_name)."
  type        = string
  default     = "example-activemq-ha"
}

variable "host_instance_type" {
  description = "Amazon MQ instance type the hosts' limits and the JVM heap are set to (mq.t3.micro, mq.m5.large, ...)."
  type        = string
  default     = "mq.m5.large"
}

variable "hosts" {
  description = "Addresses of the two FerryMQ appliance hosts (the -1 and -2 instances)."
  type        = list(string)

  validation {
    condition     = length(var.hosts) == 2
    error_message = "ACTIVE_STANDBY_MULTI_AZ takes exactly two hosts."
  }
}

variable "shared_volume" {
  description = "The filesystem both hosts share for the broker's store: an NFS export (server:/export) or an absolute directory both hosts see."
  type        = string
}

variable "virtual_ip" {
  description = "Optional: a free address of the hosts' network for a load balancer in front of the pair (null: none)."
  type        = string
  default     = null
}

variable "users" {
  description = "Broker users. Passwords: at least 12 characters, no ',', ':' or '='."
  type = list(object({
    username       = string
    password       = string
    console_access = bool
  }))
  # Not marked sensitive here: Terraform 1.0 refuses sensitive values as a dynamic block's
  # for_each. The provider marks each user's password sensitive, so plans never show it.
}

variable "apply_immediately" {
  description = "Apply a new instance type, engine version or configuration revision now instead of in the maintenance window."
  type        = bool
  default     = false
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

variable "engine_version" {
  description = "ActiveMQ version (5.17.2 or 5.17.6). An upgrade is applied in the maintenance window, the standby first, unless apply_immediately is true."
  type        = string
  default     = "5.17.2"
}
