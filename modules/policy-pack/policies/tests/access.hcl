case "pii_without_auth_fails_and_says_what_to_set" {
  rule          = "sensitive_endpoints_need_a_key"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "fraud", data_residency = { classification = "pii" }, auth = { mode = "none" } }
  expect        = "fail"
  message       = "pii endpoint fraud answers anyone who reaches it; set auth { mode = \"api_key\" }"
}

case "confidential_with_no_auth_block_fails" {
  rule          = "sensitive_endpoints_need_a_key"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "contracts", data_residency = { classification = "confidential" } }
  expect        = "fail"
}

case "pii_behind_api_keys_passes" {
  rule          = "sensitive_endpoints_need_a_key"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "fraud", data_residency = { classification = "pii" }, auth = { mode = "api_key" } }
  expect        = "pass"
}

case "internal_data_may_stay_open" {
  rule          = "sensitive_endpoints_need_a_key"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "search", data_residency = { classification = "internal" }, auth = { mode = "none" } }
  expect        = "pass"
}
