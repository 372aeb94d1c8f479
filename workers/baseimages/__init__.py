"""Base images for the farm's builds, made offline and shared through a registry.

Builds can pull nothing from the internet, so every ``FROM`` names one of these:
``farm-base/debian:bookworm`` (debootstrap), ``farm-base/busybox:latest`` (static
busybox) and toolchain images built on the Debian one (see :data:`BASE_IMAGES`).
"""

from workers.baseimages.builder import (
    BaseImageSettings,
    ensure_base_images,
    make_base_image,
)
from workers.baseimages.catalog import BASE_IMAGES, BaseImageCatalog
from workers.baseimages.certs import local_ca_files
from workers.baseimages.errors import BaseImageError
from workers.baseimages.mirror import detect_debian_mirror
from workers.baseimages.registry import pull_base_images, push_base_images

__all__ = [
    "BASE_IMAGES",
    "BaseImageCatalog",
    "BaseImageError",
    "BaseImageSettings",
    "detect_debian_mirror",
    "ensure_base_images",
    "local_ca_files",
    "make_base_image",
    "pull_base_images",
    "push_base_images",
]
