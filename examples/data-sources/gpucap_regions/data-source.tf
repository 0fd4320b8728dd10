# The AWS regions in the EU, e.g. to allow only those in an endpoint's data_residency block.
data "gpucap_regions" "eu_aws" {
  cloud        = "aws"
  jurisdiction = "EU"
}

output "eu_aws_regions" {
  value = data.gpucap_regions.eu_aws.names
}

# Where each of them is.
output "eu_aws_countries" {
  value = { for r in data.gpucap_regions.eu_aws.regions : r.name => r.country }
}
