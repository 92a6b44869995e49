variable "broker_name" {
  description = "Name of the broker (as aws_mq_broker.broker_name)."
  type        = string
  default     = "example-activemq"
}

variable "host_instance_type" {
  description = "Amazon MQ instance type the host's limits and the JVM heap are set to (mq.m5.large, ...; ActiveMQ on ebs is offered on mq.m5 types only)."
  type        = string
  default     = "mq.m5.large"
}

variable "storage_type" {
  description = "\"ebs\" (volume: a blank block device; mq.m5 types only, as in Amazon MQ) or \"efs\" (volume: an NFS export server:/export or a shared directory; every type)."
  type        = string
  default     = "ebs"
}

variable "host" {
  description = "Address of the FerryMQ appliance host that runs the broker."
  type        = string
}

variable "volume" {
  description = "Blank block device on that host for the broker's data (KahaDB), e.g. /dev/sdb."
  type        = string
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

variable "auto_minor_version_upgrade" {
  description = "Upgrade to the newest patch of engine_version's minor version in the maintenance window (5.17.2 -> 5.17.6)."
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

variable "plain_listeners" {
  description = "Also serve the plain (non-TLS) listeners, beside the TLS ones."
  type        = bool
  default     = false
}
