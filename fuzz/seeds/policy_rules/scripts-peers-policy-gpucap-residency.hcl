# Where data may be processed, and on whose hardware. The peers' policy.rego states the same rules
# in Rego; bench-policy-peers.sh checks that both find exactly the same violations.

rule "sensitive_data_stays_in_eu" {
  description  = "Endpoints handling confidential or personal data run only on pools in the EU."
  resources    = ["gpucap_inference_endpoint"]
  enforcement  = "hard"
  when         = "resource.data_residency != null && resource.data_residency.classification in ['confidential', 'pii']"
  condition    = "pools.all(p, p.jurisdiction == 'EU')"
  message      = "A confidential or PII endpoint can run outside the EU."
  message_expr = "resource.data_residency.classification + ' endpoint ' + resource.name + ' can run outside the EU: ' + pools.filter(p, p.jurisdiction != 'EU').map(p, p.name + ' (' + p.jurisdiction + ')').join(', ')"
  attribute    = "data_residency.classification"
}

rule "dedicated_tenancy_for_confidential" {
  description  = "Confidential endpoints run only on dedicated (single-tenant) pools."
  resources    = ["gpucap_inference_endpoint"]
  enforcement  = "hard"
  when         = "resource.data_residency != null && resource.data_residency.classification == 'confidential'"
  condition    = "pools.all(p, p.tenancy == 'dedicated')"
  message      = "A confidential endpoint can run on shared pools."
  message_expr = "'confidential endpoint ' + resource.name + ' can run on shared pools: ' + pools.filter(p, p.tenancy != 'dedicated').map(p, p.name).join(', ')"
  attribute    = "data_residency.classification"
}
