"""Read a Dockerfile into stages and instructions, and map BuildKit steps back to it.

Pure text handling, no I/O. The rules follow the Dockerfile reference
(https://docs.docker.com/reference/dockerfile/): parser directives at the top,
comments, line continuations with the escape character, ``ARG`` before the first
``FROM``, ``FROM image AS name`` and here-documents (``<<EOF``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from farm.errors import InvalidRequest

# fmt: off
KEYWORDS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM",
    "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL",
    "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})
# fmt: on
# Instructions that BuildKit turns into numbered steps; FROM is always step 1.
STEP_KEYWORDS = frozenset({"ADD", "COPY", "RUN", "WORKDIR"})
HEREDOC_KEYWORDS = frozenset({"ADD", "COPY", "RUN"})
DIRECTIVES = frozenset({"syntax", "escape", "check"})

_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_STAGE_NAME = re.compile(r"[a-z][a-z0-9_.-]*$")
_VERTEX = re.compile(
    r"\[(?P<label>[^\]]*?)\s*(?P<pos>\d+)/(?P<total>\d+)\]\s+(?P<text>.*)", re.DOTALL
)
_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_]\w*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_]\w*))"
)


@dataclass(frozen=True)
class Instruction:
    """One instruction as written: keyword, argument text and where it starts."""

    keyword: str
    args: str
    line: int
    end_line: int
    heredocs: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return f"{self.keyword} {self.args}".rstrip()


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` block: its base image, optional name and instructions."""

    index: int
    name: str | None
    base_image: str
    line: int
    platform: str | None = None
    instructions: tuple[Instruction, ...] = ()

    @property
    def label(self) -> str:
        """The name BuildKit prints for this stage; unnamed stages are stage-N."""
        return self.name or f"stage-{self.index}"


@dataclass(frozen=True)
class StepRef:
    """What a BuildKit vertex name such as ``[build 2/4] RUN make`` says."""

    stage: str | None
    position: int
    total: int
    instruction: str

    @property
    def keyword(self) -> str:
        return self.instruction.split(maxsplit=1)[0].upper() if self.instruction else ""


@dataclass(frozen=True)
class Fetch:
    """Something a Dockerfile makes the engine fetch from outside the build's
    context: an image (a base, a ``COPY --from`` or ``RUN --mount from`` image), the
    ``# syntax`` frontend (an image the engine runs to read the Dockerfile) or a
    remote ``ADD`` source (a URL or a git remote).

    ``unresolved`` names a variable the Dockerfile does not set, whose value would
    come from a base image, so where it points cannot be told before the build.
    """

    kind: Literal["image", "url", "frontend"]
    reference: str
    line: int
    unresolved: str | None = None


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: its directives, global ``ARG``s and stages."""

    stages: tuple[Stage, ...]
    global_args: tuple[Instruction, ...] = ()
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def stage_names(self) -> list[str]:
        """Names given with ``AS``, in file order (unnamed stages are left out)."""
        return [stage.name for stage in self.stages if stage.name]

    def has_stage(self, name: str) -> bool:
        return self.stage(name) is not None

    def stage(self, name: str) -> Stage | None:
        """Find a stage by its ``AS`` name, else its BuildKit label, ignoring case.

        A name wins over a label: in ``FROM a`` then ``FROM b AS stage-0``, BuildKit
        reads ``stage-0`` (in ``--target`` or ``FROM``) as the second stage.
        """
        wanted = name.lower()
        named = (stage for stage in self.stages if stage.name == wanted)
        labelled = (stage for stage in self.stages if stage.label == wanted)
        return next(named, None) or next(labelled, None)

    def stage_at_line(self, line: int) -> Stage | None:
        """Return the stage whose block holds the given 1-based line."""
        found = None
        for stage in self.stages:
            if stage.line <= line:
                found = stage
        return found

    def resolved_base(
        self, stage: Stage, build_args: dict[str, str] | None = None
    ) -> str:
        """Expand ``$VAR`` in a stage's base image from global ARGs and build args."""
        values = _arg_defaults(self.global_args)
        values.update(build_args or {})
        return _expand(stage.base_image, values)

    def fetches(self, build_args: Mapping[str, str] | None = None) -> list[Fetch]:
        """What building this Dockerfile fetches from elsewhere, with variables
        expanded from ARG defaults, build args and ENV the way the engine would.

        Where this reader and the engine could read a line differently, it errs
        towards finding a fetch: quotes and escapes are undone, ``ONBUILD`` lines
        (run by whatever builds on the image) count, and so do instruction-like
        lines inside here-documents (an engine without here-document support reads
        them as instructions).
        """
        build_args = dict(build_args or {})
        found = []
        if syntax := self.directives.get("syntax"):
            found.append(Fetch("frontend", _unquoted(syntax), 1))
        for stage in self.stages:
            base = _unquoted(self.resolved_base(stage, build_args))
            earlier = self.stages[: stage.index]
            if base.lower() != "scratch" and not any(
                base.lower() in (s.name, s.label) for s in earlier
            ):
                found.append(Fetch("image", base, stage.line))
            found.extend(self._stage_fetches(stage, build_args))
        return found

    def _stage_fetches(self, stage: Stage, build_args: dict[str, str]) -> list[Fetch]:
        values = _arg_defaults(self.global_args)
        scope: dict[str, str] = {}
        found = []
        for instruction in _with_hidden_instructions(stage.instructions):
            if instruction.keyword == "ARG":
                for name, default in _assignments(instruction.args):
                    if default is None:
                        default = values.get(name, "")
                    else:  # a default may use the variables set before it
                        default = _expand(_unquoted(default), scope)
                    scope[name] = build_args.get(name, default)
            elif instruction.keyword == "ENV":
                for name, value in _assignments(instruction.args):
                    scope[name] = _expand(_unquoted(value or ""), scope)
            sources: list[tuple[Literal["image", "url"], str]] = [
                *_image_flags(instruction),
                *_remote_add_sources(instruction),
            ]
            for kind, text in sources:
                text = _unquoted(text)
                expanded, unresolved = _expand_in_scope(text, scope)
                if kind == "image" and self.stage(expanded) is not None:
                    continue
                if kind == "image" and expanded.isdigit():
                    continue  # a stage's index
                if kind == "url" and not _names_remote(expanded) and not unresolved:
                    continue  # a variable that stood for a file of the context
                # Where a variable is not set here, show what the line says.
                shown = text if unresolved else expanded
                found.append(Fetch(kind, shown, instruction.line, unresolved))
        return found

    def locate_step(self, vertex_name: str) -> tuple[str, int] | None:
        """Map a BuildKit vertex name to (stage label, Dockerfile line) of its step."""
        ref = parse_vertex_name(vertex_name)
        if ref is None:
            return None
        stage = self._stage_for(ref.stage)
        if stage is None:
            return None
        if ref.keyword == "FROM":
            return stage.label, stage.line
        found = _match_instruction(stage, ref)
        return (stage.label, found.line) if found else None

    def _stage_for(self, label: str | None) -> Stage | None:
        # BuildKit leaves the stage out of step names when there is a single stage.
        if label is None:
            return self.stages[0] if len(self.stages) == 1 else None
        return self.stage(label)


# A --from that is one plain word names a stage (or an image without its tag).
_BARE_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_COPY_FROM = re.compile(r"(?:^|\s)--from=(\S+)")


def check_before_build(text: str | bytes, target: str | None) -> Dockerfile:
    """What can be told wrong with a Dockerfile before building it, as
    InvalidRequest: it does not parse, it has no stage ``target``, or a
    ``COPY --from`` names no stage and no image."""
    dockerfile = parse_dockerfile(text)
    stages = ", ".join(dockerfile.stage_names) or "none are named"
    if target and not dockerfile.has_stage(target):
        raise InvalidRequest(
            f"The Dockerfile has no stage named {target!r} (stages: {stages}).",
            field="target",
        )
    for stage in dockerfile.stages:
        for instruction in stage.instructions:
            found = _COPY_FROM.search(instruction.args)
            if instruction.keyword != "COPY" or not found:
                continue
            source = found[1].strip("\"'")
            if source.isdigit() or not _BARE_WORD.match(source):
                continue  # a stage index, an image reference, or an ARG
            if not dockerfile.has_stage(source):
                raise _invalid(
                    f"COPY --from={source} names no stage of the Dockerfile "
                    f"(stages: {stages}); to copy from an image, give its tag, "
                    f"as in {source}:latest",
                    instruction.line,
                )
    return dockerfile


def parse_vertex_name(name: str) -> StepRef | None:
    """Split ``[linux/amd64 build 2/4] RUN make`` into its parts; None if no step."""
    match = _VERTEX.match(name.strip())
    if match is None:
        return None
    # Multi-platform builds put the platform (it has a slash) before the stage.
    words = [word for word in match["label"].split() if "/" not in word]
    return StepRef(
        stage=words[-1] if words else None,
        position=int(match["pos"]),
        total=int(match["total"]),
        instruction=match["text"].strip(),
    )


def parse_dockerfile(text: str | bytes) -> Dockerfile:
    """Parse Dockerfile text; raise InvalidRequest(field="dockerfile") if unreadable."""
    lines = _split_lines(_as_text(text))
    directives, first = _read_directives(lines)
    escape = directives.get("escape", "\\")
    instructions = _read_instructions(lines, first, escape)
    return _group_stages(instructions, directives)


def _invalid(message: str, line: int | None = None, **details: Any) -> InvalidRequest:
    if line is not None:
        message = f"Dockerfile line {line}: {message}"
        details["line"] = line
    return InvalidRequest(message, field="dockerfile", **details)


def _as_text(text: str | bytes) -> str:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = "The Dockerfile is not UTF-8 text; save it as UTF-8."
            raise _invalid(message) from exc
    if not isinstance(text, str):
        raise _invalid("The Dockerfile must be text.")
    if "\x00" in text:
        raise _invalid("The Dockerfile holds NUL bytes; it looks like a binary file.")
    return text.removeprefix("\ufeff")


def _split_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _read_directives(lines: list[str]) -> tuple[dict[str, str], int]:
    """Read parser directives at the top; return them and the first other line."""
    directives: dict[str, str] = {}
    for index, line in enumerate(lines):
        match = _DIRECTIVE.match(line.strip())
        if match is None or match[1].lower() not in DIRECTIVES:
            return directives, index
        key, value = match[1].lower(), match[2]
        if key in directives:
            raise _invalid(f"the parser directive {key!r} is given twice", index + 1)
        if key == "escape" and value not in ("\\", "`"):
            raise _invalid(
                "the escape directive must be a backslash or a backtick", index + 1
            )
        directives[key] = value
    return directives, len(lines)


def _read_instructions(lines: list[str], first: int, escape: str) -> list[Instruction]:
    instructions = []
    index = first
    while index < len(lines):
        if _is_blank_or_comment(lines[index]):
            index += 1
            continue
        instruction, index = _read_instruction(lines, index, escape)
        instructions.append(instruction)
    return instructions


def _read_instruction(
    lines: list[str], start: int, escape: str
) -> tuple[Instruction, int]:
    """Read the instruction starting at ``start``; return it and the next index."""
    text, index = _join_continuation(lines, start, escape)
    if not text.strip():
        # A lone escape character continued onto blank lines or the end.
        raise _invalid("a line continuation holds no instruction", start + 1)
    keyword, *rest = text.strip().split(maxsplit=1)
    keyword, args = keyword.upper(), (rest[0].strip() if rest else "")
    if keyword not in KEYWORDS:
        raise _invalid(f"unknown instruction {keyword!r}", start + 1)
    heredocs: tuple[str, ...] = ()
    if keyword in HEREDOC_KEYWORDS:
        heredocs, index = _read_heredocs(lines, index, args, start)
    instruction = Instruction(keyword, args, start + 1, index, heredocs)
    return instruction, index


def _join_continuation(lines: list[str], start: int, escape: str) -> tuple[str, int]:
    """Join a line with the lines its trailing escape character continues onto."""
    parts = []
    index = start
    while index < len(lines):
        line = lines[index]
        index += 1
        if index - 1 > start and _is_blank_or_comment(line):
            continue  # dropped inside a continuation, as the reference says
        body = line.rstrip()
        if not body.endswith(escape):
            parts.append(line)
            break
        parts.append(body[: -len(escape)])
    return "".join(parts), index


def _is_blank_or_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _read_heredocs(
    lines: list[str], index: int, args: str, start: int
) -> tuple[tuple[str, ...], int]:
    """Consume the bodies of the here-documents an instruction opens."""
    bodies = []
    for match in _HEREDOC.finditer(args):
        strip_tabs, word = match[1] == "-", match[3]
        body = []
        while True:
            if index >= len(lines):
                raise _invalid(f"here-document {word!r} is never closed", start + 1)
            line = lines[index]
            index += 1
            if (line.lstrip("\t") if strip_tabs else line) == word:
                break
            body.append(line.lstrip("\t") if strip_tabs else line)
        bodies.append("\n".join(body))
    return tuple(bodies), index


def _group_stages(
    instructions: list[Instruction], directives: dict[str, str]
) -> Dockerfile:
    """Split instructions at each FROM; only ARG may come before the first."""
    global_args: list[Instruction] = []
    blocks: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            blocks.append([instruction])
        elif blocks:
            blocks[-1].append(instruction)
        elif instruction.keyword == "ARG":
            global_args.append(instruction)
        else:
            raise _invalid(
                f"{instruction.keyword} comes before the first FROM; only ARG may",
                instruction.line,
            )
    if not blocks:
        raise _invalid(
            "The Dockerfile has no FROM instruction; start it with FROM <image>."
        )
    stages: list[Stage] = []
    for block in blocks:
        stages.append(_new_stage(block[0], tuple(block[1:]), stages))
    return Dockerfile(tuple(stages), tuple(global_args), directives)


def _new_stage(
    instruction: Instruction, body: tuple[Instruction, ...], earlier: list[Stage]
) -> Stage:
    """Read a FROM line into a stage holding the instructions that follow it."""
    words = instruction.args.split()
    flags = [word for word in words if word.startswith("--")]
    words = [word for word in words if not word.startswith("--")]
    platform = next(
        (flag.partition("=")[2] for flag in flags if flag.startswith("--platform=")),
        None,
    )
    if len(words) not in (1, 3) or len(words) == 3 and words[1].lower() != "as":
        raise _invalid(
            "FROM takes an image and an optional 'AS name'", instruction.line
        )
    name = words[2].lower() if len(words) == 3 else None
    if name is not None and not _STAGE_NAME.match(name):
        raise _invalid(
            f"invalid stage name {name!r}; use letters, digits, '-', '_' "
            "and '.', starting with a letter",
            instruction.line,
        )
    if name is not None and any(stage.name == name for stage in earlier):
        raise _invalid(f"the stage name {name!r} is used twice", instruction.line)
    return Stage(len(earlier), name, words[0], instruction.line, platform, body)


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _match_instruction(stage: Stage, ref: StepRef) -> Instruction | None:
    """Find the instruction a step names: by its text, else by its step number."""
    steps = [i for i in stage.instructions if i.keyword in STEP_KEYWORDS]
    offset = ref.position - 2
    by_position = steps[offset] if 0 <= offset < len(steps) else None
    wanted = _normalized(ref.instruction)
    same_text = [
        i
        for i in stage.instructions
        if i.keyword == ref.keyword and _normalized(i.text) == wanted
    ]
    if by_position in same_text or (
        not same_text and by_position is not None and by_position.keyword == ref.keyword
    ):
        return by_position
    return same_text[0] if same_text else None


def _arg_defaults(args: tuple[Instruction, ...]) -> dict[str, str]:
    values = {}
    for instruction in args:
        name, sep, default = instruction.args.partition("=")
        if sep:
            values[name.strip()] = default.strip().strip("\"'")
    return values


_ASSIGNMENT = re.compile(r"([A-Za-z_]\w*)(?:=(\"[^\"]*\"|'[^']*'|\S*))?")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP_REMOTE = re.compile(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:")


def _assignments(args: str) -> list[tuple[str, str | None]]:
    """``NAME=value`` pairs of an ARG or ENV line (also ENV's ``NAME value``);
    the value is None where only a name is given."""
    words = args.split(maxsplit=1)
    if len(words) == 2 and "=" not in words[0]:
        return [(words[0], words[1].strip())]
    pairs: list[tuple[str, str | None]] = []
    for match in _ASSIGNMENT.finditer(args):
        value = match[2]
        pairs.append((match[1], None if value is None else value.strip("\"'")))
    return pairs


def _unquoted(text: str) -> str:
    """A word as the engine reads it: quotes taken away, escapes undone."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return re.sub(r"\\(.)", r"\1", text).replace('"', "").replace("'", "")


def _names_remote(source: str) -> bool:
    """Whether an ADD source is a URL or a git remote rather than a context path."""
    return bool(_URL_SCHEME.match(source) or _SCP_REMOTE.match(source))


def _with_hidden_instructions(
    instructions: tuple[Instruction, ...],
) -> list[Instruction]:
    """The instructions, each followed by those it carries: the one an ``ONBUILD``
    defers, and instruction-like lines of its here-documents."""
    found = []
    for instruction in instructions:
        found.append(instruction)
        carried = [instruction.args] if instruction.keyword == "ONBUILD" else []
        for body in instruction.heredocs:
            carried += body.splitlines()
        for text in carried:
            keyword, _, args = text.strip().partition(" ")
            if keyword.upper() in KEYWORDS:
                found.append(
                    Instruction(
                        keyword.upper(),
                        args.strip(),
                        instruction.line,
                        instruction.end_line,
                    )
                )
    return found


def _image_flags(instruction: Instruction) -> list[tuple[Literal["image"], str]]:
    """Images named by ``COPY --from=`` or a ``RUN --mount=...,from=`` option."""
    found: list[tuple[Literal["image"], str]] = []
    for word in instruction.args.split():
        if not word.startswith("--"):
            break
        if instruction.keyword in ("COPY", "ADD") and word.startswith("--from="):
            found.append(("image", word.partition("=")[2].strip("\"'")))
        elif instruction.keyword == "RUN" and word.startswith("--mount="):
            for option in _unquoted(word.partition("=")[2]).split(","):
                key, _, value = option.partition("=")
                if key.strip().lower() == "from" and value:
                    found.append(("image", value))
    return found


def _remote_add_sources(instruction: Instruction) -> list[tuple[Literal["url"], str]]:
    """The sources of an ``ADD`` that are URLs or git remotes, not context files."""
    if instruction.keyword != "ADD":
        return []
    args = instruction.args
    words = [word for word in args.split() if not word.startswith("--")]
    flagless = " ".join(words)
    if flagless.startswith("["):
        try:
            listed = json.loads(flagless)
        except ValueError:
            listed = None
        if isinstance(listed, list) and all(isinstance(w, str) for w in listed):
            words = listed
    sources = [word for word in words[:-1] if not word.startswith("<<")]
    return [
        ("url", source)
        for source in sources
        if "$" in source or _names_remote(_unquoted(source))
    ]


def _expand_in_scope(text: str, scope: dict[str, str]) -> tuple[str, str | None]:
    """Expand ``$VAR`` from a stage's ARGs and ENVs; also say which variable, if
    any, the stage does not set (a base image's ENV could set it)."""
    unresolved = None
    for match in _VARIABLE.finditer(text):
        name = match["braced"] or match["plain"]
        if name not in scope and unresolved is None:
            unresolved = name
    if "$" in _VARIABLE.sub("", text) and unresolved is None:
        unresolved = text  # a form of expansion this reader does not follow
    return _expand(text, scope), unresolved


def _expand(text: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        return values.get(name) or (match["default"] or "")

    return _VARIABLE.sub(replace, text)
