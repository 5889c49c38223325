"""authority: a gRPC token authority (JWTs with rotating keys, JWKS, sessions, revocation)."""
