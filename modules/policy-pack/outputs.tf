output "path" {
  description = "The directory of the pack's rule files: put it in the provider's `policy_paths`."
  value       = local.dir
}

output "rules" {
  description = "The pack's rules by name, with their enforcement (`hard`, `soft` or `advisory`)."
  value       = local.rules
}

output "policy_overrides" {
  description = "The soft rules this configuration overrides: pass it to the provider's `policy_overrides`."
  value       = var.overrides
}

output "tests_path" {
  description = "The directory of the pack's rule tests, which `gpucap-policy test` runs against the rules."
  value       = "${local.dir}/tests"
}
