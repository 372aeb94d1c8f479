"""Talking to the farm's registry over the Distribution HTTP API (v2).

Only what the farm needs: whether a tag exists, how many bytes a pushed image
holds, and deleting stage cache images. Registries on loopback speak plain
HTTP (engines treat 127.0.0.0/8 as insecure too); any other host is reached by HTTPS.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from farm.errors import StoreUnavailable

logger = logging.getLogger(__name__)

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def split_reference(reference: str) -> tuple[str, str, str]:
    """``host:port/name:tag`` → (host:port, name, tag)."""
    host, _, rest = reference.partition("/")
    name, _, tag = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
    return host, name, tag


class RegistryClient:
    """A registry at ``address`` (``host:port``)."""

    def __init__(
        self, address: str, *, timeout_seconds: float = 10, plain_http: bool = False
    ) -> None:
        self.address = address
        # Engines speak plain HTTP to loopback registries, and to others only when
        # told to (--insecure-registry); the farm follows suit (FARM_REGISTRY_HTTP).
        local = address.startswith(("127.", "localhost", "[::1]"))
        self.base_url = f"{'http' if local or plain_http else 'https'}://{address}/v2"
        self.timeout_seconds = timeout_seconds
        self.session = requests.Session()
        self.session.trust_env = False  # never through a proxy from the environment

    def has_tag(self, reference: str) -> bool:
        """Whether ``reference`` resolves to a manifest here; False when unreachable."""
        if split_reference(reference)[0] != self.address:
            return False
        try:
            return self.digest(reference) is not None
        except StoreUnavailable as exc:
            logger.warning(
                "registry=%s: could not ask for %s: %s",
                self.address,
                reference,
                exc.message,
            )
            return False

    def digest(self, reference: str) -> str | None:
        """The manifest digest ``reference`` points at, or None if there is none."""
        host, name, tag = split_reference(reference)
        found = self._manifests("HEAD", name, tag)
        if found.status_code != 200:
            return None
        return found.headers.get("Docker-Content-Digest")

    def pushed_bytes(self, name: str, digest: str) -> int | None:
        """Bytes of the image ``name@digest`` as stored here: its config and layers,
        compressed, as a pull downloads them at most. None if there is no such
        image manifest (an index of several, which the farm's pushes never are,
        counts as none)."""
        manifest = self._manifest(name, digest)
        if manifest is None or "layers" not in manifest:
            return None
        parts = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
        return sum(int(part.get("size") or 0) for part in parts)

    def _manifests(self, method: str, name: str, reference: str) -> requests.Response:
        """``method`` on the manifest ``name:reference`` (a tag or a digest)."""
        try:
            return self.session.request(
                method,
                f"{self.base_url}/{name}/manifests/{reference}",
                headers={"Accept": MANIFEST_TYPES},
                timeout=self.timeout_seconds,
            )
        except requests.RequestException as exc:
            raise StoreUnavailable(
                f"The registry {self.address} could not be reached: {exc}"
            ) from exc

    def _manifest(self, name: str, reference: str) -> dict[str, Any] | None:
        found = self._manifests("GET", name, reference)
        if found.status_code != 200:
            return None
        try:
            manifest = found.json()
        except ValueError as exc:
            raise StoreUnavailable(
                f"The registry {self.address} sent a manifest that is not JSON."
            ) from exc
        return manifest if isinstance(manifest, dict) else None

    def delete_manifest(self, name: str, digest: str) -> bool:
        """Delete a manifest, and so every tag of ``name`` pointing at it.

        The registry frees the blobs on its next garbage collection (``registry
        garbage-collect``), which runs outside the farm.
        """
        deleted = self._manifests("DELETE", name, digest)
        if deleted.status_code not in (202, 404):
            raise StoreUnavailable(
                f"The registry refused to delete {name}@{digest}: HTTP "
                f"{deleted.status_code}."
            )
        return deleted.status_code == 202
