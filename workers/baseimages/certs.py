"""Extra CA certificates (for example a corporate TLS proxy's) put into a Debian rootfs.

Both places matter: the ``.crt`` files in /usr/local/share/ca-certificates survive a
later ``update-ca-certificates`` (which rebuilds the bundle from that folder), and the
bundle /etc/ssl/certs/ca-certificates.crt is what OpenSSL, apt, pip and
``NODE_EXTRA_CA_CERTS`` read before anything is rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from workers.baseimages.errors import BaseImageError

logger = logging.getLogger(__name__)

PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
CA_DIR = Path("usr/local/share/ca-certificates")
CA_BUNDLE = Path("etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class ExtraCa:
    """One extra CA certificate: its file name in the rootfs and its PEM text."""

    name: str
    pem: bytes


def make_extra_ca(name: str, pem: bytes) -> ExtraCa:
    """Check that ``pem`` is a certificate; name it as update-ca-certificates wants."""
    if PEM_CERTIFICATE not in pem:
        raise BaseImageError(f"Extra CA file {name} holds no PEM certificate.")
    # update-ca-certificates only picks up files ending in ".crt".
    stem = name[:-4] if name.endswith(".crt") else Path(name).stem
    return ExtraCa(f"{stem}.crt", pem if pem.endswith(b"\n") else pem + b"\n")


def read_extra_cas(paths: Sequence[Path]) -> tuple[ExtraCa, ...]:
    """Load and check the extra CA files a product setting names, in the given order."""
    try:
        cas = tuple(make_extra_ca(path.name, path.read_bytes()) for path in paths)
    except OSError as exc:
        raise BaseImageError(f"Cannot read extra CA file: {exc}") from exc
    names = [ca.name for ca in cas]
    if len(set(names)) != len(names):
        raise BaseImageError(f"Extra CA files must have distinct names: {names}")
    return cas


def extend_bundle(bundle: bytes, cas: Iterable[ExtraCa]) -> bytes:
    """Return ``bundle`` with each CA's PEM appended, skipping ones already in it."""
    if bundle and not bundle.endswith(b"\n"):
        bundle += b"\n"
    for ca in cas:
        if ca.pem.strip() not in bundle:
            bundle += ca.pem
    return bundle


def cas_digest(cas: Iterable[ExtraCa]) -> str:
    """Fingerprint the CA set, so a cached rootfs is reused only with the same CAs."""
    digest = hashlib.sha256()
    for ca in cas:
        digest.update(ca.name.encode() + b"\0" + ca.pem + b"\0")
    return digest.hexdigest()


def install_extra_cas(rootfs: Path, cas: Sequence[ExtraCa]) -> None:
    """Write each CA into the rootfs's CA folder and append it to its CA bundle."""
    (rootfs / CA_DIR).mkdir(parents=True, exist_ok=True)
    for ca in cas:
        (rootfs / CA_DIR / ca.name).write_bytes(ca.pem)
    bundle = rootfs / CA_BUNDLE
    if bundle.is_symlink() or not bundle.is_file():
        raise BaseImageError(f"The rootfs has no CA bundle at /{CA_BUNDLE}.")
    bundle.write_bytes(extend_bundle(bundle.read_bytes(), cas))
    logger.info("base-images: added %d extra CA certificate(s) to %s", len(cas), rootfs)


def local_ca_files(folder: Path = Path("/") / CA_DIR) -> tuple[Path, ...]:
    """List the ``.crt`` files this machine trusts beyond Debian's (a setting value)."""
    return tuple(sorted(folder.glob("*.crt"))) if folder.is_dir() else ()
