"""JWT access tokens: compact JWS encoding, fast verification, the verified-token cache."""
