"""The gRPC surface: decode, one service call, encode. Protobuf never leaves this package."""
