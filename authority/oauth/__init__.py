"""OAuth 2.0 over HTTP: a thin adapter from the RFC endpoints to the token services."""
