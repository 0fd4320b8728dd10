variable "name" {
  description = "Name of the fabric: the burst policy's name, and the prefix of its pools' names (`NAME-base`, `NAME-burst-1`, …)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{0,47}$", var.name))
    error_message = "name must be 1 to 48 lowercase letters, digits, `-` or `_`, starting with a letter or digit (the pools' names add a suffix of up to 15)."
  }
}

variable "gpu_model" {
  description = "The accelerator of every pool: `H100`, `A100`, `L4`, `A10G`, … or `cpu` for CPU-only capacity."
  type        = string

  validation {
    condition     = length(trimspace(var.gpu_model)) > 0
    error_message = "gpu_model must name a GPU model (for example \"L4\"), or be \"cpu\"."
  }
}

variable "gpus_per_node" {
  description = "GPUs in each node of every pool."
  type        = number
  default     = 1

  validation {
    condition     = var.gpus_per_node >= 1 && var.gpus_per_node <= 64 && floor(var.gpus_per_node) == var.gpus_per_node
    error_message = "gpus_per_node must be a whole number from 1 to 64."
  }
}

variable "base" {
  description = "The base pool, which carries the baseline: owned (`on_prem`) or committed (`reserved`) capacity. `jurisdiction` is needed for on-prem sites the built-in region table does not know; `price_per_gpu_hour` is the amortised cost; `nodes` its size."
  type = object({
    region             = string
    jurisdiction       = optional(string)
    capacity_type      = optional(string, "on_prem")
    tenancy            = optional(string, "dedicated")
    price_per_gpu_hour = optional(number)
    nodes              = optional(number, 1)
  })

  validation {
    condition     = contains(["on_prem", "reserved"], var.base.capacity_type)
    error_message = "base.capacity_type must be \"on_prem\" or \"reserved\": burst capacity (on_demand, spot) goes in `burst`."
  }

  validation {
    condition     = contains(["dedicated", "shared"], var.base.tenancy)
    error_message = "base.tenancy must be \"dedicated\" or \"shared\"."
  }

  validation {
    condition     = var.base.nodes >= 1 && floor(var.base.nodes) == var.base.nodes
    error_message = "base.nodes must be a whole number of at least 1."
  }

  validation {
    condition     = var.base.price_per_gpu_hour == null ? true : var.base.price_per_gpu_hour >= 0
    error_message = "base.price_per_gpu_hour must be 0 or more (USD per GPU-hour)."
  }
}

variable "burst" {
  description = "The burst pools, in the order load spills to them: `on_demand` or `spot` capacity, each with its region, price per GPU-hour and most nodes."
  type = list(object({
    region             = string
    jurisdiction       = optional(string)
    capacity_type      = optional(string, "on_demand")
    tenancy            = optional(string, "shared")
    price_per_gpu_hour = optional(number)
    nodes              = optional(number, 1)
  }))
  default = []

  validation {
    condition     = alltrue([for p in var.burst : contains(["on_demand", "spot"], p.capacity_type)])
    error_message = "every burst pool's capacity_type must be \"on_demand\" or \"spot\": owned and reserved capacity is the base."
  }

  validation {
    condition     = alltrue([for p in var.burst : contains(["dedicated", "shared"], p.tenancy)])
    error_message = "every burst pool's tenancy must be \"dedicated\" or \"shared\"."
  }

  validation {
    condition     = alltrue([for p in var.burst : p.nodes >= 1 && floor(p.nodes) == p.nodes])
    error_message = "every burst pool's nodes must be a whole number of at least 1."
  }

  validation {
    condition     = alltrue([for p in var.burst : p.price_per_gpu_hour == null ? true : p.price_per_gpu_hour >= 0])
    error_message = "every burst pool's price_per_gpu_hour must be 0 or more (USD per GPU-hour)."
  }

  validation {
    condition     = length(var.burst) <= 8
    error_message = "at most 8 burst pools."
  }
}

variable "budget_hourly_usd" {
  description = "The most burst capacity may cost per hour, in USD."
  type        = number

  validation {
    condition     = var.budget_hourly_usd >= 0
    error_message = "budget_hourly_usd must be 0 or more."
  }
}

variable "on_budget_exhausted" {
  description = "What happens to requests once the budget is spent: `queue` (they wait for base capacity) or `reject` (they get 429)."
  type        = string
  default     = "queue"

  validation {
    condition     = contains(["queue", "reject"], var.on_budget_exhausted)
    error_message = "on_budget_exhausted must be \"queue\" or \"reject\"."
  }
}

variable "scale_up_queue_depth" {
  description = "Requests waiting per serving replica that, held for `scale_up_after`, add burst capacity."
  type        = number
  default     = 4

  validation {
    condition     = var.scale_up_queue_depth >= 1 && floor(var.scale_up_queue_depth) == var.scale_up_queue_depth
    error_message = "scale_up_queue_depth must be a whole number of at least 1."
  }
}

variable "scale_up_after" {
  description = "How long the queue must stay that deep before bursting, as a duration such as `30s` or `2m`."
  type        = string
  default     = "1m"

  validation {
    condition     = can(regex("^([0-9]+[smh])+$", var.scale_up_after))
    error_message = "scale_up_after must be a duration such as \"30s\", \"2m\" or \"1h30m\"."
  }
}

variable "idle_for" {
  description = "How long a burst replica may go without requests before it drains and its capacity is released."
  type        = string
  default     = "10m"

  validation {
    condition     = can(regex("^([0-9]+[smh])+$", var.idle_for))
    error_message = "idle_for must be a duration such as \"30s\", \"10m\" or \"1h\"."
  }
}

variable "drain_timeout" {
  description = "How long a draining replica may take to answer the requests it accepted."
  type        = string
  default     = "30s"

  validation {
    condition     = can(regex("^([0-9]+[smh])+$", var.drain_timeout))
    error_message = "drain_timeout must be a duration such as \"30s\" or \"2m\"."
  }
}

variable "local_devices" {
  description = "Devices of this host the `local` driver gives every pool: `auto` (the GPUs if any, else the CPU), `cpu`, or CUDA devices such as `cuda:0,cuda:1`."
  type        = string
  default     = "auto"

  validation {
    condition     = can(regex("^(auto|cpu|cuda:[0-9]+(,cuda:[0-9]+)*)$", var.local_devices))
    error_message = "local_devices must be \"auto\", \"cpu\" or CUDA devices such as \"cuda:0,cuda:1\"."
  }
}
