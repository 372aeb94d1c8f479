"""The error raised when a base image cannot be made, found, pushed or pulled."""

from __future__ import annotations

from typing import Any

from farm.errors import FarmError


class BaseImageError(FarmError):
    """A base image could not be made, found, pushed or pulled; the message says why."""

    code = "base_image_failed"
    status = 502

    def __init__(
        self, message: str, *, image: str | None = None, **details: Any
    ) -> None:
        if image is not None:
            details["image"] = image
        super().__init__(message, **details)
        self.image = image
