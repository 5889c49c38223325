"""Client library for the authority token service."""

from authority_client.client import AuthorityClient

__all__ = ["AuthorityClient"]
