"""Unit tests for the Dockerfile reader and the mapping of BuildKit steps to lines."""

from __future__ import annotations

import pytest

from farm.dockerfile import check_before_build, parse_dockerfile, parse_vertex_name
from farm.errors import InvalidRequest

MULTI_STAGE = """\
# syntax=docker/dockerfile:1
# A comment that ends the directives.
ARG GO_VERSION=1.22
ARG BASE

FROM golang:${GO_VERSION} AS Build
WORKDIR /src
COPY go.mod main.go ./
ENV CGO_ENABLED=0
RUN go build \\
    -o /out/app \\
    # a comment inside a continuation is dropped
    .

FROM --platform=linux/amd64 debian:12
COPY --from=build /out/app /usr/local/bin/app
RUN <<EOF
set -e
echo installed
EOF
CMD ["app"]
"""


def test_stages_have_index_name_base_and_from_line() -> None:
    dockerfile = parse_dockerfile(MULTI_STAGE)
    build, final = dockerfile.stages
    assert (build.index, build.name, build.base_image, build.line) == (
        0,
        "build",
        "golang:${GO_VERSION}",
        6,
    )
    assert (final.index, final.name, final.base_image, final.line) == (
        1,
        None,
        "debian:12",
        15,
    )
    assert final.platform == "linux/amd64"
    assert final.label == "stage-1"


def test_instructions_keep_keyword_args_and_start_line() -> None:
    build = parse_dockerfile(MULTI_STAGE).stages[0]
    assert [(i.keyword, i.line) for i in build.instructions] == [
        ("WORKDIR", 7),
        ("COPY", 8),
        ("ENV", 9),
        ("RUN", 10),
    ]
    run = build.instructions[-1]
    assert run.args.split() == ["go", "build", "-o", "/out/app", "."]
    assert run.end_line == 13


def test_heredoc_lines_are_not_read_as_instructions() -> None:
    final = parse_dockerfile(MULTI_STAGE).stages[1]
    assert [i.keyword for i in final.instructions] == ["COPY", "RUN", "CMD"]
    run = final.instructions[1]
    assert run.heredocs == ("set -e\necho installed",)
    assert final.instructions[2].line == 21


def test_heredoc_with_dash_strips_tabs_and_quoted_word_works() -> None:
    text = "FROM scratch\nRUN <<-'END' cat\n\tline\n\tEND\nCMD x\n"
    stage = parse_dockerfile(text).stages[0]
    assert stage.instructions[0].heredocs == ("line",)
    assert stage.instructions[1].line == 5


def test_args_before_from_are_global_and_expand_base_image() -> None:
    dockerfile = parse_dockerfile(MULTI_STAGE)
    assert [a.args for a in dockerfile.global_args] == ["GO_VERSION=1.22", "BASE"]
    build = dockerfile.stages[0]
    assert dockerfile.resolved_base(build) == "golang:1.22"
    assert dockerfile.resolved_base(build, {"GO_VERSION": "1.23"}) == "golang:1.23"


def test_directives_are_read_only_at_the_top() -> None:
    dockerfile = parse_dockerfile(MULTI_STAGE)
    assert dockerfile.directives == {"syntax": "docker/dockerfile:1"}


def test_stage_names_are_case_insensitive() -> None:
    dockerfile = parse_dockerfile(MULTI_STAGE)
    assert dockerfile.stage_names == ["build"]
    assert dockerfile.has_stage("BUILD")
    assert dockerfile.has_stage("stage-1")
    assert not dockerfile.has_stage("test")


def test_a_stage_name_wins_over_the_label_of_an_unnamed_stage() -> None:
    dockerfile = parse_dockerfile("FROM a\nFROM b AS stage-0\nFROM stage-0\n")
    _, named, last = dockerfile.stages
    assert dockerfile.stage("stage-0") is named
    assert dockerfile.stage("STAGE-2") is last


def test_from_as_is_case_insensitive() -> None:
    dockerfile = parse_dockerfile("from alpine as Tools\nrun true\n")
    assert dockerfile.stage_names == ["tools"]
    assert dockerfile.stages[0].instructions[0].keyword == "RUN"


def test_escape_directive_switches_the_continuation_character() -> None:
    text = "# escape=`\nFROM windows\nRUN dir `\n    C:\\\nCOPY a b\n"
    dockerfile = parse_dockerfile(text)
    run, copy = dockerfile.stages[0].instructions
    assert run.args.split() == ["dir", "C:\\"]
    assert copy.line == 5


def test_crlf_line_endings_and_byte_order_mark_are_accepted() -> None:
    text = "\ufeffFROM scratch\r\nCOPY a \\\r\n  b\r\nCMD x\r\n"
    stage = parse_dockerfile(text.encode()).stages[0]
    assert [(i.keyword, i.line) for i in stage.instructions] == [
        ("COPY", 2),
        ("CMD", 4),
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("", None),
        ("# only a comment\n", None),
        ("RUN true\nFROM scratch\n", 1),
        ("FROM scratch\nFOO bar\n", 2),
        ("FROM scratch AS\n", 1),
        ("FROM scratch AS a\nFROM scratch AS A\n", 2),
        ("FROM scratch AS 1st\n", 1),
        ("FROM scratch\nRUN <<EOF\necho\n", 2),
        ("# escape=x\nFROM scratch\n", 1),
        ("FROM scratch\x00\n", None),
        ("FROM scratch\n\\\n\n", 2),
        ("# escape=`\nFROM scratch\n`", 3),
    ],
)
def test_unreadable_text_raises_invalid_request(text: str, line: int | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_dockerfile(text)
    assert caught.value.field == "dockerfile"
    assert caught.value.details.get("line") == line


def test_non_utf8_bytes_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        parse_dockerfile(b"FROM scratch\nLABEL a=\xff\n")


def test_vertex_name_is_split_into_stage_position_and_instruction() -> None:
    ref = parse_vertex_name("[build 2/4] RUN go build")
    assert ref is not None
    assert (ref.stage, ref.position, ref.total) == ("build", 2, 4)
    assert (ref.instruction, ref.keyword) == ("RUN go build", "RUN")
    single = parse_vertex_name("[1/2] FROM docker.io/library/alpine")
    assert single is not None and single.stage is None
    platform = parse_vertex_name("[linux/arm64 build 3/3] COPY . .")
    assert platform is not None and platform.stage == "build"


def test_internal_vertex_names_are_not_steps() -> None:
    assert parse_vertex_name("[internal] load build definition from Dockerfile") is None
    assert parse_vertex_name("exporting to image") is None
    assert parse_vertex_name("copy /context /") is None


def test_locate_step_maps_named_and_unnamed_stages_to_lines() -> None:
    dockerfile = parse_dockerfile(MULTI_STAGE)
    assert dockerfile.locate_step("[build 1/4] FROM docker.io/library/golang:1.22") == (
        "build",
        6,
    )
    assert dockerfile.locate_step("[build 3/4] COPY go.mod main.go ./") == ("build", 8)
    # BuildKit joins continuation lines; the step still maps to its first line.
    assert dockerfile.locate_step("[build 4/4] RUN go build     -o /out/app     .") == (
        "build",
        10,
    )
    copy = "[stage-1 2/3] COPY --from=build /out/app /usr/local/bin/app"
    assert dockerfile.locate_step(copy) == ("stage-1", 16)
    assert dockerfile.locate_step("[stage-1 3/3] RUN <<EOF") == ("stage-1", 17)


def test_locate_step_uses_position_when_text_differs() -> None:
    dockerfile = parse_dockerfile(MULTI_STAGE)
    # Step text with expanded variables does not match; the number still does.
    assert dockerfile.locate_step("[build 4/4] RUN go build -o /out/app") == (
        "build",
        10,
    )


def test_locate_step_tells_repeated_instructions_apart_by_position() -> None:
    dockerfile = parse_dockerfile("FROM a\nRUN make\nRUN make\n")
    assert dockerfile.locate_step("[2/3] RUN make") == ("stage-0", 2)
    assert dockerfile.locate_step("[3/3] RUN make") == ("stage-0", 3)


def test_locate_step_returns_none_for_unknown_stages_and_internal_vertexes() -> None:
    dockerfile = parse_dockerfile(MULTI_STAGE)
    assert dockerfile.locate_step("[internal] load metadata for golang:1.22") is None
    assert dockerfile.locate_step("[test 2/2] RUN go test") is None
    assert dockerfile.locate_step("[2/2] RUN true") is None  # two stages: ambiguous


def test_single_named_stage_is_found_without_a_stage_in_the_name() -> None:
    dockerfile = parse_dockerfile("FROM busybox AS build\nWORKDIR /x\nRUN false\n")
    assert dockerfile.locate_step("[3/3] RUN false") == ("build", 3)


def test_first_step_of_a_stage_built_on_another_stage_maps_to_its_own_line():
    dockerfile = parse_dockerfile(
        "FROM base AS build\nRUN echo built > /out\n\nFROM build AS test\n"
        "RUN echo testing && exit 1\n"
    )
    assert dockerfile.locate_step("[test 1/1] RUN echo testing && exit 1") == (
        "test",
        5,
    )
    assert dockerfile.locate_step("[build 1/2] FROM docker.io/library/base") == (
        "build",
        1,
    )


@pytest.mark.parametrize(
    "copy",
    [
        "COPY --from=build /a /a",
        "COPY --from=BUILD /a /a",
        "COPY --from=0 /a /a",
        "COPY --from=busybox:1.36 /bin/sh /sh",
        "COPY --from=registry.example.org/tools /a /a",
        "COPY --from=$TOOLS /a /a",
        "COPY --chown=1:1 --from=build /a /a",
    ],
)
def test_copies_from_stages_indexes_images_and_args_pass_the_check(copy):
    text = f"ARG TOOLS=x\nFROM base AS build\nFROM base\n{copy}\n"
    assert check_before_build(text, "build").stage_names == ["build"]


def test_a_copy_from_an_unknown_plain_word_is_refused_with_its_line():
    text = "FROM base AS build\nFROM base\nCOPY --from=biuld /a /a\n"
    with pytest.raises(InvalidRequest) as caught:
        check_before_build(text, None)
    assert caught.value.details["line"] == 3
    assert "biuld" in caught.value.message and "build" in caught.value.message


def test_an_unknown_target_is_refused_naming_the_stages():
    with pytest.raises(InvalidRequest) as caught:
        check_before_build("FROM base AS build\nFROM base AS app\n", "tset")
    assert caught.value.field == "target"
    assert "build, app" in caught.value.message


def test_fetches_are_the_images_and_remote_sources_from_outside_the_build():
    dockerfile = parse_dockerfile(
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=debian:bookworm\n"
        "FROM ${BASE} AS build\n"
        "ADD https://example.org/a.tgz app.tgz /src/\n"
        "FROM build AS test\n"
        "FROM scratch\n"
        "COPY --from=build /a /a\n"
        "COPY --from=team/tools:1 /t /t\n"
        "RUN --mount=type=bind,from=test,target=/x true\n"
    )
    assert [
        (fetch.kind, fetch.reference, fetch.line) for fetch in dockerfile.fetches()
    ] == [
        ("frontend", "docker/dockerfile:1", 1),
        ("image", "debian:bookworm", 3),
        ("url", "https://example.org/a.tgz", 4),
        ("image", "team/tools:1", 8),
    ]


def test_a_build_arg_changes_what_is_fetched_only_where_the_stage_declares_it():
    dockerfile = parse_dockerfile(
        "FROM busybox\nADD ${SITE}/a /a\nARG SITE=https://a.example\nADD ${SITE}/b /b\n"
    )
    fetched = dockerfile.fetches({"SITE": "https://b.example"})
    assert [(f.reference, f.unresolved) for f in fetched] == [
        ("busybox", None),
        ("${SITE}/a", "SITE"),
        ("https://b.example/b", None),
    ]
