"""Tests for EngineClient: context tars offline, builds and pushes on a real engine."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import docker
import pytest

from farm.errors import (
    BuildCancelled,
    BuildFailed,
    BuildTimedOut,
    EngineError,
    PushFailed,
    SourceError,
)
from farm.local.process import ServiceProcess, free_port, port_open, wait_until
from workers.buildkit.progress import BuildProgress
from workers.context import make_context_tar
from workers.engine import EngineClient, _build_params

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


def write_context(
    folder: Path, dockerfile: str, files: Mapping[str, str] | None = None
) -> Path:
    """Make a build context folder with a Dockerfile and the given files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def tar_names(folder: Path) -> list[str]:
    with make_context_tar(folder) as archive, tarfile.open(fileobj=archive) as tar:
        return tar.getnames()


# Context tars (no engine) -----------------------------------------------------------


def test_context_tar_is_gnu_format_sorted_and_owned_by_root(tmp_path: Path) -> None:
    write_context(tmp_path, "FROM scratch\n", {"b": "2", "a/z": "1", "a/y": "0"})
    with make_context_tar(tmp_path) as archive:
        data = archive.read()
    # GNU headers carry the magic "ustar  \0"; PAX ones would add 'x' headers.
    assert data[257:265] == b"ustar  \x00"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["Dockerfile", "a", "a/y", "a/z", "b"]
    assert all(m.type != tarfile.XHDTYPE for m in members)
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}


def test_context_tar_is_the_same_for_the_same_folder(tmp_path: Path) -> None:
    write_context(tmp_path, "FROM scratch\n", {"one": "1", "sub/two": "2"})
    with make_context_tar(tmp_path) as first, make_context_tar(tmp_path) as second:
        assert first.read() == second.read()


def test_context_tar_honours_dockerignore_but_keeps_the_dockerfile(
    tmp_path: Path,
) -> None:
    ignore = "# comment\n*.log\nsecrets\nDockerfile\n!keep.log\n"
    files = {".dockerignore": ignore, "app": "x", "debug.log": "x", "keep.log": "x"}
    write_context(tmp_path, "FROM scratch\n", {**files, "secrets/key": "x"})
    names = tar_names(tmp_path)
    assert "Dockerfile" in names and ".dockerignore" in names
    assert "app" in names and "keep.log" in names
    assert "debug.log" not in names
    assert not any(name.startswith("secrets") for name in names)


def test_context_tar_keeps_links_inside_and_refuses_links_outside(
    tmp_path: Path,
) -> None:
    context = write_context(tmp_path / "ctx", "FROM scratch\n", {"real": "x"})
    (context / "inside").symlink_to("real")
    assert "inside" in tar_names(context)
    (context / "outside").symlink_to("../elsewhere")
    with pytest.raises(SourceError) as caught:
        make_context_tar(context)
    assert caught.value.details["path"] == "outside"


def test_context_tar_refuses_a_link_that_escapes_through_another_link(
    tmp_path: Path,
) -> None:
    context = write_context(tmp_path / "ctx", "FROM scratch\n")
    (context / "here").symlink_to(".")
    (context / "sneaky").symlink_to("here/../etc")
    with pytest.raises(SourceError):
        make_context_tar(context)


def test_context_tar_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        make_context_tar(tmp_path / "missing")


def test_build_params_select_buildkit_and_pass_options_through() -> None:
    params = _build_params(
        "docker/Dockerfile",
        ["reg/app:1", "reg/app:latest"],
        "build",
        {"A": "1"},
        ["reg/cache:build", "reg/cache:final"],
        {"farm.build-id": "b1"},
    )
    assert params["version"] == "2"
    assert params["t"] == ["reg/app:1", "reg/app:latest"]
    assert params["dockerfile"] == "docker/Dockerfile"
    assert params["target"] == "build"
    assert json.loads(params["buildargs"]) == {"A": "1"}
    assert json.loads(params["cachefrom"]) == ["reg/cache:build", "reg/cache:final"]
    assert json.loads(params["labels"]) == {"farm.build-id": "b1"}


def test_unreachable_engine_raises_engine_error(tmp_path: Path) -> None:
    client = EngineClient(f"unix://{tmp_path}/no.sock", timeout_seconds=2)
    with pytest.raises(EngineError) as caught:
        client.ping()
    assert isinstance(caught.value.__cause__, Exception)


def test_build_cancelled_before_it_starts_never_reaches_the_engine(
    tmp_path: Path,
) -> None:
    client = EngineClient(f"unix://{tmp_path}/no.sock", timeout_seconds=2)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BuildCancelled):
        client.build(b"", tags=["x:y"], progress=BuildProgress(), cancel=cancel)


# Real engine ------------------------------------------------------------------------


@pytest.fixture()
def engine(engine_url: str) -> Iterator[EngineClient]:
    with EngineClient(engine_url) as client:
        yield client


@pytest.fixture()
def new_tag(engine: EngineClient) -> Iterator[Callable[[str], str]]:
    """Hand out unique image tags and remove those images after the test."""
    made: list[str] = []

    def make(name: str = "farm-test/engine") -> str:
        made.append(f"{name}:{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield make
    for tag in made:
        engine.remove_image(tag, force=True)


def build(
    engine: EngineClient, folder: Path, tag: str, **options: object
) -> tuple[str, BuildProgress]:
    dockerfile = (folder / "Dockerfile").read_text()
    progress = BuildProgress(dockerfile_text=dockerfile)
    with make_context_tar(folder) as context:
        image_id = engine.build(
            context,
            tags=[tag],
            progress=progress,
            **options,  # type: ignore[arg-type]
        )
    return image_id, progress


@pytest.mark.integration
def test_two_stage_build_succeeds_and_its_rebuild_is_cached(
    engine: EngineClient, tiny_image: str, new_tag: Callable[[str], str], tmp_path: Path
) -> None:
    token = uuid.uuid4().hex
    dockerfile = (
        f"FROM {tiny_image} AS build\n"
        "COPY token.txt /src/token.txt\n"
        "RUN cat /src/token.txt > /src/app && echo built\n"
        "\n"
        f"FROM {tiny_image}\n"
        "COPY --from=build /src/app /app\n"
    )
    folder = write_context(tmp_path, dockerfile, {"token.txt": token})
    tag = new_tag("farm-test/engine")

    first_id, first = build(engine, folder, tag)
    second_id, second = build(engine, folder, tag)

    assert first_id == second_id == engine.image_id(tag)
    run = "RUN cat /src/token.txt > /src/app && echo built"
    copy = "COPY --from=build /src/app /app"
    for progress, cached in ((first, False), (second, True)):
        steps = {s.instruction: s for s in progress.steps if s.instruction}
        assert (steps[run].stage, steps[run].dockerfile_line) == ("build", 3)
        assert (steps[copy].stage, steps[copy].dockerfile_line) == ("stage-1", 6)
        assert steps[run].cached is cached
        assert steps[copy].cached is cached
    assert engine.image_size(tag) > 0


SI_UNITS = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def build_cache_docker_shows(engine_url: str) -> float:
    """The build cache size `docker system df` prints (4 significant digits)."""
    for _ in range(20):
        done = subprocess.run(
            ["docker", "-H", engine_url, "system", "df", "--format", "{{json .}}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if "already running" not in done.stderr:  # the node's own measurement
            break
        time.sleep(0.5)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    (size,) = [row["Size"] for row in rows if row["Type"] == "Build Cache"]
    number, unit = re.fullmatch(r"([\d.]+)\s*([kMGT]?B)", size).groups()
    return float(number) * SI_UNITS[unit]


@pytest.mark.integration
def test_the_build_cache_size_is_the_one_docker_system_df_shows(
    engine: EngineClient,
    engine_url: str,
    tiny_image: str,
    new_tag: Callable[[str], str],
    tmp_path: Path,
) -> None:
    # The final image shares the copied layer with the build cache: counted once.
    dockerfile = (
        f"FROM {tiny_image} AS build\n"
        f"RUN head -c 2000000 /dev/urandom > /blob && echo {uuid.uuid4().hex}\n"
        f"FROM {tiny_image}\n"
        "COPY --from=build /blob /blob\n"
    )
    build(engine, write_context(tmp_path, dockerfile, {}), new_tag("farm-test/df"))
    for _ in range(20):
        try:
            ours = engine.disk_usage()["build_cache_bytes"]
            break
        except EngineError as exc:
            assert "already running" in exc.message
            time.sleep(0.5)
    shown = build_cache_docker_shows(engine_url)
    assert ours == pytest.approx(shown, rel=1e-3, abs=1000), (ours, shown)


@pytest.mark.integration
def test_build_args_labels_and_target_pass_through(
    engine: EngineClient,
    tiny_image: str,
    new_tag: Callable[[str], str],
    tmp_path: Path,
    engine_url: str,
) -> None:
    dockerfile = (
        f"FROM {tiny_image} AS build\n"
        "ARG GREETING\n"
        'RUN test "$GREETING" = "hello farm"\n'
        f"FROM {tiny_image}\n"
        "RUN false\n"
    )
    folder = write_context(tmp_path, dockerfile)
    tag = new_tag("farm-test/engine")
    build(
        engine,
        folder,
        tag,
        target="build",
        build_args={"GREETING": "hello farm"},
        labels={"farm.test": "yes"},
    )
    api = docker.APIClient(base_url=engine_url)
    try:
        assert api.inspect_image(tag)["Config"]["Labels"]["farm.test"] == "yes"
    finally:
        api.close()


@pytest.mark.integration
def test_context_tar_is_accepted_by_the_engine_without_ignored_files(
    engine: EngineClient, tiny_image: str, new_tag: Callable[[str], str], tmp_path: Path
) -> None:
    dockerfile = (
        f"FROM {tiny_image}\n"
        "COPY . /ctx\n"
        "RUN test -f /ctx/app/main.txt && test ! -e /ctx/secret.env\n"
    )
    files = {"app/main.txt": "main", "secret.env": "x", ".dockerignore": "*.env\n"}
    folder = write_context(tmp_path, dockerfile, files)
    build(engine, folder, new_tag("farm-test/engine"))


@pytest.mark.integration
def test_failing_run_raises_build_failed_with_stage_and_line(
    engine: EngineClient, tiny_image: str, new_tag: Callable[[str], str], tmp_path: Path
) -> None:
    dockerfile = (
        f"FROM {tiny_image} AS compile\n"
        "WORKDIR /src\n"
        f"RUN echo {uuid.uuid4().hex}\n"
        'RUN echo "cc: main.c:3: error" >&2 && exit 2\n'
        f"FROM {tiny_image}\n"
        "COPY --from=compile /src /src\n"
    )
    folder = write_context(tmp_path, dockerfile)
    with pytest.raises(BuildFailed) as caught:
        build(engine, folder, new_tag("farm-test/engine"))
    failure = caught.value
    assert (failure.stage, failure.dockerfile_line) == ("compile", 4)
    assert failure.step == 'RUN echo "cc: main.c:3: error" >&2 && exit 2'
    assert "exit code: 2" in failure.message
    assert "cc: main.c:3: error" in failure.log_tail


@pytest.mark.integration
def test_syntax_error_raises_build_failed_with_line(
    engine: EngineClient, tiny_image: str, new_tag: Callable[[str], str], tmp_path: Path
) -> None:
    dockerfile = f"FROM {tiny_image}\nRUN true\n\nCOPYY a b\n"
    folder = write_context(tmp_path, dockerfile)
    with pytest.raises(BuildFailed) as caught:
        build(engine, folder, new_tag("farm-test/engine"))
    assert caught.value.dockerfile_line == 4
    assert "COPYY" in caught.value.message


def running_pids(token: str) -> set[int]:
    """Processes whose command line holds ``token``, and their children."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            children = Path(f"/proc/{entry}/task/{entry}/children").read_text()
        except OSError:
            continue  # exited while we looked
        if token.encode() in cmdline and b"pytest" not in cmdline:
            found |= {int(entry), *map(int, children.split())}
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.integration
def test_cancel_stops_running_build(
    engine: EngineClient, tiny_image: str, new_tag: Callable[[str], str], tmp_path: Path
) -> None:
    token = uuid.uuid4().hex
    # The trailing echo keeps the shell from exec-ing sleep, so the shell's command
    # line (with the token) stays visible while sleep runs.
    dockerfile = (
        f"FROM {tiny_image}\nRUN echo started-{token} && sleep 300 && echo {token}\n"
    )
    folder = write_context(tmp_path, dockerfile)
    tag = new_tag("farm-test/engine")
    started, cancel = threading.Event(), threading.Event()
    outcome: list[BaseException | str] = []

    def on_log(lines: list[str]) -> None:
        if any(line.endswith(f" started-{token}") for line in lines):
            started.set()

    def run() -> None:
        progress = BuildProgress(on_log=on_log)
        try:
            with make_context_tar(folder) as context:
                outcome.append(
                    engine.build(context, tags=[tag], progress=progress, cancel=cancel)
                )
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(60), "the RUN step never started"
    pids = running_pids(token)
    assert pids, "no build processes found"

    cancelled_at = time.monotonic()
    cancel.set()
    worker.join(30)
    returned_after = time.monotonic() - cancelled_at
    wait_until(
        lambda: not any(alive(pid) for pid in pids),
        timeout_seconds=10,
        what="cancelled build processes to exit",
        log_path=tmp_path / "none",
    )
    gone_after = time.monotonic() - cancelled_at

    assert isinstance(outcome[0], BuildCancelled)
    assert returned_after < 5
    assert gone_after < 10
    assert engine.image_id(tag) is None
    engine.ping()


@pytest.mark.integration
def test_silent_build_fails_after_the_timeout_and_is_stopped(
    engine_url: str, tiny_image: str, new_tag: Callable[[str], str], tmp_path: Path
) -> None:
    token = uuid.uuid4().hex
    dockerfile = f"FROM {tiny_image}\nRUN echo {token} && sleep 60 && echo done\n"
    folder = write_context(tmp_path, dockerfile)
    started = time.monotonic()
    with (
        EngineClient(engine_url, timeout_seconds=3) as engine,
        pytest.raises(BuildTimedOut) as caught,
    ):
        build(engine, folder, new_tag("farm-test/engine"))
    assert "no progress for 3s" in caught.value.message
    assert time.monotonic() - started < 30
    wait_until(
        lambda: not running_pids(token),
        timeout_seconds=10,
        what="timed-out build processes to exit",
        log_path=tmp_path / "none",
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A CNCF distribution registry of our own on a loopback port."""
    folder = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log_path = folder / "registry.log"
    process = ServiceProcess(
        "registry", ["docker-registry", "serve", str(config)], log_path=log_path
    )
    process.start()
    try:
        wait_until(
            lambda: port_open(port),
            timeout_seconds=20,
            what="registry",
            log_path=log_path,
        )
        yield f"127.0.0.1:{port}"
    finally:
        process.stop()


def fetch_manifest(registry: str, name: str, tag: str) -> tuple[str, bytes]:
    request = urllib.request.Request(
        f"http://{registry}/v2/{name}/manifests/{tag}",
        headers={"Accept": MANIFEST_TYPES},
    )
    # No proxy: the registry is on loopback and must be asked directly.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return response.headers["Docker-Content-Digest"], response.read()


@pytest.mark.integration
def test_push_returns_the_digest_the_registry_serves(
    engine: EngineClient,
    tiny_image: str,
    new_tag: Callable[[str], str],
    tmp_path: Path,
    registry: str,
) -> None:
    dockerfile = f"FROM {tiny_image}\nRUN echo {uuid.uuid4().hex} > /stamp\n"
    folder = write_context(tmp_path, dockerfile)
    reference = new_tag(f"{registry}/farm-test/pushed")
    build(engine, folder, reference)

    result = engine.push(reference)

    tag = reference.rsplit(":", 1)[1]
    digest, body = fetch_manifest(registry, "farm-test/pushed", tag)
    assert result.digest.startswith("sha256:")
    assert result.digest == digest
    assert result.size_bytes == len(body)


@pytest.mark.integration
def test_push_to_a_closed_port_raises_push_failed_with_the_reason(
    engine: EngineClient, tiny_image: str, new_tag: Callable[[str], str], tmp_path: Path
) -> None:
    folder = write_context(tmp_path, f"FROM {tiny_image}\nRUN true\n")
    reference = new_tag(f"127.0.0.1:{free_port()}/farm-test/nowhere")
    build(engine, folder, reference)
    with pytest.raises(PushFailed) as caught:
        engine.push(reference)
    assert "connection refused" in caught.value.message


@pytest.mark.integration
def test_pushing_an_unknown_image_raises_push_failed(engine: EngineClient) -> None:
    with pytest.raises(PushFailed) as caught:
        engine.push(f"127.0.0.1:9/farm-test/unknown:{uuid.uuid4().hex[:8]}")
    assert "does not exist" in caught.value.message


@pytest.mark.integration
def test_removing_a_missing_image_is_fine(engine: EngineClient) -> None:
    engine.remove_image(f"farm-test/never-built:{uuid.uuid4().hex[:8]}")
