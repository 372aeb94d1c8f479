"""A repository whose submodules point elsewhere, built from a real git server:
the farm builds what the repository itself holds and never follows a submodule."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.test_end_to_end import git_server  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "protocol.file.allow=always", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def test_submodules_pointing_elsewhere_are_not_fetched(
    farm,
    git_server,  # noqa: F811
    tiny_image,
    tmp_path,
):
    base_url, root = git_server
    canary = Path(f"/tmp/farm-submodule-{uuid.uuid4().hex}")
    work = tmp_path / "repo"
    work.mkdir()
    (work / "Dockerfile").write_text(
        f"FROM {tiny_image}\nCOPY . /src\n"
        "RUN echo evil $(ls -A /src/evil | wc -l) local $(ls -A /src/local | wc -l)\n"
    )
    (work / ".gitmodules").write_text(
        '[submodule "evil"]\n\tpath = evil\n'
        f"\turl = ext::sh -c touch% {canary}\n"
        '[submodule "local"]\n\tpath = local\n\turl = file:///etc\n'
    )
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "Dockerfile", ".gitmodules", cwd=work)
    for path in ("evil", "local"):  # gitlinks, as a real submodule leaves them
        git(
            "update-index",
            "--add",
            "--cacheinfo",
            f"160000,{'1' * 40},{path}",
            cwd=work,
        )
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "s", cwd=work)
    name = f"submodules-{uuid.uuid4().hex[:8]}.git"
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work), str(root / name)], check=True
    )

    answer = farm.http.post(
        farm.api("/builds"), json={"git_url": f"{base_url}/{name}"}, timeout=30
    )
    assert answer.status_code == 202, answer.text
    build = farm.wait_for(answer.json()["id"])
    lines = farm.http.get(farm.api(f"/builds/{build['id']}/log"), timeout=10).json()
    text = "\n".join(lines["lines"])
    assert build["state"] == "succeeded", text
    assert "evil 0 local 0" in text  # both submodule folders are empty
    assert not canary.exists()
