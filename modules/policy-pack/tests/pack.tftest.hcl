# The pack's outputs: the directory to load, every rule with its enforcement, and overrides
# limited to its soft rules.

run "hands_over_the_rule_directory" {
  command = plan

  assert {
    condition     = endswith(output.path, "modules/policy-pack/policies") && startswith(output.path, "/")
    error_message = "path ${output.path} is not the pack's absolute directory"
  }
  assert {
    condition     = fileset(output.path, "*.hcl") == toset(["access.hcl", "latency.hcl", "residency.hcl", "spend.hcl", "waivers.hcl"]) && length(fileset(output.tests_path, "*.hcl")) == 4
    error_message = "the pack's rule files or tests are missing from ${output.path}"
  }
}

run "reads_every_rule_and_its_enforcement" {
  command = plan

  assert {
    condition = output.rules == tomap({
      no_spot_for_latency_critical         = "hard"
      warm_replicas_for_latency_slo        = "advisory"
      pii_stays_in_allowed_jurisdictions   = "hard"
      dedicated_tenancy_for_sensitive_data = "hard"
      sensitive_endpoints_need_a_key       = "hard"
      burst_spend_capped                   = "soft"
    })
    error_message = "rules ${jsonencode(output.rules)}"
  }
}

run "soft_rules_can_be_overridden" {
  command = plan

  variables {
    overrides = ["burst_spend_capped"]
  }

  assert {
    condition     = output.policy_overrides == tolist(["burst_spend_capped"])
    error_message = "overrides ${jsonencode(output.policy_overrides)}"
  }
}

run "hard_rules_cannot_be_overridden" {
  command = plan

  variables {
    overrides = ["pii_stays_in_allowed_jurisdictions"]
  }

  expect_failures = [var.overrides]
}
