# Where data may be processed. The provider's built-in residency guarantee enforces each endpoint's
# own allowed_jurisdictions; these rules set the organisation-wide floor under them.

rule "pii_stays_in_allowed_jurisdictions" {
  description  = "Endpoints that handle personal data run only in the EU, the UK or Switzerland."
  resources    = ["gpucap_inference_endpoint"]
  enforcement  = "hard"
  when         = "resource.data_residency != null && resource.data_residency.classification == 'pii'"
  condition    = "pools.all(p, p.jurisdiction in ['EU', 'UK', 'CH'])"
  message      = "A PII endpoint can run outside the EU, the UK and Switzerland."
  message_expr = "'PII endpoint ' + resource.name + ' can run in ' + pools.filter(p, !(p.jurisdiction in ['EU', 'UK', 'CH'])).map(p, p.name + ' (' + p.region + ', ' + p.jurisdiction + ')').join(', ')"
  attribute    = "data_residency.classification"
}

rule "dedicated_tenancy_for_sensitive_data" {
  description  = "Confidential and personal data run only on dedicated (single-tenant) capacity."
  resources    = ["gpucap_inference_endpoint"]
  enforcement  = "hard"
  when         = "resource.data_residency != null && resource.data_residency.classification in ['confidential', 'pii']"
  condition    = "pools.all(p, p.tenancy == 'dedicated')"
  message_expr = "resource.data_residency.classification + ' endpoint ' + resource.name + ' can run on shared pools: ' + pools.filter(p, p.tenancy != 'dedicated').map(p, p.name).join(', ')"
  attribute    = "data_residency.classification"
}
