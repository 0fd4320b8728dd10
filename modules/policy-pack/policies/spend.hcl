# Spend: burst capacity is capped, and the cap is within what a team may spend without sign-off.

rule "burst_spend_capped" {
  description  = "A burst policy that can spill to burst pools has a budget of at most 200 USD per hour."
  resources    = ["gpucap_burst_policy"]
  enforcement  = "soft"
  when         = "resource.burst_pools != null && size(resource.burst_pools) > 0"
  condition    = "resource.budget != null && double(resource.budget.max_hourly_usd) <= 200.0"
  message_expr = "resource.budget == null ? 'burst policy ' + resource.name + ' has burst pools but no budget' : 'burst policy ' + resource.name + ' may spend ' + string(resource.budget.max_hourly_usd) + ' USD/h on burst capacity; the cap is 200'"
  attribute    = "budget"
}
