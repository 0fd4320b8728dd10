# Plans of the fabric: names, order, placement and cost bounds known before anything is applied,
# and every input the module refuses, refused with its own message.

variables {
  name      = "lab"
  gpu_model = "cpu"
  base = {
    region             = "lab-1"
    jurisdiction       = "EU"
    price_per_gpu_hour = 0.5
    nodes              = 2
  }
  burst = [
    { region = "eu-central-1", price_per_gpu_hour = 2.0, nodes = 2 },
    { region = "eu-west-1", capacity_type = "spot", price_per_gpu_hour = 0.8, nodes = 4 },
  ]
  budget_hourly_usd = 3
}

run "pools_spill_in_the_order_given" {
  command = plan

  assert {
    condition     = output.pools == ["lab-base", "lab-burst-1", "lab-burst-2"]
    error_message = "pools are not base first, then burst in order: ${jsonencode(output.pools)}"
  }
  assert {
    condition     = output.burst_policy == "lab"
    error_message = "the burst policy is not named after the fabric"
  }
  assert {
    condition     = gpucap_burst_policy.this.burst_pools == tolist(["lab-burst-1", "lab-burst-2"])
    error_message = "the policy's burst pools are not the burst pools in order"
  }
  assert {
    condition     = gpucap_gpu_pool.burst[1].capacity_type == "spot" && gpucap_gpu_pool.burst[0].capacity_type == "on_demand"
    error_message = "burst pools do not keep their capacity types"
  }
}

run "jurisdictions_come_from_the_region_table" {
  command = plan

  assert {
    condition     = [for p in output.placement.pools : p.jurisdiction] == ["EU", "EU", "EU"]
    error_message = "jurisdictions: ${jsonencode(output.placement.pools)}"
  }
  assert {
    condition     = output.placement.pools[0].tenancy == "dedicated" && output.placement.pools[1].tenancy == "shared"
    error_message = "the base is not dedicated, or a burst pool not shared, by default"
  }
}

run "cost_bounds_are_known_at_plan_time" {
  command = plan

  # The base: 2 nodes of 1 GPU at $0.50. The most: the base plus bursting, which could cost
  # 2 x $2.00 + 4 x $0.80 = $7.20 an hour but is capped by the $3 budget.
  assert {
    condition     = output.hourly_cost_usd.base == 1
    error_message = "base cost ${output.hourly_cost_usd.base}, want 1"
  }
  assert {
    condition     = output.hourly_cost_usd.max == 4
    error_message = "most cost ${output.hourly_cost_usd.max}, want 4"
  }
}

run "a_bigger_budget_raises_the_bound_up_to_what_bursting_can_cost" {
  command = plan

  variables {
    budget_hourly_usd = 100
  }

  assert {
    condition     = output.hourly_cost_usd.max == 8.2
    error_message = "most cost ${output.hourly_cost_usd.max}, want 8.2 (1 + 7.2)"
  }
}

run "spot_cannot_be_the_base" {
  command = plan

  variables {
    base = { region = "eu-central-1", capacity_type = "spot" }
  }

  expect_failures = [var.base]
}

run "owned_capacity_cannot_burst" {
  command = plan

  variables {
    burst = [{ region = "lab-2", jurisdiction = "EU", capacity_type = "on_prem" }]
  }

  expect_failures = [var.burst]
}

run "names_are_checked" {
  command = plan

  variables {
    name = "Lab Fabric"
  }

  expect_failures = [var.name]
}

run "budgets_are_not_negative" {
  command = plan

  variables {
    budget_hourly_usd = -1
  }

  expect_failures = [var.budget_hourly_usd]
}

run "durations_are_checked" {
  command = plan

  variables {
    idle_for = "ten minutes"
  }

  expect_failures = [var.idle_for]
}
