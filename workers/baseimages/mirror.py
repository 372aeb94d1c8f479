"""Find the Debian mirror this machine's apt already uses, to debootstrap from it.

apt reads ``sources.list`` and ``sources.list.d/*.list`` in the one-line format and
``sources.list.d/*.sources`` in the deb822 format (see sources.list(5)); files with
other suffixes are ignored, as apt ignores them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from workers.baseimages.errors import BaseImageError

logger = logging.getLogger(__name__)

APT_DIR = Path("/etc/apt")

# Release names and aliases served by a Debian archive mirror. Suites with a dash
# (bookworm-security, bookworm-updates) live beside them and never hold a full release.
DEBIAN_SUITES = frozenset(
    {
        "buster",
        "bullseye",
        "bookworm",
        "trixie",
        "forky",
        "duke",
        "sid",
        "oldoldstable",
        "oldstable",
        "stable",
        "testing",
        "unstable",
        "experimental",
    }
)
MIRROR_SCHEMES = ("http://", "https://", "file:/")


@dataclass(frozen=True)
class AptSource:
    """One repository apt reads packages from: where, and which suites."""

    uri: str
    suites: tuple[str, ...]


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Read the binary (``deb``) entries of a one-line-format sources file."""
    return [source for line in text.splitlines() if (source := _one_line(line))]


def _one_line(line: str) -> AptSource | None:
    words = line.split("#", 1)[0].split()
    if not words or words[0] != "deb":
        return None
    if len(words) > 1 and words[1].startswith("["):
        # Options sit between "deb" and the URI: "[arch=amd64 signed-by=...]".
        closing = next((i for i, word in enumerate(words) if word.endswith("]")), 0)
        words = [words[0], *words[closing + 1 :]] if closing else []
    return AptSource(words[1], (words[2],)) if len(words) >= 3 else None


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Read the enabled binary stanzas of a deb822-format ``.sources`` file."""
    sources = []
    for fields in _deb822_stanzas(text):
        enabled = fields.get("enabled", "yes").lower() != "no"
        if enabled and "deb" in fields.get("types", "").split():
            suites = tuple(fields.get("suites", "").split())
            sources += [
                AptSource(uri, suites) for uri in fields.get("uris", "").split()
            ]
    return sources


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, ""
        elif line[0] in " \t" and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            fields[key] = value.strip()
    if fields:
        yield fields


def read_apt_sources(apt_dir: Path = APT_DIR) -> list[AptSource]:
    """Collect every binary source apt would read under ``apt_dir``, in apt's order."""
    sources = []
    main_list = apt_dir / "sources.list"
    if main_list.is_file():
        sources += parse_one_line_sources(main_list.read_text(errors="replace"))
    parts = apt_dir / "sources.list.d"
    for path in sorted(parts.iterdir()) if parts.is_dir() else ():
        if path.suffix == ".list":
            sources += parse_one_line_sources(path.read_text(errors="replace"))
        elif path.suffix == ".sources":
            sources += parse_deb822_sources(path.read_text(errors="replace"))
    return sources


def pick_debian_mirror(
    sources: Iterable[AptSource], *, suite: str | None = None
) -> str:
    """Choose the archive mirror among ``sources``, preferring one listing ``suite``."""
    archives = [
        source
        for source in sources
        if source.uri.startswith(MIRROR_SCHEMES) and DEBIAN_SUITES & set(source.suites)
    ]
    preferred = [source for source in archives if suite in source.suites]
    for source in preferred or archives:
        return source.uri.rstrip("/")
    raise BaseImageError(
        "No Debian archive mirror found in apt's sources; "
        "set the mirror explicitly in the base image settings."
    )


def detect_debian_mirror(apt_dir: Path = APT_DIR, *, suite: str | None = None) -> str:
    """Return the Debian mirror URL this machine's apt is configured with."""
    mirror = pick_debian_mirror(read_apt_sources(apt_dir), suite=suite)
    logger.info("base-images: detected Debian mirror %s in %s", mirror, apt_dir)
    return mirror
