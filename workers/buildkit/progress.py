"""Follow a BuildKit build through the JSON messages of the engine's /build stream.

With ``POST /build?version=2`` the Docker engine wraps BuildKit's progress in
``{"id": "moby.buildkit.trace", "aux": "<base64 StatusResponse>"}`` messages, sends the
image id as ``{"id": "moby.image.id", "aux": {"ID": ...}}`` and failures as
``{"errorDetail": {"message": ...}}``. :class:`BuildProgress` turns them into a list of
steps and a log that reads like BuildKit's own plain progress output.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from farm.dockerfile import Dockerfile, parse_dockerfile, parse_vertex_name
from farm.errors import BuildFailed, FarmError
from workers.buildkit import control_pb2

logger = logging.getLogger(__name__)

TRACE_ID = "moby.buildkit.trace"
TAIL_LINES = 20
# Output with no newline for this long is cut into a line of its own.
MAX_LINE_CHARS = 16_384

LogSink = Callable[[list[str]], None]

_PARSE_ERROR_LINE = re.compile(r"dockerfile parse error (?:on )?line (\d+)", re.I)
# Wrappers the engine puts around BuildKit's own message; they add nothing for users.
_NOISE = re.compile(
    r"^(failed to solve(?: with frontend [\w.]+)?|failed to create LLB definition"
    r"|failed to compute cache key): "
)


@dataclass
class Step:
    """One BuildKit vertex: a Dockerfile step, or an internal one (stage None)."""

    digest: str
    name: str = ""
    stage: str | None = None
    instruction: str | None = None
    position: str | None = None
    cached: bool = False
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_seconds: float | None = None
    error: str | None = None
    internal: bool = True
    dockerfile_line: int | None = None


@dataclass
class _Output:
    """How far one step's part of the log has been written."""

    number: int = 0
    done: bool = False
    statuses_done: set[str] = field(default_factory=set)
    decoders: dict[int, codecs.IncrementalDecoder] = field(default_factory=dict)
    partial: dict[int, str] = field(default_factory=dict)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))


class BuildProgress:
    """Fed each message of a /build stream; keeps steps, image id, log and failure."""

    def __init__(
        self,
        *,
        dockerfile_text: str | None = None,
        on_log: LogSink | None = None,
        redact: Callable[[str], str] = str,
    ) -> None:
        self.on_log = on_log
        # Masks secrets in text that is shortened: a secret cut short would no
        # longer be found and masked afterwards.
        self.redact = redact
        self.image_id: str | None = None
        self.error: str | None = None
        self.dockerfile = _try_parse(dockerfile_text)
        self._steps: dict[str, Step] = {}
        self._outputs: dict[str, _Output] = {}
        self._numbers = 0
        self._pending: list[str] = []

    @property
    def steps(self) -> list[Step]:
        """All vertexes seen so far, in order of first appearance."""
        return list(self._steps.values())

    @property
    def failed(self) -> bool:
        return self.error is not None or any(s.error for s in self._steps.values())

    def step(self, digest: str) -> Step | None:
        return self._steps.get(digest)

    def feed(self, message: Mapping[str, Any]) -> None:
        """Take one decoded JSON message of the stream and log what it adds."""
        aux = message.get("aux")
        if message.get("id") == TRACE_ID and isinstance(aux, str):
            self._apply_trace(aux)
        elif isinstance(aux, Mapping) and "ID" in aux:  # "moby.image.id" or legacy
            self.image_id = str(aux["ID"])
        if isinstance(message.get("stream"), str):  # the engine's own remarks
            self._pending.extend(_text_lines(message["stream"]))
        if "errorDetail" in message or "error" in message:
            self._apply_error(message)
        self._flush()

    def finish(self) -> None:
        """Write out output lines still waiting for their newline."""
        for digest in self._outputs:
            self._flush_partial(digest)
        self._flush()

    def failure(self) -> BuildFailed | None:
        """The error to raise for this build, or None if nothing failed."""
        step = self._failed_step()
        if step is not None:
            return self._step_failure(step)
        if self.error is not None:
            return self._stream_failure(self.error)
        return None

    # Decoding -----------------------------------------------------------------

    def _apply_trace(self, aux: str) -> None:
        try:
            status = control_pb2.StatusResponse.FromString(base64.b64decode(aux))
        except (binascii.Error, DecodeError) as exc:
            logger.warning("buildkit trace: skipped an unreadable message: %s", exc)
            return
        # A step whose output or statuses come in the same message is logged as
        # done after them, as in BuildKit's own log; the others right away.
        busy = {s.vertex for s in status.statuses} | {g.vertex for g in status.logs}
        finished = []
        for vertex in status.vertexes:
            step = self._apply_vertex(vertex)
            if step is not None and step.digest in busy:
                finished.append(step)
            elif step is not None:
                self._complete(step)
        for vertex_status in status.statuses:
            self._apply_status(vertex_status)
        for log in status.logs:
            self._apply_log(log)
        for warning in status.warnings:
            self._apply_warning(warning)
        for step in finished:
            self._complete(step)

    def _apply_vertex(self, vertex: control_pb2.Vertex) -> Step | None:
        """Update a step from a vertex; return it if it has just finished."""
        step = self._step_for(vertex.digest, vertex.name)
        was_done = step.completed_at is not None
        if vertex.HasField("started"):
            started = _datetime(vertex.started)
            if step.started_at is None or started < step.started_at:
                step.started_at = started
            if not vertex.HasField("completed"):
                step.completed_at = None  # BuildKit runs it again
        if vertex.HasField("started") or vertex.HasField("completed"):
            step.cached = vertex.cached
        if vertex.HasField("completed"):
            step.completed_at = _datetime(vertex.completed)
        if step.started_at and step.completed_at:
            delta = step.completed_at - step.started_at
            step.duration_seconds = delta.total_seconds()
        if vertex.error:
            step.error = vertex.error
        return self._log_vertex(step, was_done)

    def _apply_status(self, status: control_pb2.VertexStatus) -> None:
        output = self._output_for(self._step_for(status.vertex))
        if status.HasField("completed") and status.id not in output.statuses_done:
            output.statuses_done.add(status.id)
            self._pending.append(f"#{output.number} {status.id} done")

    def _apply_log(self, log: control_pb2.VertexLog) -> None:
        step = self._step_for(log.vertex)
        output = self._output_for(step)
        decoder = output.decoders.setdefault(
            log.stream, codecs.getincrementaldecoder("utf-8")(errors="replace")
        )
        text = output.partial.pop(log.stream, "") + decoder.decode(log.msg)
        *lines, rest = text.split("\n")
        if len(rest) > MAX_LINE_CHARS:
            lines.append(rest)
        elif rest:
            output.partial[log.stream] = rest
        elapsed = _elapsed(step, _datetime(log.timestamp))
        for line in lines:
            self._log_output(output, elapsed, line)

    def _apply_warning(self, warning: control_pb2.VertexWarning) -> None:
        output = self._output_for(self._step_for(warning.vertex))
        short = warning.short.decode("utf-8", errors="replace")
        self._pending.append(f"#{output.number} WARNING: {short}")

    def _apply_error(self, message: Mapping[str, Any]) -> None:
        detail = message.get("errorDetail")
        text = detail.get("message") if isinstance(detail, Mapping) else None
        self.error = str(text or message.get("error") or "unknown error")
        self._pending.append(f"ERROR: {self.error}")

    # Steps --------------------------------------------------------------------

    def _step_for(self, digest: str, name: str = "") -> Step:
        step = self._steps.get(digest)
        if step is None:
            step = self._steps[digest] = Step(digest=digest)
        if name and not step.name:
            self._describe(step, name)
        return step

    def _describe(self, step: Step, name: str) -> None:
        """Fill in what a vertex name says: stage, instruction, Dockerfile line."""
        step.name = name
        ref = parse_vertex_name(name)
        if ref is None:
            return
        step.internal = False
        step.instruction = ref.instruction
        step.position = f"{ref.position}/{ref.total}"
        # BuildKit leaves the stage out when the Dockerfile has a single stage.
        step.stage = ref.stage or "stage-0"
        located = self.dockerfile.locate_step(name) if self.dockerfile else None
        if located is not None:
            step.stage, step.dockerfile_line = located

    def _failed_step(self) -> Step | None:
        failed = [step for step in self._steps.values() if step.error]
        # When one step fails BuildKit cancels the others; the cause is the one
        # whose error is not a cancellation.
        causes = [s for s in failed if "context canceled" not in (s.error or "")]
        candidates = causes or failed
        return candidates[0] if candidates else None

    def _step_failure(self, step: Step) -> BuildFailed:
        error = _clean(step.error or "")
        line = step.dockerfile_line or _parse_error_line(error)
        where = [f"Stage {step.stage}"] if step.stage else []
        where += [f"Dockerfile line {line}"] if line else []
        what = _shortened(self.redact(step.instruction or step.name))
        prefix = f"{', '.join(where)} ({what})" if where else what
        output = self._outputs.get(step.digest)
        return BuildFailed(
            f"{prefix} failed: {error}",
            stage=step.stage,
            dockerfile_line=line,
            step=step.instruction or step.name,
            log_tail=list(output.tail) if output else [],
        )

    def _stream_failure(self, error: str) -> BuildFailed:
        error = _clean(error)
        line = _parse_error_line(error)
        if line is None:
            return BuildFailed(f"The build failed: {error}")
        stage = self.dockerfile.stage_at_line(line) if self.dockerfile else None
        return BuildFailed(
            f"The Dockerfile could not be read at line {line}: {error}",
            stage=stage.label if stage else None,
            dockerfile_line=line,
        )

    # Log ----------------------------------------------------------------------

    def _output_for(self, step: Step) -> _Output:
        output = self._outputs.get(step.digest)
        if output is None:
            self._numbers += 1
            output = self._outputs[step.digest] = _Output(number=self._numbers)
            self._pending.append(f"#{output.number} {step.name or step.digest}")
        return output

    def _log_vertex(self, step: Step, was_done: bool) -> Step | None:
        """Log a step's start or restart; return it if its end is still to log."""
        active = step.started_at is not None or step.completed_at is not None
        if not active and step.digest not in self._outputs:
            return None  # only announced; BuildKit has not started it yet
        output = self._output_for(step)
        if was_done and step.completed_at is None:
            self._pending.append(f"#{output.number} {step.name}")
            output.done = False
        return step if step.completed_at is not None and not output.done else None

    def _complete(self, step: Step) -> None:
        output = self._outputs[step.digest]
        if output.done:
            return
        output.done = True
        self._flush_partial(step.digest)
        if step.error:
            self._pending.append(f"#{output.number} ERROR: {step.error}")
        elif step.cached:
            self._pending.append(f"#{output.number} CACHED")
        else:
            seconds = step.duration_seconds or 0.0
            self._pending.append(f"#{output.number} DONE {seconds:.1f}s")

    def _flush_partial(self, digest: str) -> None:
        output = self._outputs[digest]
        step = self._steps[digest]
        for stream in sorted(output.partial):
            self._log_output(output, _elapsed(step, None), output.partial.pop(stream))

    def _log_output(self, output: _Output, elapsed: float | None, line: str) -> None:
        line = line.rstrip("\r").rsplit("\r", 1)[-1]  # keep what a terminal would show
        output.tail.append(line)
        stamp = f" {elapsed:.3f}" if elapsed is not None else ""
        self._pending.append(f"#{output.number}{stamp} {line}")

    def _flush(self) -> None:
        lines, self._pending = self._pending, []
        if lines and self.on_log is not None:
            self.on_log(lines)


def _try_parse(text: str | None) -> Dockerfile | None:
    if text is None:
        return None
    try:
        return parse_dockerfile(text)
    except FarmError as exc:
        # BuildKit reports the problem itself; steps just go without line numbers.
        logger.debug("buildkit progress: Dockerfile not readable here: %s", exc)
        return None


def _datetime(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _elapsed(step: Step, at: datetime | None) -> float | None:
    if step.started_at is None:
        return None
    end = at or step.completed_at or step.started_at
    return max((end - step.started_at).total_seconds(), 0.0)


def _text_lines(text: str) -> list[str]:
    return [line for line in text.rstrip("\n").split("\n") if line.strip()]


def _shortened(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _clean(error: str) -> str:
    while True:
        stripped = _NOISE.sub("", error, count=1)
        if stripped == error:
            return error.strip()
        error = stripped


def _parse_error_line(error: str) -> int | None:
    match = _PARSE_ERROR_LINE.search(error)
    return int(match[1]) if match else None
