# Chargeback: each key's requests, rows and share of the endpoint's replica spend.
data "gpucap_endpoint_usage" "claims" {
  endpoint = gpucap_inference_endpoint.claims.name
}

output "spend_by_key" {
  value = { for k in data.gpucap_endpoint_usage.claims.keys : k.name => k.spend_usd }
}
