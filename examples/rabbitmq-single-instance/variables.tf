variable "broker_name" {
  description = "Name of the broker (as aws_mq_broker.broker_name)."
  type        = string
  default     = "example-rabbitmq"
}

variable "host_instance_type" {
  description = "Amazon MQ instance type the host's limits are set to (mq.t3.micro, mq.m5.large, ...)."
  type        = string
  default     = "mq.m5.large"
}

variable "host" {
  description = "Address of the FerryMQ appliance host that runs the broker."
  type        = string
}

variable "volume" {
  description = "Blank block device on that host for the broker's data, e.g. /dev/sdb."
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

variable "encryption_key_file" {
  description = "Path, on the host, of a key file to encrypt the volume with (LUKS2); null for none."
  type        = string
  default     = null
}

variable "apply_immediately" {
  description = "Apply a new instance type now (one restart) instead of in the maintenance window."
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

variable "server_certificate_dir" {
  description = "Directory with cert.pem, key.pem and chain.pem of your own server certificate; null for one FerryMQ issues (and renews) from the deployment CA."
  type        = string
  default     = null
}
