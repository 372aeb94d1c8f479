"""Talk to one Docker engine: BuildKit builds, pushes and image housekeeping.

Builds go through ``POST /build?version=2`` with the context tar as the body, so
BuildKit runs without a client session (https://docs.docker.com/engine/api/v1.41/
#tag/Image/operation/ImageBuild). Every docker, requests, urllib3 and socket error is
turned into a farm error in :func:`_translated`, the one choke point of this adapter.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any

import docker
import requests
import urllib3
from docker.utils.utils import parse_repository_tag

from farm.errors import (
    BuildCancelled,
    BuildFailed,
    BuildTimedOut,
    EngineError,
    FarmError,
    PushFailed,
)
from workers.buildkit.progress import BuildProgress

logger = logging.getLogger(__name__)

# Debian 12's docker.io (20.10) speaks API 1.41; newer engines still accept it.
# Fixing it keeps the client from asking the engine for its version on creation.
API_VERSION = "1.41"
DEFAULT_TIMEOUT_SECONDS = 120.0
CANCEL_POLL_SECONDS = 0.2

_TRANSPORT_ERRORS = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    docker.errors.StreamParseError,
    ValueError,  # a stream message that is not JSON
    OSError,
)

_TIMEOUT_ERRORS = (
    requests.exceptions.Timeout,
    urllib3.exceptions.TimeoutError,
    TimeoutError,
)


@dataclass(frozen=True)
class PushResult:
    """What the registry answered to a push: the manifest's digest and size."""

    digest: str
    size_bytes: int


@contextlib.contextmanager
def _translated(
    action: str, *, refusal: type[FarmError] = EngineError
) -> Iterator[None]:
    """Turn docker and transport errors raised while doing ``action`` into ours.

    The engine's 4xx answers become ``refusal`` (the request itself was wrong);
    everything else means the engine failed or could not be reached.
    """
    try:
        yield
    except docker.errors.APIError as exc:
        error_class = refusal if exc.is_client_error() else EngineError
        reason = exc.explanation or str(exc)
        message = f"Could not {action}: the engine answered {exc.status_code}: {reason}"
        raise error_class(message) from exc
    except (docker.errors.DockerException, *_TRANSPORT_ERRORS) as exc:
        reason = str(exc).rstrip(".")
        message = f"Could not {action}: {reason}. Check that the engine is running."
        raise EngineError(message) from exc


class EngineClient:
    """A Docker engine reached at ``base_url``, e.g. ``unix:///run/docker.sock``.

    ``timeout_seconds`` bounds every call, and how long a build may go without
    sending a single progress message.
    """

    def __init__(
        self, base_url: str, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self.base_url = base_url
        self.timeout_seconds = timeout_seconds
        with _translated("connect to the engine"):
            self._api = docker.APIClient(
                base_url=base_url, version=API_VERSION, timeout=timeout_seconds
            )
        self._api.trust_env = False  # engine calls never go through an env proxy

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def ping(self) -> None:
        """Raise EngineError unless the engine answers."""
        with _translated("ping the engine"):
            self._api.ping()

    def build(
        self,
        context: bytes | IO[bytes],
        *,
        dockerfile: str = "Dockerfile",
        tags: Sequence[str],
        target: str | None = None,
        build_args: Mapping[str, str] | None = None,
        cache_from: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        progress: BuildProgress,
        cancel: threading.Event | None = None,
    ) -> str:
        """Build the context tar with BuildKit and return the image id.

        ``dockerfile`` is the Dockerfile's path inside the context. Progress messages
        go to ``progress``; setting ``cancel`` stops the build and raises
        BuildCancelled. A failed build raises BuildFailed.
        """
        params = _build_params(dockerfile, tags, target, build_args, cache_from, labels)
        logger.debug("engine=%s: build tags=%s target=%s", self.base_url, tags, target)
        if cancel is not None and cancel.is_set():
            raise BuildCancelled("The build was cancelled before it started.")
        with _translated("start the build", refusal=BuildFailed):
            # The SDK's build() cannot ask for version=2, so we post ourselves.
            response = self._api._post(
                self._api._url("/build"),
                data=context,
                params=params,
                headers={"Content-Type": "application/x-tar"},
                stream=True,
            )
            self._api._raise_for_status(response)
        watch = _CancelWatch(response, cancel)
        try:
            self._follow(response, progress)
        except EngineError as exc:
            raise self._interrupted(exc, cancelled=watch.fired) from exc
        finally:
            watch.stop()
            response.close()
        return _outcome(progress, cancelled=watch.fired)

    def _follow(self, response: requests.Response, progress: BuildProgress) -> None:
        """Feed each message of the build stream to ``progress`` until it ends."""
        chunks = self._api._stream_helper(response, decode=False)
        messages = _json_messages(chunks)
        while True:
            with _translated("read the build's progress"):
                message = next(messages, None)
            if message is None:
                break
            progress.feed(message)
        progress.finish()

    def _interrupted(self, error: EngineError, *, cancelled: bool) -> FarmError:
        """Explain a build stream that broke off: cancelled, silent, or lost."""
        if cancelled:
            return BuildCancelled("The build was cancelled.")
        if isinstance(error.__cause__, _TIMEOUT_ERRORS):
            # Closing the response afterwards makes the engine cancel the solve.
            return BuildTimedOut(
                f"The build sent no progress for {self.timeout_seconds:.0f}s and was "
                "stopped; make long steps print output or raise the timeout."
            )
        return error

    def push(self, reference: str) -> PushResult:
        """Push ``registry/name:tag`` and return the digest the registry stored."""
        repository, tag = parse_repository_tag(reference)
        if tag is not None and tag.startswith("sha256:"):
            raise PushFailed(f"Cannot push {reference}: push a tag, not a digest.")
        logger.debug("engine=%s: push %s", self.base_url, reference)
        with _translated(f"push {reference}", refusal=PushFailed):
            # An explicit empty auth config: the engine wants the header, and we
            # never read credentials from the machine's docker config.
            stream = self._api.push(
                repository,
                tag=tag or "latest",
                stream=True,
                decode=True,
                auth_config={},
            )
        result = None
        for message in _guarded(stream, f"push {reference}", PushFailed):
            result = _push_result(message, reference) or result
        if result is None:
            raise PushFailed(f"The engine pushed {reference} but named no digest.")
        return result

    def image_size(self, reference: str) -> int:
        """Return the image's size in bytes as the engine stores it."""
        with _translated(f"inspect {reference}"):
            return int(self._api.inspect_image(reference)["Size"])

    def image_id(self, reference: str) -> str | None:
        """Return the image's id, or None if the engine does not have it."""
        try:
            with _translated(f"inspect {reference}"):
                return str(self._api.inspect_image(reference)["Id"])
        except EngineError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return None
            raise

    def remove_image(self, reference: str, *, force: bool = False) -> None:
        """Remove an image or tag; an image that is already gone is fine."""
        logger.debug("engine=%s: remove image %s", self.base_url, reference)
        try:
            with _translated(f"remove {reference}"):
                self._api.remove_image(reference, force=force)
        except EngineError as exc:
            if not isinstance(exc.__cause__, docker.errors.NotFound):
                raise

    def tag(self, image: str, reference: str) -> None:
        """Point ``reference`` (``registry/name:tag``) at ``image``."""
        repository, tag = parse_repository_tag(reference)
        with _translated(f"tag {image} as {reference}"):
            self._api.tag(image, repository, tag=tag or "latest", force=True)

    def data_dir(self, configured: str = "") -> str:
        """The engine's data folder (``configured``, else the one the engine
        names) if it is on this machine, else ""."""
        folder = configured
        if not folder:
            with _translated("read the engine's data folder"):
                folder = str(self._api.info().get("DockerRootDir") or "")
        return folder if folder and os.path.isdir(folder) else ""

    def disk_usage(self, data_dir: str = "") -> dict[str, int]:
        """The engine's build cache size and, if its data folder (``data_dir``, else
        the one the engine names) is on this machine, the free and total bytes of
        the filesystem holding it.

        The build cache counts records not shared with images, as ``docker system
        df`` does: a shared record's bytes are an image's too, and counted there.
        """
        folder = self.data_dir(data_dir)
        with _translated("read the engine's disk usage"):
            records = self._api.df().get("BuildCache") or []
        own = [record for record in records if not record.get("Shared")]
        figures = {"build_cache_bytes": sum(int(r.get("Size") or 0) for r in own)}
        if folder:
            disk = os.statvfs(folder)
            figures["free_bytes"] = disk.f_bavail * disk.f_frsize
            figures["size_bytes"] = disk.f_blocks * disk.f_frsize
        return figures

    def prune_build_cache(self, *, keep_bytes: int) -> int:
        """Drop the oldest build cache beyond ``keep_bytes``; return bytes freed."""
        with _translated("prune the build cache"):
            answer = self._api.prune_builds(keep_storage=keep_bytes)
        return int((answer or {}).get("SpaceReclaimed") or 0)

    # -- containers, for smoke tests ---------------------------------------------

    def pull(self, reference: str) -> None:
        """Pull ``registry/name:tag`` or ``registry/name@sha256:...``."""
        repository, tag = parse_repository_tag(reference)
        logger.debug("engine=%s: pull %s", self.base_url, reference)
        with _translated(f"pull {reference}"):
            stream = self._api.pull(
                repository,
                tag=tag or "latest",
                stream=True,
                decode=True,
                auth_config={},
            )
        for message in _guarded(stream, f"pull {reference}", EngineError):
            if "errorDetail" in message or "error" in message:
                raise EngineError(
                    f"Pulling {reference} failed: {message.get('error')}",
                    reference=reference,
                )

    def image_config(self, reference: str) -> dict[str, Any]:
        """The image's run settings: exposed ports, command, environment."""
        with _translated(f"inspect {reference}"):
            return dict(self._api.inspect_image(reference).get("Config") or {})

    def create_network(self, name: str, *, labels: Mapping[str, str]) -> None:
        """A bridge network whose containers reach each other by name and nothing
        outside it (``internal``)."""
        with _translated(f"create network {name}"):
            self._api.create_network(
                name, driver="bridge", internal=True, labels=dict(labels)
            )

    def remove_network(self, name: str) -> None:
        try:
            with _translated(f"remove network {name}"):
                self._api.remove_network(name)
        except EngineError as exc:
            if not isinstance(exc.__cause__, docker.errors.NotFound):
                raise

    def start_container(self, spec: ContainerSpec) -> str:
        """Create and start a container on one network; return its id."""
        with _translated(f"start a container of {spec.image}"):
            host_config = self._api.create_host_config(
                network_mode=spec.network,
                mem_limit=spec.memory_bytes,
                pids_limit=spec.pids_limit,
                security_opt=["no-new-privileges"],
            )
            networking = self._api.create_networking_config(
                {spec.network: self._api.create_endpoint_config(aliases=spec.aliases)}
            )
            created = self._api.create_container(
                spec.image,
                command=spec.command,
                name=spec.name,
                environment=dict(spec.env),
                labels=dict(spec.labels),
                host_config=host_config,
                networking_config=networking,
                detach=True,
            )
            self._api.start(created["Id"])
        return str(created["Id"])

    def container_state(self, container: str) -> dict[str, Any]:
        """Docker's State object: Status, Running, ExitCode, OOMKilled, Error."""
        with _translated(f"inspect container {container[:12]}"):
            return dict(self._api.inspect_container(container)["State"])

    def container_logs(self, container: str, *, lines: int) -> list[str]:
        """The last ``lines`` of what the container wrote to stdout and stderr, in
        the order it wrote them."""
        with _translated(f"read the log of container {container[:12]}"):
            output = self._api.logs(container, tail=lines, timestamps=True)
        stamped = output.decode("utf-8", "replace").splitlines()
        # Each line starts with its RFC 3339 time; the two streams arrive apart.
        ordered = sorted(stamped, key=lambda line: _log_time(line.split(" ", 1)[0]))
        return [line.split(" ", 1)[-1] for line in ordered][-lines:]

    def run_in(self, container: str, argv: Sequence[str]) -> tuple[int, str]:
        """Run ``argv`` in a running container; return its exit code and output."""
        with _translated(f"run a command in container {container[:12]}"):
            started = self._api.exec_create(container, list(argv))
            output = self._api.exec_start(started["Id"])
            code = self._api.exec_inspect(started["Id"])["ExitCode"]
        return int(code or 0), output.decode("utf-8", "replace")

    def remove_container(self, container: str) -> None:
        """Stop and remove a container; one already gone is fine."""
        try:
            with _translated(f"remove container {container[:12]}"):
                self._api.remove_container(container, force=True, v=True)
        except EngineError as exc:
            if not isinstance(exc.__cause__, docker.errors.NotFound):
                raise

    def labelled(
        self, label: str
    ) -> tuple[list[tuple[str, dict[str, str]]], list[tuple[str, dict[str, str]]]]:
        """The containers (by id) and networks (by name) carrying ``label``, each
        with all its labels."""
        with _translated(f"list what carries {label}"):
            containers = self._api.containers(all=True, filters={"label": label})
            networks = self._api.networks(filters={"label": label})
        return (
            [(c["Id"], c.get("Labels") or {}) for c in containers],
            [(n["Name"], n.get("Labels") or {}) for n in networks],
        )


def _log_time(stamp: str) -> tuple[str, str]:
    """A sort key for Docker's RFC 3339 log times, whose fractions drop their
    trailing zeros (``.5Z`` is later than ``.45Z``)."""
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    return seconds, fraction.ljust(9, "0")


@dataclass(frozen=True)
class ContainerSpec:
    """A container to start on a network of its own, under limits."""

    image: str
    name: str
    network: str
    aliases: list[str]
    command: list[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    memory_bytes: int = 1 << 30
    pids_limit: int = 1024


def _build_params(
    dockerfile: str,
    tags: Sequence[str],
    target: str | None,
    build_args: Mapping[str, str] | None,
    cache_from: Sequence[str],
    labels: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Query parameters of POST /build; version=2 selects BuildKit."""
    params: dict[str, Any] = {
        "version": "2",
        "dockerfile": dockerfile,
        "t": list(tags),
        "rm": "1",
        "forcerm": "1",
    }
    if target:
        params["target"] = target
    if build_args:
        params["buildargs"] = json.dumps(dict(build_args))
    if cache_from:
        params["cachefrom"] = json.dumps(list(cache_from))
    if labels:
        params["labels"] = json.dumps(dict(labels))
    return params


def _json_messages(chunks: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """Split the engine's newline-separated JSON stream into messages."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
    if buffer.strip():
        yield json.loads(buffer)


def _guarded(
    stream: Iterator[dict[str, Any]], action: str, refusal: type[FarmError]
) -> Iterator[dict[str, Any]]:
    """Iterate an engine stream with each read inside the choke point."""
    while True:
        with _translated(action, refusal=refusal):
            message = next(stream, None)
        if message is None:
            return
        yield message


def _outcome(progress: BuildProgress, *, cancelled: bool) -> str:
    """The image id of a finished build, or the error that explains its end."""
    if cancelled and progress.image_id is None:
        raise BuildCancelled("The build was cancelled.")
    failure = progress.failure()
    if failure is not None:
        raise failure
    if progress.image_id is None:
        raise BuildFailed(
            "The engine ended the build without an image id; see the build log."
        )
    return progress.image_id


def _push_result(message: Mapping[str, Any], reference: str) -> PushResult | None:
    detail = message.get("errorDetail")
    if detail is not None or "error" in message:
        text = detail.get("message") if isinstance(detail, Mapping) else None
        reason = text or message.get("error")
        raise PushFailed(f"Pushing {reference} failed: {reason}", reference=reference)
    aux = message.get("aux")
    if isinstance(aux, Mapping) and aux.get("Digest"):
        return PushResult(str(aux["Digest"]), int(aux.get("Size") or 0))
    return None


class _CancelWatch:
    """Shut down a streaming response's socket once ``cancel`` is set.

    Closing the response does not wake a read blocked on a quiet stream; shutting
    the socket down does, and the engine cancels the solve when its client leaves.
    """

    def __init__(
        self, response: requests.Response, cancel: threading.Event | None
    ) -> None:
        self.fired = False
        self._done = threading.Event()
        self._socket = _response_socket(response)
        self._thread: threading.Thread | None = None
        if cancel is not None:
            self._thread = threading.Thread(
                target=self._watch, args=(cancel,), name="build-cancel", daemon=True
            )
            self._thread.start()

    def _watch(self, cancel: threading.Event) -> None:
        while not self._done.is_set():
            if cancel.wait(CANCEL_POLL_SECONDS) and not self._done.is_set():
                self.fired = True
                self._shut_down()
                return

    def _shut_down(self) -> None:
        logger.debug("build stream: cancelling by shutting its socket down")
        if self._socket is None:
            return
        with contextlib.suppress(OSError):  # already closed: nothing to cancel
            self._socket.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()


def _response_socket(response: requests.Response) -> socket.socket | None:
    """Find the socket under a streaming response (plain, TLS or unix)."""
    fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
    raw = getattr(fp, "raw", None)
    sock = getattr(raw, "_sock", raw)
    if sock is None or not hasattr(sock, "shutdown"):
        logger.warning("build stream: no socket found; cancel waits for output")
        return None
    return sock  # type: ignore[no-any-return]
