"""The farm's base images: their names, how each is made and what each builds on.

Names are a contract: builds, examples and the registry all say
``farm-base/debian:bookworm`` and so on. A catalog for another namespace or suite
(tests, or a farm moving to the next Debian release) derives its names the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from farm.buildspec import BASE_IMAGE_NAMESPACE
from workers.baseimages.errors import BaseImageError

DEFAULT_NAMESPACE = BASE_IMAGE_NAMESPACE
DEFAULT_SUITE = "bookworm"
DOCKERFILE_DIR = Path(__file__).parent

ImageSource = Literal["debootstrap", "busybox", "dockerfile"]


@dataclass(frozen=True)
class BaseImageRecipe:
    """How one base image is made: imported from a rootfs or built on a parent image."""

    repository: str
    source: ImageSource
    tag: str | None = None  # None: tagged with the Debian suite
    parent: str | None = None  # repository of the image its Dockerfile builds FROM

    @property
    def dockerfile(self) -> Path:
        return DOCKERFILE_DIR / f"{self.repository}.Dockerfile"


# Parents come before the images built on them; ensure_base_images relies on this order.
RECIPES: tuple[BaseImageRecipe, ...] = (
    BaseImageRecipe("debian", "debootstrap"),
    BaseImageRecipe("busybox", "busybox", tag="latest"),
    BaseImageRecipe("golang", "dockerfile", parent="debian"),
    BaseImageRecipe("node", "dockerfile", parent="debian"),
    BaseImageRecipe("node-runtime", "dockerfile", parent="debian"),
    BaseImageRecipe("python", "dockerfile", parent="debian"),
    BaseImageRecipe("python-runtime", "dockerfile", parent="debian"),
)


@dataclass(frozen=True)
class BaseImageCatalog:
    """The base image names for one namespace and Debian suite, and what each needs."""

    namespace: str = DEFAULT_NAMESPACE
    suite: str = DEFAULT_SUITE

    def name(self, recipe: BaseImageRecipe) -> str:
        return f"{self.namespace}/{recipe.repository}:{recipe.tag or self.suite}"

    def names(self) -> list[str]:
        """All base image names, parents before the images built on them."""
        return [self.name(recipe) for recipe in RECIPES]

    def recipe(self, name: str) -> BaseImageRecipe:
        """Find the recipe for a full image name, or say which names exist."""
        for recipe in RECIPES:
            if self.name(recipe) == name:
                return recipe
        raise BaseImageError(
            f"{name} is not a base image; known: {', '.join(self.names())}.", image=name
        )

    def parent(self, recipe: BaseImageRecipe) -> str | None:
        """Name the image a recipe's Dockerfile builds on, if it has one."""
        by_repository = {r.repository: r for r in RECIPES}
        return self.name(by_repository[recipe.parent]) if recipe.parent else None

    def with_parents(self, names: Sequence[str]) -> list[str]:
        """Order ``names`` and every image they build on, parents first."""
        wanted: set[str] = set()
        pending = list(names)
        while pending:
            name = pending.pop()
            wanted.add(name)
            parent = self.parent(self.recipe(name))
            pending += [parent] if parent and parent not in wanted else []
        return [name for name in self.names() if name in wanted]


BASE_IMAGES: list[str] = BaseImageCatalog().names()
