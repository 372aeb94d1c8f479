"""Fuzzing the build request validators with JSON bodies.

Bodies are random JSON trees under the real field names, with values that are
nearly right (a valid tag with a newline after it, a path that climbs out, a port
that is not a number) beside junk. Each validator either returns a value that
meets its documented constraints or refuses with InvalidRequest naming the field.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any
from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st

from farm.buildspec import (
    BUILD_OPTION_FIELDS,
    MAX_BUILD_ARGS,
    MAX_PATH_CHARS,
    MAX_TAGS,
    MAX_VALUE_CHARS,
    ArchiveSource,
    BuildSpec,
    GitSource,
    clean_priority,
    clean_queue,
    clean_variables,
    input_key,
    parse_git_source,
    parse_spec,
    project_name,
    redact_url,
    reject_unknown_fields,
)
from farm.errors import InvalidRequest

# The constraints as documented (Docker's reference grammar, git's ref rules),
# written out here so that the tests do not borrow the code's own patterns.
COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = rf"{COMPONENT}(?:/{COMPONENT})*"
TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
STAGE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
ARG_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
REF = r"[A-Za-z0-9_][A-Za-z0-9_./+-]{0,254}"

SOURCE = GitSource(url="https://git.example.org/app.git", ref="main")
ARCHIVE = ArchiveSource(sha256="0" * 64, size_bytes=10)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
# Characters that often slip past a pattern: line ends, NUL, spaces, separators.
slips = st.sampled_from(["", "", "\n", "\r", " ", "\t", "\x00", "/", ":", "@", ".."])


def nearly(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid text, sometimes with a slip before or after it."""
    return st.builds(lambda head, text, tail: head + text + tail, slips, valid, slips)


path_parts = st.sampled_from(
    ["a", "sub", "Dockerfile", ".", "..", "", " ", "\x00", "\n", "é", "a" * 300]
)
paths = st.one_of(
    st.builds(
        lambda lead, parts: lead + "/".join(parts),
        st.sampled_from(["", "", "/", "./", "../", " /"]),
        st.lists(path_parts, min_size=1, max_size=5),
    ),
    st.just("a" * MAX_PATH_CHARS),
    st.just("a" * (MAX_PATH_CHARS + 1)),
    json_values,
)
repositories = st.from_regex(REPOSITORY, fullmatch=True).filter(lambda r: len(r) < 60)
tags = st.one_of(
    nearly(
        st.builds(
            lambda host, repo, version: host + repo + version,
            st.sampled_from(["", "", "", "localhost/", "reg.io/", "reg:5000/", "a_b/"]),
            repositories,
            st.one_of(
                st.just(""), st.from_regex(TAG, fullmatch=True).map(":{}".format)
            ),
        )
    ),
    st.sampled_from(["Upper:1", "a:b:c", "-lead", "x:" + "t" * 200, "a" * 256]),
    json_values,
)
tag_lists = st.one_of(
    st.lists(tags, max_size=MAX_TAGS + 2),
    st.lists(tags, max_size=4).map(lambda items: ", ".join(map(str, items))),
    json_values,
)
arg_names = st.one_of(
    nearly(st.from_regex(ARG_NAME, fullmatch=True)),
    st.sampled_from(["1BAD", "", "A-B", "é", "A" * 129]),
)
arg_values = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.just("v" * (MAX_VALUE_CHARS + 1)),
    json_values,
)
variables = st.one_of(
    st.dictionaries(arg_names, arg_values, max_size=5),
    st.lists(
        st.one_of(
            st.builds("{}={}".format, arg_names, st.text(max_size=10)), json_values
        ),
        max_size=5,
    ),
    st.dictionaries(
        st.from_regex(ARG_NAME, fullmatch=True),
        st.just("v"),
        min_size=MAX_BUILD_ARGS - 1,
        max_size=MAX_BUILD_ARGS + 1,
    ),
    json_values,
)
targets = st.one_of(nearly(st.from_regex(STAGE, fullmatch=True)), json_values)
option_values: dict[str, st.SearchStrategy[Any]] = {
    "context": paths,
    "dockerfile": paths,
    "target": targets,
    "build_args": variables,
    "tags": tag_lists,
    "queue": st.one_of(st.sampled_from(["builds", "gpu", ""]), json_values),
    "priority": st.one_of(st.sampled_from(["normal", "urgent", "low"]), json_values),
}
bodies = st.fixed_dictionaries(
    {},
    optional={
        **option_values,
        "smoke": json_values,
        "": json_values,
        "dockerfiel": json_values,
    },
)


def assert_inside_source(path: str) -> None:
    """A normalised relative path that stays inside the source tree."""
    assert isinstance(path, str) and len(path) <= MAX_PATH_CHARS, path
    assert "\x00" not in path and posixpath.normpath(path) == path, path
    assert not path.startswith("/") and ".." not in path.split("/"), path


def assert_valid_spec(spec: BuildSpec) -> None:
    assert_inside_source(spec.context)
    assert_inside_source(spec.dockerfile_in_context)
    assert spec.target is None or re.fullmatch(STAGE, spec.target), spec.target
    assert len(spec.build_args) <= MAX_BUILD_ARGS
    for name, value in spec.build_args.items():
        assert re.fullmatch(ARG_NAME, name), name
        assert isinstance(value, str) and len(value) <= MAX_VALUE_CHARS
    assert len(spec.tags) <= MAX_TAGS and len(set(spec.tags)) == len(spec.tags)
    for tag in spec.tags:
        repository, _, version = tag.partition(":")
        assert re.fullmatch(REPOSITORY, repository), tag
        assert re.fullmatch(TAG, version), tag
        first = repository.split("/", 1)[0]
        assert "/" not in repository or not ("." in first or first == "localhost")
    assert re.fullmatch(REPOSITORY, project_name(None, spec.tags))
    assert re.fullmatch("[0-9a-f]{64}", input_key(spec, "0" * 40) or "")


@given(body=bodies, source=st.sampled_from([SOURCE, ARCHIVE]))
def test_build_options_give_a_valid_spec_or_name_the_bad_field(
    body: dict[str, Any], source: GitSource | ArchiveSource
) -> None:
    try:
        reject_unknown_fields(body, BUILD_OPTION_FIELDS)
    except InvalidRequest as exc:
        assert exc.field in set(body) - BUILD_OPTION_FIELDS
        assert exc.field == min(set(body) - BUILD_OPTION_FIELDS)
    try:
        spec = parse_spec(body, source)
    except InvalidRequest as exc:
        assert exc.field in BUILD_OPTION_FIELDS, exc.field
        # The default Dockerfile is checked joined to the context that was sent.
        assert exc.field in body or (exc.field == "dockerfile" and "context" in body)
        return
    assert spec.source is source
    assert_valid_spec(spec)


@given(
    queue=option_values["queue"],
    allowed=st.lists(st.sampled_from(["builds", "gpu", "idle"]), min_size=1),
    priority=option_values["priority"],
)
def test_queue_and_priority_are_served_values_or_refused(
    queue: Any, allowed: list[str], priority: Any
) -> None:
    try:
        assert clean_queue(queue, allowed) in allowed
    except InvalidRequest as exc:
        assert exc.field == "queue"
    try:
        assert clean_priority(priority) in ("normal", "urgent")
    except InvalidRequest as exc:
        assert exc.field == "priority"


@given(value=variables, field=st.sampled_from(["build_args", "smoke"]))
def test_variables_are_checked_names_and_strings_or_refused(
    value: Any, field: str
) -> None:
    try:
        cleaned = clean_variables(value, field=field, noun="Variable")
    except InvalidRequest as exc:
        assert exc.field == field
        return
    assert len(cleaned) <= MAX_BUILD_ARGS
    for name, text in cleaned.items():
        assert re.fullmatch(ARG_NAME, name), name
        assert isinstance(text, str) and len(text) <= MAX_VALUE_CHARS


git_urls = st.one_of(
    nearly(
        st.builds(
            "{}://{}{}{}{}".format,
            st.sampled_from(["https", "http", "git", "ssh", "HTTPS", "file", "ext"]),
            st.sampled_from(["", "", "u@", "u:p@", "u:@", ":p@", "@", "u:p:q@"]),
            st.sampled_from(
                ["git.example.org", "127.0.0.1", "[::1]", "[zz]", "[::1", "::1]", ""]
                + ["h_o", "é.org", "xn--d", "a" * 300]
            ),
            st.sampled_from(["", "", ":22", ":0", ":65536", ":99999", ":x", ":"]),
            st.sampled_from(["/app.git", "", "/team/app", "/a b", "/?q#f", "/..."]),
        )
    ),
    nearly(
        st.builds(
            "{}@{}:{}".format,
            st.sampled_from(["git", "u", "-u", ""]),
            st.sampled_from(["git.example.org", "h", "[::1]", ""]),
            st.sampled_from(["team/app.git", ":x", "", "/abs", "a:b"]),
        )
    ),
    st.sampled_from(["ext::sh -c x", "fd::17", "--upload-pack=x", "/srv/app"]),
    json_values,
)
git_refs = st.one_of(
    nearly(st.from_regex(REF, fullmatch=True)),
    st.sampled_from(["-h", "a..b", "x.lock", "x/", "a//b", "HEAD", "@{1}"]),
    json_values,
)


@given(url=git_urls, ref=git_refs, allow_file_urls=st.booleans())
def test_git_sources_are_safe_to_fetch_and_show_or_refused(
    url: Any, ref: Any, allow_file_urls: bool
) -> None:
    try:
        source = parse_git_source(url, ref, allow_file_urls=allow_file_urls)
    except InvalidRequest as exc:
        assert exc.field in ("git_url", "git_ref")
        return
    assert not any(char.isspace() or ord(char) < 32 for char in source.url)
    assert not source.url.startswith("-")
    assert len(source.url) <= MAX_PATH_CHARS
    # The URL is shown in logs and pages without its credentials.
    shown = redact_url(source.url)
    assert "://" not in shown or urlsplit(shown).password is None, shown
    assert re.fullmatch(REPOSITORY, project_name(source.url, ()))
    assert source.ref == "HEAD" or re.fullmatch(REF, source.ref), source.ref
    assert ".." not in source.ref and "//" not in source.ref
    assert not source.ref.endswith((".lock", "/", "."))
