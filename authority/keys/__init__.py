"""The key ring: which keys exist, which one signs, and what the JWKS says."""
