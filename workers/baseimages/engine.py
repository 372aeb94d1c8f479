"""The Docker engine calls that base images need, with engine errors translated here.

Every docker SDK error becomes a :class:`BaseImageError` in :func:`engine_call`, and
the JSON streams of build, push, pull and import are checked for ``errorDetail``
messages, which the engine sends instead of an HTTP error once a stream has begun.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import docker
import requests
from docker.utils import parse_repository_tag

from workers.baseimages.errors import BaseImageError

logger = logging.getLogger(__name__)

T = TypeVar("T")
Message = dict[str, Any]
BUILD_LOG_TAIL_LINES = 30


def engine_call(what: str, image: str, call: Callable[[], T]) -> T:
    """Run one engine call, turning any docker or HTTP failure into BaseImageError."""
    logger.debug("base-image=%s: engine %s", image, what)
    try:
        return call()
    except docker.errors.ImageNotFound as exc:
        raise BaseImageError(
            f"{what} failed: {image} is not in this engine.", image=image
        ) from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise BaseImageError(f"{what} of {image} failed: {exc}", image=image) from exc


def check_stream(messages: Iterable[Message], image: str) -> list[Message]:
    """Collect a JSON stream, raising on the first error message it carries."""
    collected = []
    for message in messages:
        if "errorDetail" in message or "error" in message:
            raise BaseImageError(f"{image}: {error_text(message)}", image=image)
        collected.append(message)
    return collected


def error_text(message: Message) -> str:
    """Read the error of a stream message: ``errorDetail`` or the older ``error``."""
    detail = message.get("errorDetail") or {}
    return str(detail.get("message") or message.get("error") or "unknown error")


def stream_lines(text: str) -> list[Message]:
    """Split a JSON-lines engine answer (as import returns it) into messages."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def push_digest(messages: Sequence[Message], image: str) -> str:
    """Find the manifest digest in a push stream's final ``aux`` message."""
    for message in reversed(messages):
        digest = (message.get("aux") or {}).get("Digest")
        if digest:
            return str(digest)
    raise BaseImageError(f"{image}: the registry reported no digest.", image=image)


def image_exists(api: docker.APIClient, name: str) -> bool:
    """Tell whether the engine holds an image by this name."""
    try:
        engine_call("inspect", name, lambda: api.inspect_image(name))
    except BaseImageError as exc:
        if isinstance(exc.__cause__, docker.errors.ImageNotFound):
            return False
        raise
    return True


def image_size_bytes(api: docker.APIClient, name: str) -> int:
    """Report an image's size on disk, for progress logs."""
    return int(engine_call("inspect", name, lambda: api.inspect_image(name))["Size"])


def import_rootfs(
    api: docker.APIClient, rootfs: Path | bytes, name: str, *, changes: Sequence[str]
) -> str:
    """Import a rootfs tarball (a file or bytes) as image ``name``; return its id."""
    repository, tag = parse_repository_tag(name)
    importer = (
        api.import_image_from_file
        if isinstance(rootfs, Path)
        else api.import_image_from_data
    )
    source = str(rootfs) if isinstance(rootfs, Path) else rootfs
    answer = engine_call(
        "import",
        name,
        lambda: importer(source, repository=repository, tag=tag, changes=list(changes)),
    )
    check_stream(stream_lines(answer), name)
    return str(engine_call("inspect", name, lambda: api.inspect_image(name))["Id"])


def dockerfile_context(dockerfile: bytes) -> bytes:
    """Wrap a Dockerfile as a build context tar (GNU format, which the engine reads)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size, info.mode = len(dockerfile), 0o644
        tar.addfile(info, io.BytesIO(dockerfile))
    return buffer.getvalue()


def build_image(
    api: docker.APIClient,
    dockerfile: Path,
    name: str,
    *,
    buildargs: Mapping[str, str],
    labels: Mapping[str, str],
) -> str:
    """Build a one-file context with the engine's builder, never pulling; return id."""
    context = io.BytesIO(dockerfile_context(dockerfile.read_bytes()))
    stream = engine_call(
        "build",
        name,
        lambda: api.build(
            fileobj=context,
            custom_context=True,
            tag=name,
            pull=False,
            rm=True,
            forcerm=True,
            decode=True,
            buildargs=dict(buildargs),
            labels=dict(labels),
        ),
    )
    build_log: list[str] = []
    try:
        engine_call(
            "build", name, lambda: check_stream(_logged(stream, build_log), name)
        )
    except BaseImageError as exc:
        tail = "\n".join(build_log[-BUILD_LOG_TAIL_LINES:])
        raise BaseImageError(f"{exc.message}\n{tail}", image=name, log=tail) from exc
    return str(engine_call("inspect", name, lambda: api.inspect_image(name))["Id"])


def _logged(stream: Iterable[Message], build_log: list[str]) -> Iterable[Message]:
    for message in stream:
        text = str(message.get("stream", "")).rstrip()
        if text:
            logger.debug("base-images: build %s", text)
            build_log.append(text)
        yield message


def tag_image(api: docker.APIClient, image: str, ref: str) -> None:
    """Give ``image`` the extra name ``ref`` (registry/repository:tag)."""
    repository, tag = parse_repository_tag(ref)
    engine_call("tag", image, lambda: api.tag(image, repository, tag, force=True))


def push_image(api: docker.APIClient, ref: str) -> str:
    """Push ``ref`` to the registry it names and return the manifest digest."""
    repository, tag = parse_repository_tag(ref)
    stream = engine_call(
        "push", ref, lambda: api.push(repository, tag=tag, stream=True, decode=True)
    )
    messages = engine_call("push", ref, lambda: check_stream(stream, ref))
    return push_digest(messages, ref)


def pull_image(api: docker.APIClient, ref: str) -> None:
    """Pull ``ref`` from the registry it names."""
    repository, tag = parse_repository_tag(ref)
    stream = engine_call(
        "pull", ref, lambda: api.pull(repository, tag=tag, stream=True, decode=True)
    )
    engine_call("pull", ref, lambda: check_stream(stream, ref))
