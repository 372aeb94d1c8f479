"""``farm base-images``: make, seed and fetch the base images builds start from."""

from __future__ import annotations

from pathlib import Path

import click
import docker

from farm.config import Settings
from workers.baseimages import (
    BaseImageSettings,
    detect_debian_mirror,
    ensure_base_images,
    pull_base_images,
    push_base_images,
)


def _api(settings: Settings) -> docker.APIClient:
    return docker.APIClient(base_url=settings.engine_url, timeout=3600)


@click.group("base-images")
def base_images() -> None:
    """Base images for an offline farm: build from Debian, push, pull."""


@base_images.command("build")
@click.option(
    "--mirror", default=None, help="Debian mirror (default: from apt sources)."
)
@click.option(
    "--extra-ca",
    "extra_ca",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="FARM_EXTRA_CA_FILES",
    help="CA certificate file builds must trust (a proxy's, say).",
)
@click.option(
    "--push/--no-push", default=False, help="Also seed them into the registry."
)
def build(mirror: str | None, extra_ca: tuple[Path, ...], push: bool) -> None:
    """Build any missing base image in this node's engine."""
    settings = Settings.from_env()
    image_settings = BaseImageSettings(
        mirror=mirror or detect_debian_mirror(), extra_ca_files=tuple(extra_ca)
    )
    api = _api(settings)
    for name in ensure_base_images(api, image_settings):
        click.echo(f"ready  {name}")
    if push:
        for name, digest in push_base_images(api, settings.registry).items():
            click.echo(f"pushed {settings.registry}/{name}@{digest}")


@base_images.command("push")
def push() -> None:
    """Seed this engine's base images into the farm registry."""
    settings = Settings.from_env()
    for name, digest in push_base_images(_api(settings), settings.registry).items():
        click.echo(f"pushed {settings.registry}/{name}@{digest}")


@base_images.command("pull")
def pull() -> None:
    """Fetch the base images from the farm registry into this node's engine."""
    settings = Settings.from_env()
    for name in pull_base_images(_api(settings), settings.registry):
        click.echo(f"pulled {name}")
