# Labels that routing and alerting read: a known latency class, and an SLO in whole milliseconds.

rule "latency_label_known" {
  description = "Every endpoint has a latency label of critical, standard or batch."
  resources   = ["gpucap_inference_endpoint"]
  enforcement = "soft"
  condition   = "resource.labels != null && 'latency' in resource.labels && resource.labels.latency in ['critical', 'standard', 'batch']"
  message     = "The endpoint has no latency label, or not one of critical, standard and batch."
  attribute   = "labels"
}

rule "latency_slo_is_milliseconds" {
  description  = "A latency_slo_ms label is a positive whole number of milliseconds."
  resources    = ["gpucap_inference_endpoint"]
  enforcement  = "advisory"
  when         = "resource.labels != null && 'latency_slo_ms' in resource.labels"
  condition    = "resource.labels.latency_slo_ms.matches('^[1-9][0-9]{0,6}$')"
  message_expr = "'latency_slo_ms of ' + resource.name + ' is ' + strings.quote(resource.labels.latency_slo_ms) + ', not a positive whole number of milliseconds'"
  message      = "latency_slo_ms is not a positive whole number of milliseconds."
  attribute    = "labels"
}
