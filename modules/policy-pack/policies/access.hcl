# Who may call an endpoint. An endpoint that handles confidential or personal data is a door into
# that data: every caller must present a key, so each call is attributable and can be cut off.

rule "sensitive_endpoints_need_a_key" {
  description  = "Endpoints that handle confidential or personal data need an API key from every caller."
  resources    = ["gpucap_inference_endpoint"]
  enforcement  = "hard"
  when         = "resource.data_residency != null && resource.data_residency.classification in ['confidential', 'pii']"
  condition    = "resource.auth != null && resource.auth.mode == 'api_key'"
  message_expr = "resource.data_residency.classification + ' endpoint ' + resource.name + ' answers anyone who reaches it; set auth { mode = \"api_key\" } and give callers gpucap_api_key secrets'"
  attribute    = "auth.mode"
}
