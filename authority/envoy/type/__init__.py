"""Generated stubs of Envoy's ext_authz API subset, authority.envoy.type. Regenerate with `make proto`; never edit."""
