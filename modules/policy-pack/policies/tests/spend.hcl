case "burst_without_budget_fails" {
  rule          = "burst_spend_capped"
  resource_type = "gpucap_burst_policy"
  resource      = { name = "spill", base_pools = ["rack"], burst_pools = ["cloud"] }
  expect        = "fail"
  message       = "has burst pools but no budget"
}

case "burst_over_the_cap_fails" {
  rule          = "burst_spend_capped"
  resource_type = "gpucap_burst_policy"
  resource      = { name = "spill", base_pools = ["rack"], burst_pools = ["cloud"], budget = { max_hourly_usd = 350 } }
  expect        = "fail"
  message       = "may spend 350 USD/h"
}

case "burst_within_the_cap_passes" {
  rule          = "burst_spend_capped"
  resource_type = "gpucap_burst_policy"
  resource      = { name = "spill", base_pools = ["rack"], burst_pools = ["cloud"], budget = { max_hourly_usd = 120.5 } }
  expect        = "pass"
}

case "no_burst_pools_needs_no_budget" {
  rule          = "burst_spend_capped"
  resource_type = "gpucap_burst_policy"
  resource      = { name = "steady", base_pools = ["rack"] }
  expect        = "pass"
}

case "deleting_a_policy_is_not_judged" {
  rule          = "burst_spend_capped"
  resource_type = "gpucap_burst_policy"
  resource      = { name = "spill", base_pools = ["rack"], burst_pools = ["cloud"] }
  action        = "delete"
  expect        = "pass"
}
