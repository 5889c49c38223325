"""Generated stubs of Envoy's ext_authz API subset, authority.envoy.config.core.v3. Regenerate with `make proto`; never edit."""
