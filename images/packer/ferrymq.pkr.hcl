# The FerryMQ appliance VM image: Packer 1.6.6 (Debian 12's) with its built-in qemu builder.
#
#   packer build -var base_image=/var/tmp/ferrymq-images/build/base.qcow2 \
#                -var ssh_private_key_file=/var/tmp/ferrymq-images/build/packer-key images/packer
#
# The base disk comes from images/build-rootfs + images/build-disk (debootstrap from pinned
# packages). Packer boots it under qemu, keeps the engine bundles asked for, seals the image
# (SSH off unless ssh_enabled, no host keys, no machine id, empty logs) and writes a compressed
# qcow2. For other hypervisors or clouds, keep the provisioners and swap the source: see
# images/README.md ("Other builders").

variable "base_image" {
  type        = string
  description = "The base qcow2 disk made by images/build-disk."
}

variable "ssh_private_key_file" {
  type        = string
  description = "The build-only key whose public half build-disk let in; removed from the image."
}

variable "output_name" {
  type    = string
  default = "ferrymq-appliance"
}

variable "output_directory" {
  type    = string
  default = "/var/tmp/ferrymq-images/packer-out"
}

variable "disk_size" {
  type        = string
  default     = "4G"
  description = "Virtual size of the image's disk; the root file system grows to it at first boot."
}

variable "bundles" {
  type        = list(string)
  default     = ["rabbitmq", "activemq"]
  description = "Engine bundles kept in the image: rabbitmq (RabbitMQ + Erlang), activemq (ActiveMQ + JRE)."
}

variable "ssh_enabled" {
  type        = bool
  default     = false
  description = "Leave sshd enabled (root login by key only; you still need to install a key)."
}

variable "accelerator" {
  type    = string
  default = "tcg"
  description = "tcg (software: the only one that works on FerryMQ's build machines) or kvm."
}

source "qemu" "appliance" {
  disk_image           = true
  iso_url              = var.base_image
  iso_checksum         = "none"
  format               = "qcow2"
  disk_size            = var.disk_size
  disk_interface       = "virtio"
  net_device           = "virtio-net"
  disk_compression     = true
  accelerator          = var.accelerator
  headless             = true
  memory               = 1024
  cpus                 = 1
  vm_name              = "${var.output_name}.qcow2"
  output_directory     = var.output_directory
  communicator         = "ssh"
  ssh_username         = "root"
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "10m"
  shutdown_command     = "systemctl poweroff"
  shutdown_timeout     = "5m"
}

build {
  sources = ["source.qemu.appliance"]

  # Keep only the engine bundles asked for (the base carries both).
  provisioner "shell" {
    environment_vars = ["BUNDLES=${join(" ", var.bundles)}"]
    inline = [
      "set -eu",
      "case \" $BUNDLES \" in *' rabbitmq '*) ;; *) DEBIAN_FRONTEND=noninteractive apt-get -y -q purge --autoremove rabbitmq-server 'erlang-*' ;; esac",
      "case \" $BUNDLES \" in *' activemq '*) ;; *) DEBIAN_FRONTEND=noninteractive apt-get -y -q purge --autoremove activemq 'openjdk-*' ;; esac",
      "dpkg-query -W -f='$${Package} $${Version}\\n' rabbitmq-server activemq 2>/dev/null || true",
    ]
  }

  # Seal: SSH off (unless asked), no build key, no host keys, a fresh machine id at first boot.
  provisioner "shell" {
    environment_vars = ["SSH_ENABLED=${var.ssh_enabled}"]
    inline = [
      "set -eu",
      "rm -f /root/.ssh/authorized_keys /etc/ssh/ssh_host_*",
      "if [ \"$SSH_ENABLED\" != true ]; then systemctl disable ssh.service >/dev/null 2>&1 || true; systemctl mask ssh.service; fi",
      "rm -rf /var/lib/ferrymq/* /etc/ferrymq/tls /var/log/journal/* /var/tmp/* /tmp/*",
      "truncate -s 0 /etc/machine-id",
      "fstrim -av || true",
    ]
  }
}
