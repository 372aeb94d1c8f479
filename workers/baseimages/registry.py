"""Share base images through a registry: push from the node that built them, pull on
nodes that cannot build them (an air-gapped farm), then use them by their plain names.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import docker

from workers.baseimages.catalog import BASE_IMAGES
from workers.baseimages.engine import pull_image, push_image, tag_image
from workers.baseimages.errors import BaseImageError

logger = logging.getLogger(__name__)


def registry_ref(registry: str, name: str) -> str:
    """Name a base image inside a registry given as ``host:port`` (no scheme)."""
    host = registry.rstrip("/")
    if not host or "://" in host:
        raise BaseImageError(
            f"Registry {registry!r} must be given as host:port, without a scheme."
        )
    return f"{host}/{name}"


def push_base_images(
    api: docker.APIClient, registry: str, *, names: Sequence[str] | None = None
) -> dict[str, str]:
    """Tag each base image (all by default) into ``registry``, push it, and return
    each name's manifest digest."""
    digests = {}
    for name in names if names is not None else BASE_IMAGES:
        ref = registry_ref(registry, name)
        tag_image(api, name, ref)
        digests[name] = push_image(api, ref)
        logger.info("base-image=%s: pushed %s digest=%s", name, ref, digests[name])
    return digests


def pull_base_images(
    api: docker.APIClient, registry: str, *, names: Sequence[str] | None = None
) -> list[str]:
    """Pull each base image (all by default) from ``registry`` and tag it with its
    plain name, so Dockerfiles saying ``FROM farm-base/...`` find it locally."""
    pulled = []
    for name in names if names is not None else BASE_IMAGES:
        ref = registry_ref(registry, name)
        pull_image(api, ref)
        tag_image(api, ref, name)
        pulled.append(name)
        logger.info("base-image=%s: pulled from %s", name, ref)
    return pulled
