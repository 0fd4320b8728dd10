# A hybrid endpoint: the base on this host (an on-prem site in the EU), bursts to an on-demand
# and a spot EC2 Auto Scaling group in eu-west-1, for a model whose data is personal (PII), within
# a budget. The groups are the AWS provider's; gpucap only steers their desired capacity and
# protects the instances that serve.
#
# The instances join the router of the fabric daemon named in the `fabric` block over an outbound
# TLS connection, so they need no inbound port. See docs/guides/fabric-aws.md.
#
# Change var.burst_region to "us-east-1" and `terraform plan` fails twice over: the groups are
# not in the pools' region, and the endpoint's residency (EU only, PII) refuses a US pool.

terraform {
  required_providers {
    gpucap = { source = "gpucap/gpucap" }
    aws    = { source = "hashicorp/aws", version = ">= 5.40" }
  }
}

variable "fabric_address" {
  description = "The fabric daemon's HTTPS address, reachable from the instances."
  type        = string
}

variable "fabric_token" {
  description = "The fabric daemon's admin token."
  type        = string
  sensitive   = true
}

variable "fabric_ca_pem" {
  description = "The CA (or the certificate itself) the instances verify the daemon with."
  type        = string
}

variable "burst_region" {
  type    = string
  default = "eu-west-1"
}

variable "ami_id" {
  description = "A GPU image with gpucap-runtime installed."
  type        = string
}

variable "subnet_ids" {
  type = list(string)
}

provider "aws" {
  region = var.burst_region
}

provider "gpucap" {
  fabric {
    region       = "eu-west-1"
    address      = var.fabric_address
    token        = var.fabric_token
    ca_cert_file = "${path.module}/fabric-ca.pem"
  }
}

# The token the instances join with: it exists before the endpoint, so the launch template can
# carry it. Change the keeper to rotate (list both hashes on the pools while instances roll).
resource "gpucap_join_token" "burst" {
  keepers = { rotation = "2026-12" }
}

locals {
  endpoint = "claims"
  join_url = "${var.fabric_address}/v1/join/${local.endpoint}"
}

# One launch template per pool: the user data names the pool its instances join as.
resource "aws_launch_template" "gpu" {
  for_each      = toset(["eu-on-demand", "eu-spot"])
  name_prefix   = "gpucap-${each.key}-"
  image_id      = var.ami_id
  instance_type = "g6.xlarge"
  metadata_options {
    http_tokens = "required" # IMDSv2, which the replica polls for the spot interruption notice
  }
  user_data = base64encode(templatefile("${path.module}/join.sh.tftpl", {
    join_url   = local.join_url
    join_token = gpucap_join_token.burst.token
    pool       = each.key
    ca_pem     = var.fabric_ca_pem
  }))
}

resource "aws_autoscaling_group" "on_demand" {
  name                = "gpucap-eu-on-demand"
  min_size            = 0
  max_size            = 4
  vpc_zone_identifier = var.subnet_ids
  launch_template {
    id      = aws_launch_template.gpu["eu-on-demand"].id
    version = "$Latest"
  }
  lifecycle {
    ignore_changes = [desired_capacity] # gpucap steers it
  }
}

resource "aws_autoscaling_group" "spot" {
  name                = "gpucap-eu-spot"
  min_size            = 0
  max_size            = 8
  vpc_zone_identifier = var.subnet_ids
  mixed_instances_policy {
    instances_distribution {
      on_demand_base_capacity                  = 0
      on_demand_percentage_above_base_capacity = 0
      spot_allocation_strategy                 = "price-capacity-optimized"
    }
    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.gpu["eu-spot"].id
        version            = "$Latest"
      }
      override { instance_type = "g6.xlarge" }
      override { instance_type = "g5.xlarge" }
    }
  }
  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

resource "gpucap_gpu_pool" "on_prem" {
  name               = "fra-dc1"
  region             = "fra-dc1"
  jurisdiction       = "EU"
  capacity_type      = "on_prem"
  price_per_gpu_hour = 0.9
  gpu { model = "L4" }
  nodes {
    min = 1
    max = 1
  }
  local { devices = "auto" }
}

resource "gpucap_gpu_pool" "eu_on_demand" {
  name               = "eu-on-demand"
  region             = var.burst_region
  capacity_type      = "on_demand"
  price_per_gpu_hour = 0.98
  gpu { model = "L4" }
  nodes { max = 4 }
  join_token_sha256 = [gpucap_join_token.burst.sha256]
  aws_autoscaling_group { name = aws_autoscaling_group.on_demand.name }
}

resource "gpucap_gpu_pool" "eu_spot" {
  name               = "eu-spot"
  region             = var.burst_region
  capacity_type      = "spot"
  price_per_gpu_hour = 0.42
  gpu { model = "L4" }
  nodes { max = 8 }
  join_token_sha256 = [gpucap_join_token.burst.sha256]
  aws_autoscaling_group { name = aws_autoscaling_group.spot.name }
}

# Spot first; when spot cannot provide a joined replica, on-demand instead.
resource "gpucap_burst_policy" "eu" {
  name          = "eu-burst"
  base_pools    = [gpucap_gpu_pool.on_prem.name]
  burst_pools   = [gpucap_gpu_pool.eu_spot.name, gpucap_gpu_pool.eu_on_demand.name]
  spot_fallback = "on_demand"
  scale_up {
    queue_depth = 16
    for         = "30s"
  }
  scale_down {
    idle_for = "10m"
  }
  budget {
    max_hourly_usd = 6
    on_exhausted   = "queue"
  }
}

resource "gpucap_inference_endpoint" "claims" {
  name         = local.endpoint
  burst_policy = gpucap_burst_policy.eu.name
  model {
    path = "${path.module}/../models/digits-mlp.safetensors"
  }
  replicas {
    min = 1
    max = 8
  }
  data_residency {
    classification        = "pii"
    allowed_jurisdictions = ["EU"]
  }
}

output "url" {
  value = gpucap_inference_endpoint.claims.url
}
