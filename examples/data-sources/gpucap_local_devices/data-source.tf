# What a `local` pool can use on the host Terraform runs on.
data "gpucap_local_devices" "this" {}

output "gpu_count" {
  value = data.gpucap_local_devices.this.gpu_count
}

output "device_ids" {
  value = [for d in data.gpucap_local_devices.this.devices : d.id]
}
