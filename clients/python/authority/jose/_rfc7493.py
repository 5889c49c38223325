"""I-JSON (RFC 7493) for what a token carries: no string may hold a lone UTF-16 surrogate.

RFC 7493 section 2.1 forbids them, RFC 8725 section 3.7 allows JWTs nothing but UTF-8,
yet Python's json accepts one, spelled as an unpaired escape ("\\ud800") or encoded in the
bytes themselves (0xED 0xA0 0x80, which json decodes with surrogatepass). Such a string
cannot be encoded as UTF-8: accepted, it would break whatever carries the claims on (a
protobuf answer, a header, a log line). (Section 2.1 also forbids noncharacters such as
U+FFFF; UTF-8 and protobuf carry those, and they are not refused here.)
"""

from __future__ import annotations

import re
from typing import Any

# A \u escape of a surrogate (D800-DFFF): JSON spells the escape with a lower-case u only,
# and the hex digits in either case. A paired escape matches too; the walk then decides.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class LoneSurrogateError(ValueError):
    """A JSON document holds a string with a lone surrogate: JSON, but not I-JSON."""


def lone_surrogate_in(value: Any) -> bool:
    """True when a string in ``value`` (JSON data: object names included, at any depth)
    holds a lone surrogate, i.e. cannot be encoded as UTF-8. Iterative: depth is free."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


def lone_surrogate_in_text(text: str, document: Any) -> bool:
    """``lone_surrogate_in(document)`` for ``document = json.loads(text)``, cheaply.

    In ASCII text a surrogate can only come from a \\u escape of one; text with no
    backslash at all (every token the authority signs, unless a claim is not ASCII) costs
    two scans in C. Anything else is walked."""
    if text.isascii() and ("\\" not in text or _SURROGATE_ESCAPE.search(text) is None):
        return False
    return lone_surrogate_in(document)
