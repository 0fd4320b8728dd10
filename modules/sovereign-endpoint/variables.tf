variable "name" {
  description = "The endpoint's name; also the model's name in its URLs."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{0,62}$", var.name))
    error_message = "name must be 1 to 63 lowercase letters, digits, `-` or `_`, starting with a letter or digit."
  }
}

variable "model_path" {
  description = "The model: a `.safetensors` file in gpucap's model format, relative to the working directory or absolute."
  type        = string

  validation {
    condition     = endswith(var.model_path, ".safetensors")
    error_message = "model_path must be a .safetensors file in gpucap's model format."
  }
}

variable "model_version" {
  description = "The version the endpoint reports for its model."
  type        = string
  default     = "1"
}

variable "placement" {
  description = "Where the endpoint may run: a burst policy's name (null to run on the pools alone), and every pool it can ever be placed on with its jurisdiction and tenancy. The `hybrid-fabric` module's `placement` output is this object."
  type = object({
    burst_policy = optional(string)
    pools = list(object({
      name          = string
      jurisdiction  = string
      tenancy       = optional(string, "shared")
      capacity_type = optional(string, "on_prem")
    }))
  })

  validation {
    condition     = length(var.placement.pools) > 0
    error_message = "placement.pools must name at least one pool the endpoint can run on."
  }
}

variable "classification" {
  description = "How sensitive the data the endpoint handles is: `public`, `internal`, `confidential` or `pii` (personal data). `confidential` and `pii` data may only be processed on dedicated hardware in `sensitive_jurisdictions`."
  type        = string
  default     = "internal"

  validation {
    condition     = contains(["public", "internal", "confidential", "pii"], var.classification)
    error_message = "classification must be one of \"public\", \"internal\", \"confidential\" or \"pii\"."
  }
}

variable "sensitive_jurisdictions" {
  description = "Jurisdictions (`EU`, `UK`, `CH`, …) where `confidential` and `pii` data may be processed."
  type        = list(string)
  default     = ["EU"]

  validation {
    condition     = length(var.sensitive_jurisdictions) > 0
    error_message = "sensitive_jurisdictions must name at least one jurisdiction."
  }
}

variable "latency_target_ms" {
  description = "The latency the endpoint is meant to answer within, in milliseconds. It sets the batching window and batch size, whether the endpoint may scale to zero (not under 1 s: a cold start would miss it), and the `latency` labels policy rules read."
  type        = number
  default     = 200

  validation {
    condition     = var.latency_target_ms >= 1 && var.latency_target_ms <= 600000
    error_message = "latency_target_ms must be from 1 to 600000 (10 minutes)."
  }
}

variable "max_replicas" {
  description = "Most replicas, base and burst together."
  type        = number
  default     = 2

  validation {
    condition     = var.max_replicas >= 1 && var.max_replicas <= 10000 && floor(var.max_replicas) == var.max_replicas
    error_message = "max_replicas must be a whole number from 1 to 10000."
  }
}

variable "labels" {
  description = "Extra labels for policy rules; the module adds `latency` and `latency_slo_ms`."
  type        = map(string)
  default     = {}
}

variable "listen_port" {
  description = "Port of the endpoint's router on 127.0.0.1; 0 picks a free one."
  type        = number
  default     = 0

  validation {
    condition     = var.listen_port >= 0 && var.listen_port <= 65535 && floor(var.listen_port) == var.listen_port
    error_message = "listen_port must be a whole number from 0 to 65535."
  }
}

variable "auth_mode" {
  description = "Who may call the endpoint: `api_key` (each caller needs a `gpucap_api_key` of the endpoint) or `none`. Default: `api_key` for `confidential` and `pii` data, which the starter policy pack requires, else `none`."
  type        = string
  default     = null

  validation {
    condition     = var.auth_mode == null || contains(["none", "api_key"], coalesce(var.auth_mode, "none"))
    error_message = "auth_mode must be \"none\" or \"api_key\"."
  }
}
