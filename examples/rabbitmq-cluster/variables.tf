variable "broker_name" {
  description = "Name of the broker (as aws_mq_broker.broker_name)."
  type        = string
  default     = "example-rabbitmq-cluster"
}

variable "host_instance_type" {
  description = "Amazon MQ instance type each node's limits are set to (clusters are not offered on mq.t3.micro)."
  type        = string
  default     = "mq.m5.large"
}

variable "instances" {
  description = "The three FerryMQ appliance hosts (address of each agent) and a blank block device on each."
  type = list(object({
    host   = string
    volume = string
  }))

  validation {
    condition     = length(var.instances) == 3
    error_message = "CLUSTER_MULTI_AZ takes exactly three instances."
  }
}

variable "virtual_ip" {
  description = "A free address of the hosts' network for the load balancer: the endpoint clients use."
  type        = string
}

variable "users" {
  description = "Broker users (cluster-wide). Passwords: at least 12 characters, no ',', ':' or '='."
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

variable "configuration_data" {
  description = "rabbitmq.conf lines for a ferrymq_configuration the cluster runs (null: none)."
  type        = string
  default     = null
}

variable "load_balancer_hosts" {
  description = "Addresses of the hosts that run the load balancer; null: the broker's hosts. A host that is no instance's runs HAProxy and keepalived only."
  type        = list(string)
  default     = null
}
