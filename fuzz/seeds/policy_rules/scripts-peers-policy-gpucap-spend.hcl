# Spend: what an endpoint may cost a month and a burst policy an hour. `cost` holds the resources'
# computed cost attributes (cost.monthly_max_usd is monthly_cost_max_usd, cost.max_hourly_usd is
# max_hourly_cost_usd), which is what the Rego version reads.

rule "batch_endpoint_monthly_budget" {
  description  = "Batch endpoints cost at most 6,000 USD a month at their maximum."
  resources    = ["gpucap_inference_endpoint"]
  enforcement  = "soft"
  when         = "cost.monthly_max_usd != null && resource.labels != null && 'latency' in resource.labels && resource.labels.latency == 'batch'"
  condition    = "double(cost.monthly_max_usd) <= 6000.0"
  message      = "A batch endpoint can cost more than 6,000 USD a month."
  message_expr = "'batch endpoint ' + resource.name + ' can cost ' + string(cost.monthly_max_usd) + ' USD a month; the budget is 6000'"
  attribute    = "monthly_cost_max_usd"
}

rule "burst_policy_hourly_cap" {
  description = "A burst policy spends at most 500 USD an hour, base and burst pools at maximum."
  resources   = ["gpucap_burst_policy"]
  enforcement = "advisory"
  when        = "cost.max_hourly_usd != null"
  condition   = "double(cost.max_hourly_usd) <= 500.0"
  message     = "The burst policy can spend more than 500 USD an hour."
  attribute   = "max_hourly_cost_usd"
}
