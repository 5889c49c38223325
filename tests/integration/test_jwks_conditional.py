"""A real server answers If-None-Match on the JWKS by weak comparison (RFC 9110 §13.1.2):
the strong ETag, its weak form ``W/"..."`` (what caches and CDNs hand back), a list
containing either, and ``*`` are all 304; anything else gets the document."""

from __future__ import annotations

import urllib.error
import urllib.request

from tests.integration.server import ServerProcess

JWKS = "/.well-known/jwks.json"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_if_none_match_uses_weak_comparison(server: ServerProcess) -> None:
    status, headers, document = _get(server.http + JWKS)
    assert status == 200 and document
    etag = headers["ETag"]
    assert etag.startswith('"')  # strong
    not_modified = [etag, "W/" + etag, f'"stale", W/{etag}', f'"stale",{etag}', "*"]
    for header in not_modified:
        status, answer, body = _get(server.http + JWKS, {"If-None-Match": header})
        assert (status, body) == (304, b""), header
        assert answer["ETag"] == etag, header
    for header in ['"stale"', 'W/"stale"', etag.strip('"'), f"w/{etag}"]:
        status, _, body = _get(server.http + JWKS, {"If-None-Match": header})
        assert (status, body) == (200, document), header
