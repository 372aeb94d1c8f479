"""Requests the API refuses or answers by their shape, on the real app over a SQLite
ledger, with stand-ins for the Redis queue and locks: nothing here needs a node."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient

from farm.buildspec import GitSource, parse_spec
from farm.config import Settings
from farm.errors import NotFound
from farm.ledger import BuildLedger
from farm.models import BuildState
from farm.tokens import TokenService
from tests.farm.test_builds import NoLocks, SentQueue
from tests.web.test_page_forms import csrf_of, sign_in
from web.app import MAX_URL_BYTES, create_app


@dataclass
class Api:
    client: FlaskClient
    ledger: BuildLedger
    queue: SentQueue
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kwargs):
        return self.client.get(path, headers=self.headers, **kwargs)

    def post(self, path: str, **kwargs):
        return self.client.post(path, headers=self.headers, **kwargs)

    def recorded(self) -> int:
        return sum(self.ledger.count_by_state().values())

    def archive_kept(self, content: bytes) -> bool:
        try:
            self.ledger.load_archive(hashlib.sha256(content).hexdigest())
        except NotFound:
            return False
        return True


@pytest.fixture
def api(tmp_path) -> Api:
    url = f"sqlite:///{tmp_path}/farm.db"
    ledger = BuildLedger.from_url(url)
    ledger.create_tables()
    _, token = TokenService(ledger).create("someone", ["submit"])
    # Nothing listens on port 1: a call that reached Redis would fail loudly.
    app = create_app(
        Settings(database_url=url, secret_key="x", redis_url="redis://127.0.0.1:1/0")
    )
    service = app.extensions["farm"]
    queue = SentQueue()
    service.queue, service.live = queue, NoLocks()
    return Api(app.test_client(), service.ledger, queue, token)


def source_archive(dockerfile: str = "FROM scratch\n") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile.encode())
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    return buffer.getvalue()


def ended_build(ledger: BuildLedger, log: str) -> str:
    spec = parse_spec({}, GitSource(url="https://git.example.org/a.git", ref="main"))
    build = ledger.create(spec, queue="builds")
    ledger.claim(build.id, worker="w")
    ledger.finish(build.id, BuildState.SUCCEEDED, log_text=log)
    return build.id


@pytest.mark.parametrize("asked", [None, "", "json"])
def test_the_log_is_json_by_default_and_when_asked(api, asked):
    build_id = ended_build(api.ledger, "one\ntwo\n")
    query = {} if asked is None else {"format": asked}
    answer = api.get(f"/api/v1/builds/{build_id}/log", query_string=query)
    assert answer.status_code == 200
    assert answer.json == {
        "lines": ["one", "two"],
        "start": 0,
        "next": 2,
        "finished": True,
    }


def test_the_log_is_plain_text_when_asked(api):
    build_id = ended_build(api.ledger, "one\ntwo\n")
    answer = api.get(f"/api/v1/builds/{build_id}/log?format=text&start=1")
    assert answer.status_code == 200
    assert answer.mimetype == "text/plain"
    assert answer.text == "two\n"
    assert answer.headers["X-Farm-Next-Line"] == "2"


@pytest.mark.parametrize("asked", ["xml", "TEXT", "html", "x" * 500])
@pytest.mark.parametrize("follow", [False, True])
def test_an_unknown_log_format_is_refused(api, asked, follow):
    build_id = ended_build(api.ledger, "one\n")
    query = {"format": asked, **({"follow": "1"} if follow else {})}
    answer = api.get(f"/api/v1/builds/{build_id}/log", query_string=query)
    assert answer.status_code == 400
    error = answer.json["error"]
    assert error["code"] == "invalid_request"
    assert error["details"] == {"field": "format"}
    assert "json or text" in error["message"]
    assert len(error["message"]) < 200


def test_an_overlong_group_name_is_refused_not_cut(api):
    # A loopback address is refused without any lookup, but only after the name
    # would have been checked: nothing here leaves the machine.
    answer = api.post(
        "/api/v1/groups",
        json={
            "git_url": "https://127.0.0.1/a.git",
            "name": "n" * 129,
            "images": [{"name": "web"}],
        },
    )
    assert answer.status_code == 400
    error = answer.json["error"]
    assert error["code"] == "invalid_request"
    assert error["details"] == {"field": "name"}
    assert "longer than 128 characters" in error["message"]
    assert api.recorded() == 0 and api.queue.sent == []


def test_an_overlong_group_name_in_a_form_is_refused_and_nothing_kept(api):
    content = source_archive()
    group = {"name": "ü" * 129, "images": [{"name": "web"}]}
    answer = api.post(
        "/api/v1/groups",
        data={
            "archive": (io.BytesIO(content), "src.tar.gz"),
            "group": json.dumps(group),
        },
        content_type="multipart/form-data",
    )
    assert answer.status_code == 400
    error = answer.json["error"]
    assert error["details"] == {"field": "name"}
    assert "longer than 128 characters" in error["message"]
    assert api.recorded() == 0 and api.queue.sent == []
    assert not api.archive_kept(content)


def test_a_group_name_at_the_limit_is_kept_whole(api):
    group = {"name": "ü" * 128, "images": [{"name": "web"}]}
    answer = api.post(
        "/api/v1/groups",
        data={
            "archive": (io.BytesIO(source_archive()), "src.tar.gz"),
            "group": json.dumps(group),
        },
        content_type="multipart/form-data",
    )
    assert answer.status_code == 202, answer.json
    assert answer.json["name"] == "ü" * 128
    assert len(api.queue.sent) == 1


@pytest.mark.parametrize("path", ["/api/v1/builds", "/api/v1/groups"])
def test_two_archives_in_one_upload_are_refused_and_nothing_kept(api, path):
    first, second = source_archive(), source_archive("FROM scratch\nLABEL a=b\n")
    form = {
        "archive": [
            (io.BytesIO(first), "one.tar.gz"),
            (io.BytesIO(second), "two.tar.gz"),
        ]
    }
    if path.endswith("groups"):
        form["group"] = json.dumps({"images": [{"name": "web"}]})
    answer = api.post(path, data=form, content_type="multipart/form-data")
    assert answer.status_code == 400
    error = answer.json["error"]
    assert error["code"] == "invalid_request"
    assert error["details"] == {"field": "archive"}
    assert error["message"] == "Send one 'archive' file, not 2."
    assert api.recorded() == 0 and api.queue.sent == []
    assert not api.archive_kept(first) and not api.archive_kept(second)


def test_one_archive_in_an_upload_is_built(api):
    content = source_archive()
    answer = api.post(
        "/api/v1/builds",
        data={"archive": (io.BytesIO(content), "one.tar.gz")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 202, answer.json
    assert api.queue.sent == [answer.json["id"]]
    assert api.archive_kept(content)


def test_two_archives_in_the_build_form_are_refused_beside_the_field(api):
    sign_in(api.client, api.token, "/")
    first, second = source_archive(), source_archive("FROM scratch\nLABEL a=b\n")
    answer = api.client.post(
        "/builds/new",
        data={
            "csrf_token": csrf_of(api.client.get("/builds/new")),
            "source": "archive",
            "archive": [
                (io.BytesIO(first), "one.tar.gz"),
                (io.BytesIO(second), "two.tar.gz"),
            ],
            "context": ".",
            "dockerfile": "Dockerfile",
            "queue": "builds",
            "priority": "normal",
        },
        content_type="multipart/form-data",
    )
    assert answer.status_code == 400
    assert "Send one &#39;archive&#39; file, not 2." in answer.text
    assert api.recorded() == 0 and api.queue.sent == []
    assert not api.archive_kept(first) and not api.archive_kept(second)


def test_a_field_given_twice_in_the_build_page_form_is_refused_beside_it(api):
    sign_in(api.client, api.token, "/")
    answer = api.client.post(
        "/builds/new",
        data={
            "csrf_token": csrf_of(api.client.get("/builds/new")),
            "source": "git",
            "git_url": ["https://127.0.0.1/a.git", "https://127.0.0.1/b.git"],
            "context": ".",
            "dockerfile": "Dockerfile",
            "queue": "builds",
            "priority": "normal",
        },
    )
    assert answer.status_code == 400
    assert "Send &#39;git_url&#39; once, not 2 times." in answer.text
    assert api.recorded() == 0 and api.queue.sent == []


def url_of_length(path: str, length: int) -> str:
    prefix = f"{path}?project="
    return prefix + "x" * (length - len(prefix))


@pytest.mark.parametrize("token", [True, False])
def test_a_url_over_the_limit_is_refused_in_the_api_shape(api, token):
    url = url_of_length("/api/v1/builds", MAX_URL_BYTES + 1)
    headers = api.headers if token else {}
    answer = api.client.get(url, headers=headers)
    assert answer.status_code == 414
    error = answer.json["error"]
    assert error["code"] == "uri_too_long"
    assert error["details"] == {"limit": MAX_URL_BYTES}
    assert f"at most {MAX_URL_BYTES} bytes" in error["message"]
    # Refused before anything else is asked: the same for a route that is none.
    answer = api.client.post(url_of_length("/api/v1/nowhere", 20_000))
    assert (answer.status_code, answer.json["error"]["code"]) == (414, "uri_too_long")


def test_a_url_at_the_limit_is_read(api):
    answer = api.get(url_of_length("/api/v1/builds", MAX_URL_BYTES))
    assert answer.status_code == 200, answer.json


def test_the_url_is_measured_as_sent_not_as_decoded(api):
    quoted = "/api/v1/builds?project=" + "%41" * (MAX_URL_BYTES // 3)
    answer = api.get(quoted)
    assert answer.status_code == 414
    assert answer.json["error"]["code"] == "uri_too_long"


def test_a_page_url_over_the_limit_gets_a_readable_page(api):
    answer = api.client.get(url_of_length("/", MAX_URL_BYTES + 1))
    assert answer.status_code == 414
    assert answer.mimetype == "text/html"
    assert f"this farm reads URLs (path and query) of at most {MAX_URL_BYTES}" in (
        answer.text
    )


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/builds", "dockerfile"),
        ("/api/v1/builds", "context"),
        ("/api/v1/groups", "group"),
    ],
)
def test_a_one_value_field_given_twice_is_refused(api, path, field):
    content = source_archive()
    group = json.dumps({"images": [{"name": "web"}]})
    values = [group, group] if field == "group" else ["Dockerfile", "/etc"]
    form = {"archive": (io.BytesIO(content), "src.tar.gz"), field: values}
    if path.endswith("groups") and field != "group":
        form["group"] = group
    answer = api.post(path, data=form, content_type="multipart/form-data")
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["details"] == {"field": field}
    assert f"Send '{field}' once, not 2 times." == answer.json["error"]["message"]
    assert api.recorded() == 0 and api.queue.sent == []
    assert not api.archive_kept(content)


def test_repeated_build_args_and_tags_are_still_read(api):
    answer = api.post(
        "/api/v1/builds",
        data={
            "archive": (io.BytesIO(source_archive()), "src.tar.gz"),
            "build_arg": ["A=1", "B=2"],
            "tag": ["shop/web:one", "shop/web:two"],
        },
        content_type="multipart/form-data",
    )
    assert answer.status_code == 202, answer.json
    assert answer.json["build_args"] == {"A": "1", "B": "2"}
