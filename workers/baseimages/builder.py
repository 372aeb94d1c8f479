"""Make the farm's base images in an engine, offline, building only what is missing.

``farm-base/debian`` is imported from a debootstrapped rootfs (cached as a tarball),
``farm-base/busybox`` from the host's static busybox, and the toolchain images are
built from the ``*.Dockerfile`` files beside this module on top of the Debian one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker

from workers.baseimages.catalog import (
    DEFAULT_NAMESPACE,
    DEFAULT_SUITE,
    BaseImageCatalog,
)
from workers.baseimages.certs import read_extra_cas
from workers.baseimages.engine import (
    build_image,
    image_exists,
    image_size_bytes,
    import_rootfs,
)
from workers.baseimages.errors import BaseImageError
from workers.baseimages.rootfs import (
    DebianRootfsSpec,
    busybox_applets,
    busybox_rootfs_tar,
    cached_debian_rootfs,
)

logger = logging.getLogger(__name__)

IMAGE_LABEL = "farm.base-image"
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_PATH = "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class BaseImageSettings:
    """Where base images come from and what goes into them; one value per farm."""

    mirror: str
    suite: str = DEFAULT_SUITE
    cache_dir: Path = Path("/var/cache/farm/base-images")
    extra_ca_files: tuple[Path, ...] = ()
    namespace: str = DEFAULT_NAMESPACE
    busybox_path: Path = Path("/bin/busybox")

    @property
    def catalog(self) -> BaseImageCatalog:
        return BaseImageCatalog(self.namespace, self.suite)


def ensure_base_images(
    api: docker.APIClient,
    settings: BaseImageSettings,
    *,
    names: Sequence[str] | None = None,
) -> list[str]:
    """Make each named base image (default: all) the engine lacks; return the names."""
    catalog = settings.catalog
    wanted = list(dict.fromkeys(names if names is not None else catalog.names()))
    for name in catalog.with_parents(wanted):
        if image_exists(api, name):
            logger.info("base-image=%s: already present", name)
        else:
            make_base_image(api, settings, name)
    return wanted


def make_base_image(
    api: docker.APIClient, settings: BaseImageSettings, name: str
) -> str:
    """Make one base image from its recipe, whatever the engine holds; return its id."""
    source = settings.catalog.recipe(name).source
    logger.info("base-image=%s: making from %s", name, source)
    started = time.monotonic()
    image_id = MAKERS[source](api, settings, name)
    logger.info(
        "base-image=%s: made id=%s in %.0fs size_mb=%d",
        name,
        image_id[:19],
        time.monotonic() - started,
        image_size_bytes(api, name) // 1_000_000,
    )
    return image_id


def import_debian(api: docker.APIClient, settings: BaseImageSettings, name: str) -> str:
    """Import the (cached) debootstrapped rootfs, extra CAs included, as ``name``."""
    cas = read_extra_cas(settings.extra_ca_files)
    spec = DebianRootfsSpec(settings.mirror, settings.suite, cas)
    tarball = cached_debian_rootfs(spec, settings.cache_dir)
    changes = [f"ENV PATH={DEBIAN_PATH}", 'CMD ["bash"]', f"LABEL {IMAGE_LABEL}={name}"]
    return import_rootfs(api, tarball, name, changes=changes)


def import_busybox(
    api: docker.APIClient, settings: BaseImageSettings, name: str
) -> str:
    """Import a rootfs holding only the host's static busybox and its applets."""
    try:
        binary = settings.busybox_path.read_bytes()
    except OSError as exc:
        raise BaseImageError(
            f"Cannot read {settings.busybox_path}; install "
            "Debian's busybox-static package.",
            image=name,
        ) from exc
    rootfs = busybox_rootfs_tar(binary, busybox_applets(settings.busybox_path))
    changes = [f"ENV PATH={BUSYBOX_PATH}", 'CMD ["sh"]', f"LABEL {IMAGE_LABEL}={name}"]
    return import_rootfs(api, rootfs, name, changes=changes)


def build_toolchain(
    api: docker.APIClient, settings: BaseImageSettings, name: str
) -> str:
    """Build a toolchain image from its Dockerfile on top of its parent base image."""
    catalog = settings.catalog
    recipe = catalog.recipe(name)
    buildargs = {"BASE_IMAGE": catalog.parent(recipe) or ""}
    return build_image(
        api, recipe.dockerfile, name, buildargs=buildargs, labels={IMAGE_LABEL: name}
    )


Maker = Callable[[docker.APIClient, BaseImageSettings, str], str]
MAKERS: dict[str, Maker] = {
    "debootstrap": import_debian,
    "busybox": import_busybox,
    "dockerfile": build_toolchain,
}
