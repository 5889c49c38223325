"""Generated stubs of Envoy's ext_authz API subset, authority.envoy.service.auth. Regenerate with `make proto`; never edit."""
