"""The farm's own image (the Dockerfile at the top of the project), built by the
farm itself from the offline Debian base, then run: its CLI answers, as a user
without privileges."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from farm.client import pack_folder

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def run_in(api: docker.APIClient, image: str, **options) -> tuple[int, str]:
    """Run a container of ``image`` to its end; its exit code and output."""
    container = api.create_container(image, **options)
    try:
        api.start(container)
        code = api.wait(container, timeout=120)["StatusCode"]
        return code, api.logs(container).decode(errors="replace")
    finally:
        api.remove_container(container, force=True)


def test_the_farm_builds_its_own_image_and_it_runs_unprivileged(
    farm, base_images, engine_url
):
    archive = pack_folder(ROOT)
    answer = farm.http.post(
        farm.api("/builds"),
        data={
            "tags": "farm/self:test",
            "build_arg": "BASE_IMAGE=farm-base/debian:bookworm",
        },
        files={"archive": ("farm.tar.gz", archive)},
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    build = farm.wait_for(answer.json()["id"], timeout_seconds=900)
    if build["state"] != "succeeded":
        log = farm.http.get(farm.api(f"/builds/{build['id']}/log"), timeout=10)
        pytest.fail("\n".join(log.json()["lines"][-40:]))
    assert {"builder", "runtime"} <= {s["stage"] for s in build["steps"] if s["stage"]}

    reference = f"{farm.registry}/farm/self:test"
    api = docker.APIClient(base_url=engine_url, timeout=600)
    try:
        api.pull(reference)
        code, said = run_in(api, reference, command=["--help"])
        assert code == 0, said
        assert "worker" in said and "web" in said
        code, said = run_in(api, reference, entrypoint=["id", "-u"])
        assert (code, said.strip()) == (0, "10001")
        # The runtime stage carries no compiler or build tool of the builder's.
        code, _ = run_in(api, reference, entrypoint=["sh", "-c", "command -v gcc"])
        assert code != 0
        api.remove_image(reference, force=True)
    finally:
        api.close()
