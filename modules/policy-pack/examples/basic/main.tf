# The starter policy pack checking every plan of this configuration, with its soft spend rule
# overridden while a migration is under way.

terraform {
  required_providers {
    gpucap = { source = "gpucap/gpucap" }
  }
}

module "policy" {
  source = "../.."

  overrides = ["burst_spend_capped"]
}

provider "gpucap" {
  policy_paths     = [module.policy.path]
  policy_overrides = module.policy.policy_overrides
}

output "rules" {
  description = "The rules every plan is checked against."
  value       = module.policy.rules
}
