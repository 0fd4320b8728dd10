variable "overrides" {
  description = "Soft rules of the pack to override in this configuration: their violations become warnings instead of failing the plan. Pass the `policy_overrides` output to the provider's `policy_overrides`."
  type        = list(string)
  default     = []

  validation {
    condition     = length(setsubtract(var.overrides, local.soft_rules)) == 0
    error_message = "only the pack's soft rules can be overridden, and these are not among them: ${join(", ", setsubtract(var.overrides, local.soft_rules))}. Its soft rules: ${join(", ", local.soft_rules)}."
  }
}
