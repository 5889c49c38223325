"""Tests of the Redis adapters against a real Redis (see conftest.py)."""
