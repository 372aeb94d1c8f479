"""Fuzzing the Dockerfile reader with generated and arbitrary text.

The generated files are made of the parts a real Dockerfile has (directives, FROM
lines with stage names, continuations, here-documents, comments) mixed with junk:
unknown words, odd whitespace, NULs, unicode and line endings of every kind. The
reader either returns a Dockerfile whose stages and lines are consistent or refuses
with InvalidRequest naming the dockerfile field.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from farm.destinations import DestinationPolicy, FetchPolicy
from farm.dockerfile import (
    DIRECTIVES,
    KEYWORDS,
    STEP_KEYWORDS,
    Dockerfile,
    Stage,
    parse_dockerfile,
)
from farm.errors import InvalidRequest

STAGE_NAME = re.compile(r"[a-z][a-z0-9_.-]*")

# Text without NULs or line breaks; NULs and breaks come in on purpose elsewhere.
junk = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n"), max_size=8)
any_case = st.sampled_from(sorted(KEYWORDS - {"FROM"})).flatmap(
    lambda word: st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda lower: "".join(
            char.lower() if flag else char
            for char, flag in zip(word, lower, strict=True)
        )
    )
)
odd_keywords = st.one_of(
    st.sampled_from(["FOO", "ſhell", "workdır", "FROM\u00a0", "#", "\\", "`", "EOF"]),
    junk,
)
words = st.one_of(
    st.sampled_from(
        ["alpine", "scratch", "AS", "as", "build", "Build", "stage-0", "stage-1"]
        + ["1st", "a.b", "--platform=linux/amd64", "--from=build", "$BASE"]
        + ["${BASE:-alpine}", "<<EOF", "<<-EOF", "<<'END'", '<<"EOF"', "<<EOF"]
        + ["\\", "`", "#", "=", '"', "'", "A=b", "&&", "é", "\u2028", "\x85"]
        + ["\x0b", "\x1c", "\ufeff", "\t", "[", "]", "1/2"]
    ),
    junk,
)
args = st.lists(words, max_size=6).map(" ".join)
stage_names = st.one_of(
    st.sampled_from(
        ["build", "Build", "test", "stage-0", "stage-1", "stage-2", "STAGE-1"]
        + ["1st", "a_b", "x.y", "b-", "é", ""]
    ),
    junk,
)
from_lines = st.builds(
    lambda keyword, flags, image, alias: " ".join(
        part for part in (keyword, flags, image, alias) if part
    ),
    st.sampled_from(["FROM", "from", "From"]),
    st.sampled_from(["", "", "--platform=linux/arm64", "--platform=$TARGET"]),
    st.sampled_from(["alpine", "scratch", "build", "$BASE", "${BASE:-x}"]),
    st.one_of(
        st.just(""),
        st.builds(
            "{} {}".format, st.sampled_from(["AS", "as", "aS", "AS AS"]), stage_names
        ),
    ),
)
directive_lines = st.builds(
    "#{}{}={}".format,
    st.sampled_from(["", " ", "  "]),
    st.sampled_from(["syntax", "escape", "check", "Escape", "unknown"]),
    st.sampled_from(["\\", "`", "docker/dockerfile:1", "x", "", " ` "]),
)
# Lines no Dockerfile should hold where they land: they test the refusals.
hostile_lines = st.one_of(
    from_lines,
    st.builds("{} {}".format, odd_keywords, args),
    st.sampled_from(["\\", "`", " \\ ", "EOF", "\tEOF", "\x00", "RUN \x00", "\r"]),
    directive_lines,
    junk,
)


@st.composite
def instruction_groups(draw: st.DrawFn, escape: str) -> list[str]:
    """One instruction as written: plain, continued, or with a here-document."""
    keyword = draw(any_case)
    shape = draw(st.sampled_from(["plain", "plain", "continued", "heredoc", "aside"]))
    if shape == "plain":
        return [f"{keyword} {draw(args)}"]
    if shape == "aside":
        return [draw(st.sampled_from(["", " ", "\t", "# a comment", "  # note"]))]
    if shape == "continued":
        middle = draw(
            st.lists(
                st.one_of(
                    args.map(lambda text: f"  {text} {escape}"),
                    st.sampled_from(["", "  ", "# inside", f"{escape}"]),
                ),
                max_size=3,
            )
        )
        return [f"{keyword} {draw(args)} {escape}", *middle, f"  {draw(args)}"]
    word = draw(st.sampled_from(["EOF", "END", "x_1"]))
    dash = draw(st.sampled_from(["", "-"]))
    quote = draw(st.sampled_from(["", "'", '"']))
    body = draw(st.lists(st.one_of(args, st.just(f"\t{word}x")), max_size=3))
    close = draw(st.sampled_from([word, f"\t{word}", f"{word} "]))
    head = draw(st.sampled_from(["RUN", "COPY", "add", keyword]))
    return [f"{head} <<{dash}{quote}{word}{quote} {draw(args)}", *body, close]


@st.composite
def dockerfile_texts(draw: st.DrawFn) -> str:
    """A Dockerfile of a few stages, with some hostile lines slipped in."""
    lines = []
    escape = "\\"
    for directive in draw(
        st.lists(
            st.sampled_from(
                ["syntax=docker/dockerfile:1", "escape=`", "escape=\\", "check=skip"]
            ),
            max_size=2,
            unique_by=lambda text: text.partition("=")[0],
        )
    ):
        lines.append(f"# {directive}")
        escape = directive.removeprefix("escape=") if "escape" in directive else escape
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"ARG {draw(st.sampled_from(['BASE', 'BASE=alpine', 'V=1']))}")
    for _ in range(draw(st.integers(1, 4))):
        lines.append(draw(from_lines))
        for _ in range(draw(st.integers(0, 4))):
            lines.extend(draw(instruction_groups(escape)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        lines.insert(draw(st.integers(0, len(lines))), draw(hostile_lines))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    bom = draw(st.sampled_from(["", "", "\ufeff"]))
    return bom + newline.join(lines) + draw(st.sampled_from(["", newline]))


texts = dockerfile_texts()


def check_parse(text: str | bytes) -> Dockerfile | None:
    """Parse; a refusal must be InvalidRequest on the dockerfile field."""
    try:
        return parse_dockerfile(text)
    except InvalidRequest as exc:
        assert exc.field == "dockerfile"
        line = exc.details.get("line")
        assert line is None or line >= 1
        return None


def assert_consistent(dockerfile: Dockerfile) -> None:
    """Stages numbered in order, names valid and unique, every line in its stage."""
    stages = dockerfile.stages
    assert stages
    assert [stage.index for stage in stages] == list(range(len(stages)))
    names = dockerfile.stage_names
    assert len(names) == len(set(names))
    for name in names:
        assert STAGE_NAME.fullmatch(name), name
    assert set(dockerfile.directives) <= DIRECTIVES
    assert dockerfile.directives.get("escape", "\\") in ("\\", "`")
    first_line = stages[0].line
    for arg in dockerfile.global_args:
        assert arg.keyword == "ARG" and arg.line < first_line
    ends = [stage.line for stage in stages[1:]] + [None]
    for stage, next_line in zip(stages, ends, strict=True):
        # An unnamed stage's label (stage-N) may also be another stage's name;
        # the name wins then, as it does in BuildKit.
        if not shadowed(dockerfile, stage):
            assert dockerfile.stage(stage.label) is stage, stage.label
        if stage.name:
            assert dockerfile.stage(stage.name.upper()) is stage, stage.name
        previous = stage.line
        for instruction in stage.instructions:
            assert instruction.keyword in KEYWORDS - {"FROM"}
            assert previous < instruction.line <= instruction.end_line
            assert next_line is None or instruction.end_line < next_line
            assert dockerfile.stage_at_line(instruction.line) is stage
            previous = instruction.line


def shadowed(dockerfile: Dockerfile, stage: Stage) -> bool:
    """Whether an unnamed stage's label is another stage's name."""
    return stage.name is None and stage.label in dockerfile.stage_names


def assert_steps_located(dockerfile: Dockerfile) -> None:
    """The step names BuildKit would print map back to their own lines."""
    for stage in dockerfile.stages:
        if shadowed(dockerfile, stage):
            continue
        steps = [i for i in stage.instructions if i.keyword in STEP_KEYWORDS]
        total = len(steps) + 1
        label = stage.label
        found = dockerfile.locate_step(f"[{label} 1/{total}] FROM {stage.base_image}")
        assert found == (label, stage.line)
        for position, step in enumerate(steps, start=2):
            vertex = f"[{label} {position}/{total}] {step.text}"
            assert dockerfile.locate_step(vertex) == (label, step.line), vertex


@given(text=texts)
def test_generated_dockerfiles_parse_consistently_or_are_refused(text: str) -> None:
    dockerfile = check_parse(text)
    if dockerfile is not None:
        assert_consistent(dockerfile)
        assert_steps_located(dockerfile)


@given(
    text=texts,
    insert=st.one_of(
        st.just(b""), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])
    ),
    at=st.integers(0, 400),
)
def test_dockerfiles_as_bytes_parse_like_text_or_are_refused(
    text: str, insert: bytes, at: int
) -> None:
    encoded = text.encode()
    at = min(at, len(encoded))
    dockerfile = check_parse(encoded[:at] + insert + encoded[at:])
    if insert:
        assert dockerfile is None, "bytes that are not UTF-8 were accepted"
    elif dockerfile is not None:
        assert dockerfile == parse_dockerfile(text)
        assert_consistent(dockerfile)


@given(content=st.one_of(st.text(), st.binary()))
def test_arbitrary_text_and_bytes_are_parsed_or_refused(content: str | bytes) -> None:
    dockerfile = check_parse(content)
    if dockerfile is not None:
        assert_consistent(dockerfile)


@given(
    text=texts,
    vertex=st.one_of(
        st.builds(
            "[{}{} {}/{}] {}".format,
            st.sampled_from(["", "linux/amd64 ", "internal "]),
            stage_names,
            st.integers(0, 30),
            st.integers(0, 30),
            st.one_of(args, st.builds("{} {}".format, any_case, args)),
        ),
        st.text(),
    ),
    build_args=st.dictionaries(junk, junk, max_size=3),
)
def test_step_names_and_base_images_never_fail(
    text: str, vertex: str, build_args: dict[str, str]
) -> None:
    dockerfile = check_parse(text)
    if dockerfile is None:
        return
    located = dockerfile.locate_step(vertex)
    if located is not None:
        label, line = located
        stage = dockerfile.stage(label)
        assert stage is not None and stage.label == label
        assert dockerfile.stage_at_line(line) is stage
    for stage in dockerfile.stages:
        assert isinstance(dockerfile.resolved_base(stage, build_args), str)


@given(text=texts, build_args=st.dictionaries(junk, junk, max_size=3))
def test_what_a_dockerfile_fetches_is_always_told_or_refused(
    text: str, build_args: dict[str, str]
) -> None:
    """Listing fetches never fails, each names a line of the file, and checking
    them against a policy that resolves nothing only ever refuses cleanly."""
    dockerfile = check_parse(text)
    if dockerfile is None:
        return
    lines = len(text.splitlines()) or 1
    for fetch in dockerfile.fetches(build_args):
        assert fetch.kind in ("image", "url", "frontend")
        assert 1 <= fetch.line <= lines + 1
    nothing_resolves = DestinationPolicy(resolver=lambda host: [])
    try:
        FetchPolicy(nothing_resolves, own_registry="r:5000").check(
            dockerfile, build_args
        )
    except InvalidRequest as exc:
        assert exc.field == "dockerfile"
        assert exc.message.startswith("Dockerfile line ")
