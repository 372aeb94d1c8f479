import pytest

from farm.buildspec import (
    GitSource,
    clean_build_args,
    clean_git_ref,
    clean_git_url,
    clean_relative_path,
    clean_tags,
    parse_spec,
    redact_url,
    reject_unknown_fields,
)
from farm.errors import InvalidRequest

SOURCE = GitSource(url="https://git.example.org/app.git", ref="main")


def test_spec_takes_defaults_for_missing_options():
    spec = parse_spec({}, SOURCE)
    assert (spec.context, spec.dockerfile, spec.target) == (".", "Dockerfile", None)
    assert spec.build_args == {} and spec.tags == ()


def test_dockerfile_path_is_joined_to_context():
    spec = parse_spec(
        {"context": "services/api/", "dockerfile": "Dockerfile.prod"}, SOURCE
    )
    assert spec.dockerfile_in_context == "services/api/Dockerfile.prod"


@pytest.mark.parametrize(
    "url",
    [
        "https://git.example.org/team/app.git",
        "git://git.example.org/app",
        "ssh://git@git.example.org/app.git",
        "git@git.example.org:team/app.git",
    ],
)
def test_ordinary_git_urls_are_accepted(url):
    assert clean_git_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ext::sh -c touch% /tmp/pwned",
        "fd::17",
        "--upload-pack=touch /tmp/x",
        "file:///etc",
        "/srv/git/app",
        "https://",
        "ftp://host/app.git",
        "",
        None,
        "https://host/app.git\nother",
        "https://[zz]/app.git",
        "https://[::1/app.git",
        "https://alice:tok@git.example.org:99999/app.git",
        "https://git.example.org:x/app.git",
    ],
)
def test_dangerous_or_malformed_git_urls_are_refused(url):
    with pytest.raises(InvalidRequest) as caught:
        clean_git_url(url)
    assert caught.value.field == "git_url"


def test_file_urls_only_when_allowed():
    assert clean_git_url("file:///srv/app.git", allow_file_urls=True)


@pytest.mark.parametrize("ref", ["main", "v1.2.3", "feature/x-1", "a" * 40, ""])
def test_ordinary_refs_are_accepted(ref):
    assert clean_git_ref(ref) == (ref or "HEAD")


@pytest.mark.parametrize(
    "ref", ["-h", "--upload-pack=x", "a..b", "main.lock", "with space", "x/", "main\n"]
)
def test_refs_that_could_be_options_or_invalid_are_refused(ref):
    with pytest.raises(InvalidRequest):
        clean_git_ref(ref)


def test_an_over_long_ref_is_refused_as_too_long():
    assert clean_git_ref("a" * 255) == "a" * 255
    with pytest.raises(InvalidRequest, match="5000 characters long; at most 255"):
        clean_git_ref("a" * 5000)


@pytest.mark.parametrize("path", ["../etc", "/abs", "a/../../b"])
def test_paths_may_not_leave_the_source(path):
    with pytest.raises(InvalidRequest):
        clean_relative_path(path, field="context")


def test_build_args_accept_mapping_or_assignments():
    assert clean_build_args(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    assert clean_build_args({"PORT": 8080}) == {"PORT": "8080"}


@pytest.mark.parametrize(
    "args", [["NOEQUALS"], {"1BAD": "x"}, {"A": ["list"]}, "A=1", {"A\n": "x"}]
)
def test_bad_build_args_are_refused(args):
    with pytest.raises(InvalidRequest):
        clean_build_args(args)


def test_tags_get_latest_and_are_deduplicated():
    assert clean_tags(["web", "web:latest", "team/api:1.0"]) == (
        "web:latest",
        "team/api:1.0",
    )
    assert clean_tags("a:1, b:2") == ("a:1", "b:2")


@pytest.mark.parametrize(
    "tag",
    [
        "Upper:1",
        "registry.example:5000/x:1",
        "a:b:c",
        "-lead",
        "x:" + "t" * 200,
        "web\n",
        "web:1\n",
    ],
)
def test_invalid_tags_are_refused(tag):
    with pytest.raises(InvalidRequest):
        clean_tags([tag])


@pytest.mark.parametrize("target", ["build\n", "-x", "a b"])
def test_targets_that_are_not_stage_names_are_refused(target):
    with pytest.raises(InvalidRequest) as caught:
        parse_spec({"target": target}, SOURCE)
    assert caught.value.field == "target"


def test_dockerfile_may_sit_outside_context_but_inside_source():
    spec = parse_spec(
        {"context": "svc", "dockerfile": "../docker/svc.Dockerfile"}, SOURCE
    )
    assert spec.dockerfile_in_context == "docker/svc.Dockerfile"
    with pytest.raises(InvalidRequest):
        parse_spec({"context": "svc", "dockerfile": "../../etc/passwd"}, SOURCE)


def test_unknown_fields_are_named():
    with pytest.raises(InvalidRequest, match="dockerfiel") as caught:
        reject_unknown_fields({"dockerfiel": "x", "tags": []}, {"dockerfile", "tags"})
    assert caught.value.field == "dockerfiel"


@pytest.mark.parametrize(
    "tag", ["farm-base/busybox:latest", "farm-cache/web:stages", "builds:6b1", "builds"]
)
def test_tags_over_the_farms_own_repositories_are_refused(tag):
    with pytest.raises(InvalidRequest, match="keeps for itself"):
        clean_tags([tag])


def test_names_that_only_resemble_the_farms_own_are_fine():
    assert clean_tags(["farm-basement/x", "team/builds:1", "builds2"]) == (
        "farm-basement/x:latest",
        "team/builds:1",
        "builds2:latest",
    )


@pytest.mark.parametrize("tag", ["evil.com/x:1", "localhost/x", "host.io/team/x"])
def test_tags_naming_another_registry_are_refused(tag):
    with pytest.raises(InvalidRequest, match="registry host"):
        clean_tags([tag])


def test_credentials_are_redacted_from_urls():
    assert redact_url("https://alice:tok@git.example.org/a.git") == (
        "https://***@git.example.org/a.git"
    )
    assert (
        redact_url("https://git.example.org/a.git") == "https://git.example.org/a.git"
    )


def test_very_long_url_is_refused_for_its_length():
    with pytest.raises(InvalidRequest, match="longer than"):
        clean_git_url("https://git.example.org/" + "a" * 5000)


@pytest.mark.parametrize("name", ["BUILDKIT_SYNTAX", "buildkit_inline_cache"])
def test_build_args_that_steer_the_engine_are_refused(name):
    with pytest.raises(InvalidRequest, match="steers the engine"):
        parse_spec({"build_args": {name: "x"}}, GitSource("https://h.example/a", "m"))
