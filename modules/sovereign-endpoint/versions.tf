terraform {
  required_version = ">= 1.7"

  required_providers {
    gpucap = {
      source  = "gpucap/gpucap"
      version = ">= 0.1.0, < 1.0.0"
    }
  }
}
