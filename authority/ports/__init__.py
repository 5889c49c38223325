"""Interfaces the services need from shared infrastructure, declared by their consumers.

Each has an in-process implementation (the embedded default, one process) and a
Redis one (production: many replicas and workers).
"""
