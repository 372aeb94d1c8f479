"""A small HTTP client for the farm's API, used by the ``farm`` command line."""

from __future__ import annotations

import gzip
import io
import json
import logging
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
from docker.utils.build import exclude_paths
from requests.adapters import HTTPAdapter, Retry

from farm.errors import FarmError

logger = logging.getLogger(__name__)

# A followed build sends at least a keep-alive every few seconds.
STREAM_READ_TIMEOUT_SECONDS = 60


class ApiError(FarmError):
    """The farm answered with an error, or could not be reached."""

    code = "api_error"

    def __init__(
        self, message: str, *, code: str = "api_error", status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status or 0


def pack_folder(
    folder: Path, *, context: str = ".", dockerfile: str = "Dockerfile"
) -> bytes:
    """A .tar.gz of what a build of ``folder`` needs, for upload.

    That is the context folder without what its ``.dockerignore`` excludes (as the
    engine would leave it out anyway) and without ``.git``, plus the Dockerfile
    wherever it lies. The same files always pack to the same bytes (sorted entries,
    no time in the gzip header), so the farm recognises a repeated upload.
    """
    return pack_contexts(folder, [(context, dockerfile)])


def pack_contexts(folder: Path, builds: Sequence[tuple[str, str]]) -> bytes:
    """Like :func:`pack_folder` for several builds of one folder, each a
    ``(context, dockerfile)`` pair (a group's images)."""
    kept: set[Path] = set()
    for context, dockerfile in builds:
        context_dir = folder / context
        kept |= {
            _where(context_dir / relative)
            for relative in exclude_paths(
                str(context_dir), _dockerignore(context_dir), dockerfile=dockerfile
            )
        }
        kept.add(_where(context_dir / dockerfile))
    # Folders leading to a kept file are packed too, so its path exists.
    kept |= {parent for path in kept for parent in path.parents}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if ".git" in relative.parts or not _kept(path, kept):
                continue
            tar.add(path, arcname=relative.as_posix(), recursive=False)
    return gzip.compress(buffer.getvalue(), mtime=0)


def parse_event_stream(lines: Iterable[bytes]) -> Iterator[tuple[str, str, str]]:
    """The (event, id, data) of each Server-Sent Event in a stream's lines."""
    kind, event_id, data = "message", "", list[str]()
    for line in lines:
        raw = line.decode("utf-8", "replace")
        if raw == "":
            if data:
                yield kind, event_id, "\n".join(data)
            kind, event_id, data = "message", "", list[str]()
        elif not raw.startswith(":"):  # a comment keeps the connection alive
            field, _, value = raw.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                kind = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)


def _kept(path: Path, kept: set[Path]) -> bool:
    return _where(path) in kept


def _where(path: Path) -> Path:
    """A path with its folders resolved but not itself: a symbolic link is packed
    as the link, not as what it points to."""
    return path.parent.resolve() / path.name


def _dockerignore(context_dir: Path) -> list[str]:
    path = context_dir / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def api_session() -> requests.Session:
    """An HTTP session for the farm's API that sends a read again when the
    connection was closed under it: a web server drops idle kept-alive connections,
    and a request sent just then meets a reset. Only reads are sent again."""
    session = requests.Session()
    retry = Retry(
        total=3,
        connect=3,
        read=3,
        status=0,
        allowed_methods=frozenset({"GET", "HEAD"}),
        backoff_factor=0.1,
        raise_on_status=False,
    )
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(max_retries=retry))
    return session


class FarmClient:
    """Submit builds and follow them through ``/api/v1``."""

    def __init__(
        self,
        server_url: str,
        *,
        token: str | None = None,
        timeout_seconds: float = 60,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.session = api_session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.server_url}/api/v1{path}"
        try:
            response = self.session.request(
                method, url, timeout=self.timeout_seconds, **kwargs
            )
        except requests.RequestException as exc:
            raise ApiError(
                f"Could not reach the farm at {self.server_url} "
                f"({type(exc).__name__}); is it running?",
                code="unreachable",
            ) from exc
        if response.status_code >= 400:
            self._raise_for(response)
        try:
            return response.json()
        except ValueError:
            return None

    @staticmethod
    def _raise_for(response: requests.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        raise ApiError(
            error.get("message") or f"HTTP {response.status_code}",
            code=error.get("code", "http_error"),
            status=response.status_code,
        )

    def submit_git(
        self, url: str, ref: str, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._call(
            "POST", "/builds", json={"git_url": url, "git_ref": ref, **options}
        )

    def submit_folder(self, folder: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        fields: list[tuple[str, str]] = []
        for name, value in options.items():
            values = value if isinstance(value, list | tuple) else [value]
            fields += [(name, str(item)) for item in values if item is not None]
        files = {
            "archive": (
                f"{folder.name or 'source'}.tar.gz",
                pack_folder(
                    folder,
                    context=options.get("context") or ".",
                    dockerfile=options.get("dockerfile") or "Dockerfile",
                ),
                "application/gzip",
            )
        }
        return self._call("POST", "/builds", data=fields, files=files)

    def submit_group_git(
        self, url: str, ref: str, group: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._call(
            "POST", "/groups", json={"git_url": url, "git_ref": ref, **group}
        )

    def submit_group_folder(
        self, folder: Path, group: Mapping[str, Any]
    ) -> dict[str, Any]:
        images = group.get("images")
        builds = [
            (
                str(image.get("context") or "."),
                str(image.get("dockerfile") or "Dockerfile"),
            )
            for image in (images if isinstance(images, list) else [])
            if isinstance(image, Mapping)
        ]
        archive = pack_contexts(folder, builds or [(".", "Dockerfile")])
        files = {
            "archive": (
                f"{folder.name or 'source'}.tar.gz",
                archive,
                "application/gzip",
            )
        }
        return self._call(
            "POST", "/groups", data={"group": json.dumps(group)}, files=files
        )

    def get_group(self, group_id: str) -> dict[str, Any]:
        return self._call("GET", f"/groups/{group_id}")

    def cancel_group(self, group_id: str) -> dict[str, Any]:
        return self._call("POST", f"/groups/{group_id}/cancel")

    def wait_group(self, group_id: str, *, poll_seconds: float = 1.0) -> dict[str, Any]:
        """Poll until the group's builds and its smoke test ended, and return it."""
        while True:
            group = self.get_group(group_id)
            if group["finished"]:
                return group
            time.sleep(poll_seconds)

    def get(self, build_id: str) -> dict[str, Any]:
        return self._call("GET", f"/builds/{build_id}")

    def list(
        self, *, states: Sequence[str] = (), limit: int = 20
    ) -> list[dict[str, Any]]:
        params = {"limit": limit, "state": ",".join(states)}
        return self._call("GET", "/builds", params=params)["builds"]

    def retry(self, build_id: str) -> dict[str, Any]:
        return self._call("POST", f"/builds/{build_id}/retry")

    def cancel(self, build_id: str) -> dict[str, Any]:
        return self._call("POST", f"/builds/{build_id}/cancel")

    def log(self, build_id: str, *, start: int = 0) -> dict[str, Any]:
        return self._call("GET", f"/builds/{build_id}/log", params={"start": start})

    def follow_log(self, build_id: str) -> Iterator[str]:
        """Yield log lines as they arrive until the build ends."""
        for kind, data in self.follow(build_id):
            if kind == "line":
                yield data

    def follow(
        self, build_id: str, *, start: int = 0, reconnects: int = 5
    ) -> Iterator[tuple[str, Any]]:
        """Follow the build's Server-Sent Events: ("line", text), ("progress",
        {...}) and last ("end", build). A dropped connection is resumed from the
        last line received, a few times."""
        position, failures = start, 0
        while True:
            try:
                for kind, event_id, data in self._events(build_id, position):
                    failures = 0
                    if event_id.isdigit():
                        position = int(event_id)
                    yield kind, data if kind == "line" else json.loads(data)
                    if kind == "end":
                        return
            except (requests.RequestException, ApiError) as exc:
                # Unreachable, or too busy (503): wait and resume; else it is final.
                busy = isinstance(exc, ApiError) and exc.status == 503
                if isinstance(exc, ApiError) and exc.code != "unreachable" and not busy:
                    raise
                failures += 1
                if failures > reconnects:
                    raise ApiError(
                        f"Lost the log stream of build {build_id} from "
                        f"{self.server_url}.",
                        code="unreachable",
                    ) from exc
                logger.debug("build=%s: log stream dropped, resuming", build_id)
                time.sleep(min(2**failures, 10))

    def _events(self, build_id: str, start: int) -> Iterator[tuple[str, str, str]]:
        """The raw (event, id, data) triples of one streaming response."""
        url = f"{self.server_url}/api/v1/builds/{build_id}/log"
        try:
            response = self.session.get(
                url,
                params={"follow": 1, "start": start},
                headers={"Accept": "text/event-stream"},
                stream=True,
                timeout=(self.timeout_seconds, STREAM_READ_TIMEOUT_SECONDS),
            )
        except requests.RequestException as exc:
            raise ApiError(
                f"Could not reach the farm at {self.server_url}.", code="unreachable"
            ) from exc
        with response:
            if response.status_code >= 400:
                self._raise_for(response)
            yield from parse_event_stream(response.iter_lines())
        raise requests.ConnectionError("the log stream ended before the build")

    def wait(self, build_id: str, *, poll_seconds: float = 1.0) -> dict[str, Any]:
        """Poll until the build reaches a final state, and return it."""
        while True:
            build = self.get(build_id)
            if build["state"] in {"succeeded", "failed", "cancelled"}:
                return build
            time.sleep(poll_seconds)
