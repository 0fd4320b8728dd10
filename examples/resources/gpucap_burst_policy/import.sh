# A burst policy is imported by its name.
terraform import gpucap_burst_policy.example eu-burst
