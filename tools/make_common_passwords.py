"""Regenerate ``common-passwords.txt`` from Django's common-password list.

Django is read as data only (a wheel, the ``.txt.gz`` itself, or an installed copy);
it is not a dependency. The output depends only on the source list and the date given,
so a rerun with ``--date`` reproduces the shipped file byte for byte::

    pip download --no-deps -d /tmp/dj django==5.2.19
    python -m tools.make_common_passwords /tmp/dj/django-5.2.19-py3-none-any.whl --date 2026-11-27
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import importlib.util
import re
import sys
import unicodedata
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

LIST_MEMBER = "django/contrib/auth/common-passwords.txt.gz"
# The list ships in the server package; this script stays in the checkout.
OUTPUT = Path(__file__).resolve().parents[1] / "authority" / "data" / "common-passwords.txt"
MIN_ENTRIES = 10_000
ORIGIN = (
    "Royce Williams, 'unhexed, lowercased and deduplicated' "
    "(https://gist.github.com/roycewilliams/226886fd01572964e1431ac8afc999ce), "
    "as stated in django.contrib.auth.password_validation.CommonPasswordValidator"
)
LICENSE = "BSD-3-Clause (Django; copyright Django Software Foundation and contributors)"


@dataclass(frozen=True, slots=True)
class Source:
    """The raw list (UTF-8, one a line) and what is known about where it came from."""

    raw: bytes
    version: str
    where: str


def read_source(path: Path | None, version: str | None = None) -> Source:
    """Load the gzipped list from a wheel, a ``.gz``/``.txt`` file, or the installed Django."""
    if path is None:
        spec = importlib.util.find_spec("django")  # locating imports nothing of Django
        if spec is None or spec.origin is None:
            raise SystemExit("no PATH given and Django is not installed")
        gz = (Path(spec.origin).parent / "contrib/auth/common-passwords.txt.gz").read_bytes()
        found = importlib.metadata.version("django")
        return Source(gzip.decompress(gz), version or found, "installed package")
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            gz = wheel.read(LIST_MEMBER)
            found = _wheel_version(wheel)
        return Source(gzip.decompress(gz), version or found, path.name)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return Source(data, version or "unknown", path.name)


def _wheel_version(wheel: zipfile.ZipFile) -> str:
    for name in wheel.namelist():
        if name.endswith(".dist-info/METADATA"):
            text = wheel.read(name).decode("utf-8")
            match = re.search(r"^Version: *(\S+)", text, re.MULTILINE)
            if match:
                return match.group(1)
    return "unknown"


@dataclass(frozen=True, slots=True)
class Cleaned:
    entries: list[str]
    dropped_comment_like: int
    dropped_duplicates: int


def clean(lines: Iterable[str]) -> Cleaned:
    """NFC, lower-case, strip; drop blanks, lines the loader would read as comments
    (a leading ``#``) and duplicates, keeping each entry's first (most common) place."""
    seen: set[str] = set()
    entries: list[str] = []
    comment_like = duplicates = 0
    for raw in lines:
        entry = unicodedata.normalize("NFC", raw.strip()).lower()
        if not entry:
            continue
        if entry.startswith("#"):
            comment_like += 1
        elif entry in seen:
            duplicates += 1
        else:
            seen.add(entry)
            entries.append(entry)
    return Cleaned(entries, comment_like, duplicates)


def render(source: Source, cleaned: Cleaned, date: str) -> str:
    """The file's text: a ``#`` provenance header, then one entry a line."""
    header = [
        "Common passwords, most common first: one a line, NFC, lower-cased, deduplicated.",
        "Lines starting with '#' are comments. Regenerate with",
        "  python -m tools.make_common_passwords PATH_TO_DJANGO_WHEEL --date DATE",
        f"Package: Django {source.version} (PyPI), file {LIST_MEMBER}",
        f"Source list sha256 (uncompressed): {hashlib.sha256(source.raw).hexdigest()}",
        f"Original source: {ORIGIN}",
        f"License: {LICENSE}",
        f"Entries: {len(cleaned.entries)} "
        f"(dropped {cleaned.dropped_comment_like} starting with '#', "
        f"{cleaned.dropped_duplicates} duplicates)",
        f"Extracted: {date}",
    ]
    lines = [f"# {line}" for line in header]
    lines.extend(cleaned.entries)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", nargs="?", type=Path, help="Django wheel, .txt.gz or .txt")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--date", default=datetime.now(UTC).date().isoformat())
    parser.add_argument("--source-version", help="the Django version, if not in the source")
    args = parser.parse_args(argv)
    source = read_source(args.source, args.source_version)
    cleaned = clean(source.raw.decode("utf-8").splitlines())
    if len(cleaned.entries) < MIN_ENTRIES:
        raise SystemExit(f"only {len(cleaned.entries)} entries; expected >= {MIN_ENTRIES}")
    args.output.write_text(render(source, cleaned, args.date), encoding="utf-8", newline="\n")
    print(f"wrote {len(cleaned.entries)} entries to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
