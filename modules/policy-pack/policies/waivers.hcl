# Waivers lift a rule for named resources until a date; an expired waiver no longer applies.

waiver "legacy_fraud_model" {
  rule      = "dedicated_tenancy_for_sensitive_data"
  resources = ["gpucap_inference_endpoint.fraud-legacy"]
  reason    = "contract with the shared-tenancy processor ends 2027-03; migration tracked in PLAT-412"
  expires   = "2027-03-31"
}
