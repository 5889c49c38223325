"""Generated stubs of Envoy's ext_authz API subset, authority.envoy.service.auth.v3. Regenerate with `make proto`; never edit."""
