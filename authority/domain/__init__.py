"""The pure core: values, rules and state machines.

No grpc, no storage, no hazmat, no wall clock.
"""
