"""Running git: what a failed command is reported to have said, and redirects
that are not followed."""

import functools
import http.server
import subprocess
import threading
from pathlib import Path

import pytest

from farm.errors import SourceError
from farm.git import GitCheckout, git_reason

NOT_A_REPOSITORY = """\
fatal: '/srv/none.git' does not appear to be a git repository
fatal: Could not read from remote repository.

Please make sure you have the correct access rights
and the repository exists.
"""


def test_the_fatal_lines_are_kept_not_the_advice_after_them():
    assert git_reason(NOT_A_REPOSITORY) == (
        "fatal: '/srv/none.git' does not appear to be a git repository "
        "fatal: Could not read from remote repository."
    )


def test_without_fatal_lines_the_last_ones_are_kept_and_credentials_masked():
    said = "Cloning...\nremote: denied for https://bob:pw@git.example/x\nhint: try\n"
    assert git_reason(said) == (
        "Cloning... remote: denied for https://***@git.example/x hint: try"
    )


def test_a_flood_of_output_is_cut_short():
    assert len(git_reason("fatal: " + "x" * 5000)) == 600


class Redirect(http.server.BaseHTTPRequestHandler):
    """Sends every request on to the same path on ``target``."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 (the handler's name is http.server's)
        self.send_response(302)
        self.send_header("Location", f"{self.target}{self.path}")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def serve(handler: type, directory: Path | None = None) -> http.server.HTTPServer:
    if directory is not None:
        handler = functools.partial(handler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.integration
def test_git_follows_no_redirect_past_the_host_that_was_checked(tmp_path):
    """A checked host that redirects elsewhere leads nowhere: the repository it
    points to answers when asked directly, not through the redirect."""
    work, bare = tmp_path / "work", tmp_path / "served" / "repo.git"
    work.mkdir()
    (work / "f").write_text("x")
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "f"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"],
    ):
        subprocess.run(["git", *args], cwd=work, check=True, capture_output=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    subprocess.run(["git", "update-server-info"], cwd=bare, check=True)
    files = serve(QuietFiles, tmp_path / "served")
    Redirect.target = f"http://127.0.0.1:{files.server_port}"
    redirect = serve(Redirect)
    git = GitCheckout(tmp_path, timeout_seconds=30)
    try:
        direct = f"http://127.0.0.1:{files.server_port}/repo.git"
        assert "refs/heads/main" in git.run("ls-remote", "--", direct)
        with pytest.raises(SourceError, match="error: 302"):
            git.run(
                "ls-remote", "--", f"http://127.0.0.1:{redirect.server_port}/repo.git"
            )
    finally:
        files.shutdown()
        redirect.shutdown()


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass
