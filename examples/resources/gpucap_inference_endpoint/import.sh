# An endpoint is imported by its name.
terraform import gpucap_inference_endpoint.example digits
