"""If-None-Match as RFC 9110 §13.1.2 defines it: weak comparison, lists and ``*``.

Caches and CDNs may hand a representation's ETag back in its weak form (``W/"..."``), e.g.
after compressing it; a strong-only comparison would then send the whole JWKS every time.
"""

from __future__ import annotations

import re

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text. A list
# element is followed by optional whitespace and a comma or the end (RFC 9110 §5.6.1).
_ENTITY_TAG = re.compile(r'(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|\Z)')
_SEPARATORS = " \t,"


def none_match(header: str | None, etag: str) -> bool:
    """True when ``If-None-Match: header`` matches ``etag`` (quoted, strong or weak) by
    weak comparison, so the answer is 304. A malformed header matches nothing: the client
    gets the full answer, as if it had sent no validator."""
    if header is None:
        return False
    if header.strip(" \t") == "*":
        return True
    opaque = etag.removeprefix("W/")
    position, found = 0, False
    while True:
        while position < len(header) and header[position] in _SEPARATORS:
            position += 1
        if position == len(header):
            return found
        match = _ENTITY_TAG.match(header, position)
        if match is None:
            return False
        found = found or match.group(1) == opaque
        position = match.end()
