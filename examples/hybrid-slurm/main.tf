# A hybrid endpoint for personal data (PII): the base runs as Slurm jobs on an EU lab's GPU
# cluster, and load beyond it bursts to a second pool in the EU, within a budget. Slurm stays
# the scheduler: each replica is an ordinary batch job in the lab's partition (its queue,
# account, QOS and limits apply), and gpucap submits and cancels only its own jobs.
#
# The jobs' replicas dial the endpoint's router over an outbound connection, so the nodes need no
# inbound port, but they must reach the router: give var.fabric_address, a fabric daemon in the
# lab's network (docs/guides/fabric-daemon.md). Without it the router runs on this host's
# embedded daemon, which listens on loopback: only jobs on this host could join (plan warns),
# which is how the tests run it against a one-node cluster. See docs/guides/fabric-slurm.md.
#
# Plan reads the partition: a partition the cluster does not have, a `gres` none of its nodes
# has, or `nodes.max` beyond the jobs the partition can run at once is an error.

terraform {
  required_providers {
    gpucap = { source = "gpucap/gpucap" }
  }
}

variable "slurm_rest_url" {
  description = "slurmrestd's URL, e.g. https://slurm.lab.example:6820."
  type        = string
}

variable "slurm_user" {
  description = "The Slurm user the jobs are submitted as (default: USER)."
  type        = string
  default     = null
}

variable "slurm_token_file" {
  description = "A file holding that user's JWT (`scontrol token`); default: SLURM_JWT."
  type        = string
  default     = null
}

variable "partition" {
  description = "The lab's GPU partition."
  type        = string
  default     = "gpu"
}

variable "fabric_address" {
  description = "The fabric daemon the cluster's nodes reach, e.g. https://gpucap.lab.example:7443."
  type        = string
  default     = null
}

variable "fabric_token" {
  description = "The daemon's admin token (default: GPUCAP_FABRIC_TOKEN)."
  type        = string
  sensitive   = true
  default     = null
}

variable "fabric_ca_cert_file" {
  description = "The CA of the daemon's certificate, when it is not publicly trusted."
  type        = string
  default     = null
}

variable "model_path" {
  description = "The model to serve (default: the example digits classifier)."
  type        = string
  default     = null
}

provider "gpucap" {
  state_dir = "${path.module}/.gpucap-state"
  dynamic "fabric" {
    for_each = var.fabric_address == null ? [] : [var.fabric_address]
    content {
      address      = fabric.value
      token        = var.fabric_token
      ca_cert_file = var.fabric_ca_cert_file
    }
  }
}

# The lab's cluster: up to four jobs of one L4 each, charged to the inference account, each job
# replaced before its 24 h limit. The price is the amortised cost of the lab's GPUs.
resource "gpucap_gpu_pool" "lab" {
  name               = "eu-lab-hpc"
  region             = "eu-lab-heidelberg"
  jurisdiction       = "EU"
  capacity_type      = "on_prem"
  tenancy            = "dedicated"
  price_per_gpu_hour = 0.9
  gpu {
    model    = "L4"
    per_node = 1
  }
  nodes { max = 4 }
  slurm {
    rest_url   = var.slurm_rest_url
    user       = var.slurm_user
    token_file = var.slurm_token_file
    partition  = var.partition
    time_limit = "24h"
  }
}

# Burst capacity in the EU (this host's devices standing in for it; a cloud pool would use the
# aws_autoscaling_group driver, as examples/hybrid-aws does).
resource "gpucap_gpu_pool" "burst" {
  name               = "eu-burst"
  region             = "eu-central-1"
  capacity_type      = "on_demand"
  price_per_gpu_hour = 2.5
  gpu { model = "cpu" }
  nodes { max = 2 }
  local { devices = "auto" }
}

resource "gpucap_burst_policy" "lab_first" {
  name        = "lab-first"
  base_pools  = [gpucap_gpu_pool.lab.name]
  burst_pools = [gpucap_gpu_pool.burst.name]
  scale_up {
    queue_depth = 8
    for         = "5s"
  }
  scale_down {
    idle_for = "2m"
  }
  budget {
    max_hourly_usd = 5
    on_exhausted   = "queue"
  }
}

resource "gpucap_inference_endpoint" "claims" {
  name         = "claims"
  burst_policy = gpucap_burst_policy.lab_first.name
  model {
    path = coalesce(var.model_path, "${path.module}/../models/digits-mlp.safetensors")
  }
  replicas {
    min = 1
    max = 6
  }
  data_residency {
    classification        = "pii"
    allowed_jurisdictions = ["EU"]
  }
}

output "url" {
  value = gpucap_inference_endpoint.claims.url
}

output "lab_jobs" {
  description = "The pool's jobs as Slurm reported them at the last refresh."
  value = {
    running = gpucap_gpu_pool.lab.slurm.running
    pending = gpucap_gpu_pool.lab.slurm.pending
  }
}
