"""Unit tests for BuildProgress, fed with /build streams recorded from a real engine.

The streams in ``data/`` were recorded from Debian's docker.io 20.10 engine. To record
them again against an engine that holds the tiny busybox image of tests/conftest.py:

    .venv/bin/python -m tests.workers.test_progress unix:///run/farm/engines/NAME/docker.sock
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from farm.errors import BuildFailed
from workers.buildkit import control_pb2
from workers.buildkit.progress import TRACE_ID, BuildProgress, Step

DATA = Path(__file__).parent / "data"
STARTED = datetime(2026, 1, 1, tzinfo=UTC)


def load_stream(name: str) -> list[dict[str, Any]]:
    lines = (DATA / f"{name}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def replay(
    stream: str, dockerfile: str | None = None
) -> tuple[BuildProgress, list[list[str]]]:
    """Feed a recorded stream to a fresh BuildProgress; return it and its log calls."""
    calls: list[list[str]] = []
    text = (DATA / f"{dockerfile}.Dockerfile").read_text() if dockerfile else None
    progress = BuildProgress(dockerfile_text=text, on_log=calls.append)
    for message in load_stream(stream):
        progress.feed(message)
    progress.finish()
    return progress, calls


def step_named(progress: BuildProgress, prefix: str) -> Step:
    matches = [step for step in progress.steps if step.name.startswith(prefix)]
    assert len(matches) == 1, [step.name for step in progress.steps]
    return matches[0]


def log_lines(calls: list[list[str]]) -> list[str]:
    return [line for call in calls for line in call]


def recorded_image_id(stream: str) -> str:
    ids = [
        m["aux"]["ID"] for m in load_stream(stream) if m.get("id") == "moby.image.id"
    ]
    assert len(ids) == 1
    return str(ids[0])


# Recorded streams -------------------------------------------------------------------


def test_first_build_reports_each_stage_step_with_its_dockerfile_line() -> None:
    progress, _ = replay("multistage-first", "multistage")
    expected = {
        "[build 2/5] WORKDIR /src": ("build", 5, "2/5"),
        "[build 3/5] COPY hello.txt .": ("build", 6, "3/5"),
        "[build 4/5] RUN echo": ("build", 7, "4/5"),
        "[build 5/5] RUN wc": ("build", 12, "5/5"),
        "[assets 2/2] RUN mkdir": ("assets", 16, "2/2"),
        "[stage-2 2/3] COPY --from=build": ("stage-2", 19, "2/3"),
        "[stage-2 3/3] COPY --from=assets": ("stage-2", 20, "3/3"),
    }
    for prefix, (stage, line, position) in expected.items():
        step = step_named(progress, prefix)
        assert (step.stage, step.dockerfile_line, step.position) == (
            stage,
            line,
            position,
        )
        assert not step.internal


def test_shared_from_step_maps_to_the_from_line_of_the_stage_it_names() -> None:
    # All three stages start FROM the same image: BuildKit shows one vertex for them
    # and names it after one of the stages.
    progress, _ = replay("multistage-first", "multistage")
    [from_step] = [
        s for s in progress.steps if (s.instruction or "").startswith("FROM")
    ]
    from_lines = {"build": 4, "assets": 14, "stage-2": 18}
    assert from_step.stage in from_lines
    assert from_step.dockerfile_line == from_lines[from_step.stage]
    assert from_step.position is not None and from_step.position.startswith("1/")


def test_first_build_runs_the_changed_steps_and_times_them() -> None:
    progress, _ = replay("multistage-first", "multistage")
    compile_step = step_named(progress, "[build 4/5] RUN echo")
    assert compile_step.cached is False
    assert compile_step.instruction is not None
    assert compile_step.instruction.startswith('RUN echo "compiling')
    assert compile_step.started_at is not None and compile_step.completed_at is not None
    assert compile_step.started_at.tzinfo is not None
    assert compile_step.duration_seconds is not None
    assert compile_step.duration_seconds >= 1.0  # the step sleeps for a second
    assert step_named(progress, "[assets 2/2] RUN mkdir").cached is False
    assert all(step.error is None for step in progress.steps)


def test_internal_vertexes_have_no_stage() -> None:
    progress, _ = replay("multistage-first", "multistage")
    internal = [step for step in progress.steps if step.internal]
    names = {step.name for step in internal}
    assert "[internal] load remote build context" in names
    assert "exporting to image" in names
    assert all(step.stage is None and step.dockerfile_line is None for step in internal)


def test_steps_are_listed_in_order_of_first_appearance() -> None:
    progress, _ = replay("multistage-first", "multistage")
    first_seen: list[str] = []
    for message in load_stream("multistage-first"):
        if message.get("id") != TRACE_ID:
            continue
        status = control_pb2.StatusResponse.FromString(base64.b64decode(message["aux"]))
        for vertex in status.vertexes:
            if vertex.digest not in first_seen:
                first_seen.append(vertex.digest)
    assert [step.digest for step in progress.steps] == first_seen
    assert progress.steps[0].name == "[internal] load remote build context"


def test_image_id_comes_from_the_image_id_message() -> None:
    progress, _ = replay("multistage-first", "multistage")
    assert progress.image_id == recorded_image_id("multistage-first")
    assert progress.image_id.startswith("sha256:")
    assert progress.failure() is None


def test_log_reads_like_buildkit_plain_progress() -> None:
    progress, calls = replay("multistage-first", "multistage")
    lines = log_lines(calls)
    step = step_named(progress, "[build 4/5] RUN echo")
    header = next(line for line in lines if line.endswith(step.name))
    number = header.split()[0]
    own = [line for line in lines if line.startswith(f"{number} ")]
    assert own[0] == f"{number} {step.name}"
    output = [line.split(" ", 2) for line in own[1:-1]]
    texts = [text for _, _, text in output]
    assert len(texts) == 2 and texts[0].startswith("compiling hello ")
    assert texts[1] == "warning: nothing to optimise"
    assert all(float(seconds) >= 0 for _, seconds, _ in output)
    assert own[-1].startswith(f"{number} DONE ") and own[-1].endswith("s")
    assert "Successfully tagged" in lines[-1]
    assert all(call for call in calls)  # never called with nothing to say


def test_status_lines_come_before_the_step_is_done() -> None:
    _, calls = replay("multistage-first", "multistage")
    lines = log_lines(calls)
    header = next(line for line in lines if line.endswith(" exporting to image"))
    number = header.split()[0]
    own = [line for line in lines if line.startswith(f"{number} ")]
    assert any(line.endswith(" exporting layers done") for line in own)
    assert own[-1].startswith(f"{number} DONE ")


def test_cached_rebuild_marks_steps_cached() -> None:
    progress, calls = replay("multistage-cached", "multistage")
    for prefix in ("[build 4/5] RUN", "[build 5/5] RUN", "[assets 2/2] RUN"):
        assert step_named(progress, prefix).cached is True
    assert step_named(progress, "[stage-2 3/3] COPY").cached is True
    cached = [line for line in log_lines(calls) if line.endswith(" CACHED")]
    assert len(cached) >= 5
    assert progress.image_id == recorded_image_id("multistage-first")


def test_failed_run_names_stage_line_and_step() -> None:
    progress, calls = replay("failing-run", "failing-run")
    failure = progress.failure()
    assert isinstance(failure, BuildFailed)
    assert failure.stage == "build"
    assert failure.dockerfile_line == 4
    assert failure.step is not None and failure.step.startswith(
        'RUN echo "about to fail"'
    )
    assert "exit code: 3" in failure.message
    assert failure.message.startswith("Stage build, Dockerfile line 4 (RUN echo ")
    assert "compiler: error in main.c" in failure.log_tail
    assert failure.details["dockerfile_line"] == 4
    assert progress.image_id is None
    assert any(" ERROR: " in line for line in log_lines(calls))


def test_failed_run_without_dockerfile_still_names_the_stage() -> None:
    progress, _ = replay("failing-run")
    failure = progress.failure()
    assert failure is not None
    assert failure.stage == "build"
    assert failure.dockerfile_line is None


def test_syntax_error_reports_the_line_buildkit_names() -> None:
    progress, calls = replay("syntax-error", "syntax-error")
    failure = progress.failure()
    assert isinstance(failure, BuildFailed)
    assert failure.dockerfile_line == 5
    assert "unknown instruction: COPPY" in failure.message
    assert "failed to solve" not in failure.message  # engine wrappers are dropped
    assert log_lines(calls)[-1].startswith("ERROR: ")


# Synthetic messages -----------------------------------------------------------------


def trace(**fields: Any) -> dict[str, Any]:
    status = control_pb2.StatusResponse(**fields)
    encoded = base64.b64encode(status.SerializeToString()).decode()
    return {"id": TRACE_ID, "aux": encoded}


def vertex(digest: str, name: str, **fields: Any) -> control_pb2.Vertex:
    return control_pb2.Vertex(digest=digest, name=name, **fields)


def stamp(seconds: float) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    value = Timestamp()
    value.FromDatetime(STARTED + timedelta(seconds=seconds))
    return value


def log(digest: str, data: bytes, seconds: float = 0.5) -> control_pb2.VertexLog:
    return control_pb2.VertexLog(
        vertex=digest, stream=1, msg=data, timestamp=stamp(seconds)
    )


def fed(*messages: Mapping[str, Any]) -> tuple[BuildProgress, list[str]]:
    lines: list[str] = []
    progress = BuildProgress(on_log=lines.extend)
    for message in messages:
        progress.feed(message)
    progress.finish()
    return progress, lines


def test_output_split_mid_line_and_mid_character_is_joined() -> None:
    name = "[1/2] RUN make"
    euro = "€".encode()
    _, lines = fed(
        trace(vertexes=[vertex("d1", name, started=stamp(0))]),
        trace(logs=[log("d1", b"first li")]),
        trace(logs=[log("d1", b"ne\nprice 3" + euro[:1])]),
        trace(logs=[log("d1", euro[1:] + b"\nno newline at the end")]),
    )
    assert lines == [
        "#1 [1/2] RUN make",
        "#1 0.500 first line",
        "#1 0.500 price 3€",
        "#1 0.000 no newline at the end",
    ]


def test_carriage_returns_keep_what_a_terminal_shows() -> None:
    _, lines = fed(
        trace(vertexes=[vertex("d1", "[1/2] RUN get", started=stamp(0))]),
        trace(logs=[log("d1", b"10%\r50%\r100%\r\n")]),
    )
    assert lines[-1] == "#1 0.500 100%"


def test_step_without_dockerfile_gets_stage_from_its_name() -> None:
    progress, _ = fed(trace(vertexes=[vertex("d1", "[2/2] RUN make")]))
    step = progress.steps[0]
    assert (step.stage, step.position, step.instruction) == (
        "stage-0",
        "2/2",
        "RUN make",
    )
    assert step.dockerfile_line is None and not step.internal


def test_announced_step_is_not_logged_until_it_starts() -> None:
    _, lines = fed(trace(vertexes=[vertex("d1", "[2/2] RUN make")]))
    assert lines == []


def test_cancelled_siblings_do_not_hide_the_failing_step() -> None:
    progress, _ = fed(
        trace(
            vertexes=[
                vertex(
                    "a",
                    "[a 2/2] RUN sleep 9",
                    started=stamp(0),
                    completed=stamp(1),
                    error="context canceled",
                ),
                vertex(
                    "b",
                    "[b 2/2] RUN false",
                    started=stamp(0),
                    completed=stamp(1),
                    error="exit code: 1",
                ),
            ]
        ),
        {"errorDetail": {"message": "exit code: 1"}, "error": "exit code: 1"},
    )
    failure = progress.failure()
    assert failure is not None and failure.stage == "b"


def test_legacy_stream_messages_and_errors_are_logged() -> None:
    progress, lines = fed(
        {"stream": "Step 1/2 : FROM scratch\n"},
        {"stream": "\n"},
        {"aux": {"ID": "sha256:abc"}},
        {"errorDetail": {"message": "boom"}, "error": "boom"},
    )
    assert lines == ["Step 1/2 : FROM scratch", "ERROR: boom"]
    assert progress.image_id == "sha256:abc"
    failure = progress.failure()
    assert failure is not None and failure.message == "The build failed: boom"


def test_unreadable_trace_is_skipped() -> None:
    progress, lines = fed({"id": TRACE_ID, "aux": "not base64!"})
    assert progress.steps == [] and lines == []


def test_unparsable_dockerfile_text_leaves_lines_unknown() -> None:
    progress = BuildProgress(dockerfile_text="NOT A DOCKERFILE")
    progress.feed(trace(vertexes=[vertex("d1", "[2/2] RUN make", started=stamp(0))]))
    assert progress.steps[0].dockerfile_line is None


# Recording --------------------------------------------------------------------------


class _RecordingProgress(BuildProgress):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.messages: list[Mapping[str, Any]] = []

    def feed(self, message: Mapping[str, Any]) -> None:
        self.messages.append(message)
        super().feed(message)


def _record(engine_url: str, dockerfile: str, streams: list[str]) -> None:
    from farm.errors import FarmError
    from workers.context import make_context_tar
    from workers.engine import EngineClient

    tag = f"farm-test/recording:{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory() as folder, EngineClient(engine_url) as engine:
        root = Path(folder)
        (root / "Dockerfile").write_text(
            (DATA / f"{dockerfile}.Dockerfile").read_text()
        )
        # Fresh content so the first build of a recording runs every step.
        (root / "hello.txt").write_text(f"hello {uuid.uuid4().hex}\n")
        stamp_arg = {"STAMP": uuid.uuid4().hex}
        for stream in streams:
            progress = _RecordingProgress()
            try:
                engine.build(
                    make_context_tar(root),
                    tags=[tag],
                    build_args=stamp_arg,
                    progress=progress,
                )
            except FarmError as exc:
                print(f"{stream}: {exc}")
            lines = [json.dumps(m) for m in progress.messages]
            (DATA / f"{stream}.jsonl").write_text("\n".join(lines) + "\n")
        engine.remove_image(tag)


if __name__ == "__main__":
    url = sys.argv[1]
    _record(url, "multistage", ["multistage-first", "multistage-cached"])
    _record(url, "failing-run", ["failing-run"])
    _record(url, "syntax-error", ["syntax-error"])


def test_a_secret_in_a_failed_steps_shortened_text_is_masked_before_it_is_cut():
    token = "npm_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEf"
    progress = BuildProgress(redact=lambda text: text.replace(token, "***"))
    progress._steps["d"] = Step(
        digest="d",
        name=f'[build 2/2] RUN test -z "{token}"',
        stage="build",
        instruction=f'RUN test -z "{token}"',
        error="process did not complete successfully: exit code: 1",
        internal=False,
    )
    failure = progress.failure()
    assert failure is not None
    assert "npm_AbCd" not in failure.message
    assert 'RUN test -z "***"' in failure.message
