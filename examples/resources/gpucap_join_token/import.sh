# A join token cannot be imported: only Terraform's state holds it, so `terraform import` answers
# with an error saying so. Create a new gpucap_join_token and roll the machines to it instead.
