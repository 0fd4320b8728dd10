# Test helper: sends one digit from the held-out test set to an endpoint's Open Inference
# Protocol URL and fails the apply unless the endpoint answers with the digit's true label.

variable "url" {
  description = "The endpoint's model URL."
  type        = string
}

variable "csv_row" {
  description = "A row of examples/models/digits-test.csv: the label, then 64 pixel values."
  type        = string
}

locals {
  fields = split(",", trimspace(var.csv_row))
  body = jsonencode({
    inputs = [{
      name     = "pixels"
      shape    = [1, 64]
      datatype = "FP32"
      data     = [for v in slice(local.fields, 1, 65) : tonumber(v)]
    }]
  })
}

resource "terraform_data" "inference" {
  input = var.url

  provisioner "local-exec" {
    command = <<-SH
      curl -sf --max-time 60 -H 'Content-Type: application/json' -d "$BODY" "$URL/infer" |
        python3 -c 'import json, sys; p = json.load(sys.stdin)["outputs"][0]["data"]; best = max(range(len(p)), key=p.__getitem__); print("predicted", best, "label", sys.argv[1]); sys.exit(best != int(sys.argv[1]))' "$LABEL"
    SH
    environment = {
      URL   = var.url
      BODY  = local.body
      LABEL = local.fields[0]
    }
  }
}
