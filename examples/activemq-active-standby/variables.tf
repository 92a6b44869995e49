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
