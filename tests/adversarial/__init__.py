"""Adversarial tests: each property the authority promises, attacked against real processes.

One module per property family. Every test here runs a real server process (and, where the
property involves them, real PostgreSQL, Redis, Envoy or process kills); none uses fakes.
"""
