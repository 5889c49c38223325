"""Generated gRPC stubs for authority.v1. Regenerate with `make proto`; never edit."""
