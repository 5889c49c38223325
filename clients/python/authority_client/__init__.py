"""Client library for the authority token service."""
