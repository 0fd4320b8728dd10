# An endpoint that needs a key, and a key per calling team, each with its own limits and quota.
resource "gpucap_inference_endpoint" "claims" {
  name  = "claims-triage"
  pools = ["lab"]

  model {
    path = "models/digits-mlp.safetensors"
  }

  data_residency {
    classification = "pii"
  }

  auth {
    mode = "api_key"
  }
}

resource "gpucap_api_key" "fraud_team" {
  endpoint   = gpucap_inference_endpoint.claims.name
  name       = "fraud-team"
  expires_at = "2027-06-30T00:00:00Z"

  rate_limit {
    requests_per_second = 50
    rows_per_second     = 800
  }

  monthly_request_quota = 1000000
}

# Hand the secret to the caller's secret store, never to an output printed in a log.
output "fraud_team_key" {
  value     = gpucap_api_key.fraud_team.secret
  sensitive = true
}
