# The token the instances of a burst group join their router with. It exists before the endpoint,
# so the launch template (created with the AWS provider) can carry it in its user data; the pool
# gets only its hash.
resource "gpucap_join_token" "eu_spot" {
  # Change a keeper to rotate: a new token is made (list both hashes on the pool while the
  # instances roll, then drop the old one).
  keepers = {
    rotation = "2026-12"
  }
}

resource "gpucap_gpu_pool" "eu_spot" {
  name               = "eu-spot"
  region             = "eu-west-1"
  capacity_type      = "spot"
  price_per_gpu_hour = 1.10

  gpu {
    model = "L4"
  }

  nodes {
    max = 4
  }

  join_token_sha256 = [gpucap_join_token.eu_spot.sha256]

  aws_autoscaling_group {
    name = "gpu-spot-eu"
  }
}
