# An API key cannot be imported: its secret exists only in the state of the apply that created
# it, so `terraform import` answers with an error saying so. Create a new gpucap_api_key, move
# its callers to it, then remove the old one: nothing is refused in between.
