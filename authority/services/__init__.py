"""Use cases: each one a small class over the domain core and the store, free of gRPC."""
