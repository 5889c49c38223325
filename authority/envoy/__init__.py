"""Generated stubs of Envoy's ext_authz API subset, authority.envoy. Regenerate with `make proto`; never edit."""
