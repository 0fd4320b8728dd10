case "pii_on_eu_pools_passes" {
  rule          = "pii_stays_in_allowed_jurisdictions"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "fraud", data_residency = { classification = "pii" } }
  pools         = [{ name = "frankfurt", region = "eu-central-1", jurisdiction = "EU" }]
  expect        = "pass"
}

case "pii_bursting_to_the_us_fails_and_names_the_pool" {
  rule          = "pii_stays_in_allowed_jurisdictions"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "fraud", data_residency = { classification = "pii" } }
  pools         = [
    { name = "frankfurt", region = "eu-central-1", jurisdiction = "EU" },
    { name = "virginia", region = "us-east-1", jurisdiction = "US" },
  ]
  expect  = "fail"
  message = "can run in virginia (us-east-1, US)"
}

case "internal_data_may_run_anywhere" {
  rule          = "pii_stays_in_allowed_jurisdictions"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "search", data_residency = { classification = "internal" } }
  pools         = [{ name = "virginia", region = "us-east-1", jurisdiction = "US" }]
  expect        = "pass"
}

case "confidential_on_shared_capacity_fails" {
  rule          = "dedicated_tenancy_for_sensitive_data"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "contracts", data_residency = { classification = "confidential" } }
  pools         = [{ name = "cloud", tenancy = "shared" }, { name = "rack", tenancy = "dedicated" }]
  expect        = "fail"
  message       = "can run on shared pools: cloud"
}

case "pii_on_dedicated_capacity_passes" {
  rule          = "dedicated_tenancy_for_sensitive_data"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "fraud", data_residency = { classification = "pii" } }
  pools         = [{ name = "rack", tenancy = "dedicated" }]
  expect        = "pass"
}

case "the_legacy_fraud_model_is_waived_until_march_2027" {
  rule          = "dedicated_tenancy_for_sensitive_data"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "fraud-legacy", data_residency = { classification = "pii" } }
  pools         = [{ name = "cloud", tenancy = "shared" }]
  now           = "2027-03-31T23:00:00Z"
  expect        = "waived"
}

case "the_waiver_no_longer_applies_after_it_expires" {
  rule          = "dedicated_tenancy_for_sensitive_data"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "fraud-legacy", data_residency = { classification = "pii" } }
  pools         = [{ name = "cloud", tenancy = "shared" }]
  now           = "2027-04-01T00:00:00Z"
  expect        = "fail"
}
