"""Generated stubs of Envoy's ext_authz API subset, authority.envoy.config. Regenerate with `make proto`; never edit."""
