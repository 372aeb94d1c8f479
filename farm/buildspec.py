"""What a build request asks for, validated before anything is recorded or run."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from farm.errors import InvalidRequest

MAX_TAGS = 10
MAX_BUILD_ARGS = 64
MAX_VALUE_CHARS = 4096
MAX_PATH_CHARS = 1024
MAX_REF_CHARS = 255

# Patterns end in \Z, not $: '$' also matches before a final newline.
_STAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
# What a request may say about how to build (beside where the source is).
BUILD_OPTION_FIELDS = frozenset(
    {"context", "dockerfile", "target", "build_args", "tags", "queue", "priority"}
)
_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_SEPARATORS = re.compile(r"[._-]+")
# A port a git URL may spell out or leave out: the same repository either way.
DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22, "git": 9418}
_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
# Docker's reference grammar: lowercase path components joined by '/', optional tag.
_REPO_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_REPO_COMPONENT}(?:/{_REPO_COMPONENT})*\Z")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./+-]*\Z")
# Repositories in the farm's registry that only the farm writes: base images new
# nodes pull, each project's stage cache, and builds pushed without tags.
BASE_IMAGE_NAMESPACE = "farm-base"
CACHE_NAMESPACE = "farm-cache"
UNTAGGED_REPOSITORY = "builds"
_SCP_LIKE = re.compile(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:[^:]")
_GIT_SCHEMES = {"https", "http", "git", "ssh"}


@dataclass(frozen=True)
class GitSource:
    """A repository URL and the branch, tag or commit to build."""

    url: str
    ref: str

    kind = "git"


@dataclass(frozen=True)
class ArchiveSource:
    """An uploaded .tar.gz of the source, stored by its SHA-256."""

    sha256: str
    size_bytes: int
    filename: str = ""

    kind = "archive"


Source = GitSource | ArchiveSource


@dataclass(frozen=True)
class BuildSpec:
    """A validated build request: where the source is and how to build it."""

    source: Source
    context: str = "."
    dockerfile: str = "Dockerfile"
    target: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()

    @property
    def dockerfile_in_context(self) -> str:
        """The Dockerfile's path relative to the source root."""
        return posixpath.normpath(posixpath.join(self.context, self.dockerfile))


def parse_spec(data: Mapping[str, Any], source: Source) -> BuildSpec:
    """Validate the build options of a request (JSON body or form) around ``source``."""
    context = clean_relative_path(data.get("context") or ".", field="context")
    dockerfile = data.get("dockerfile") or "Dockerfile"
    if not isinstance(dockerfile, str) or len(dockerfile) > MAX_PATH_CHARS:
        raise InvalidRequest("The dockerfile must be a path.", field="dockerfile")
    # The Dockerfile is named relative to the context but may sit outside it, as
    # long as it stays inside the source.
    clean_relative_path(posixpath.join(context, dockerfile), field="dockerfile")
    return BuildSpec(
        source=source,
        context=context,
        dockerfile=posixpath.normpath(dockerfile),
        target=clean_target(data.get("target")),
        build_args=clean_build_args(data.get("build_args") or {}),
        tags=clean_tags(data.get("tags") or []),
    )


def clean_queue(value: Any, allowed: list[str]) -> str:
    """A queue the farm serves (``allowed[0]`` when none is named)."""
    if value is None or value == "":
        return allowed[0]
    if value not in allowed:
        raise InvalidRequest(
            f"Unknown queue {value!r}; this farm serves {', '.join(allowed)}.",
            field="queue",
        )
    return str(value)


def clean_priority(value: Any) -> str:
    if value is None or value == "":
        return "normal"
    if value not in ("normal", "urgent"):
        raise InvalidRequest("priority must be 'normal' or 'urgent'.", field="priority")
    return str(value)


def input_key(spec: BuildSpec, commit: str | None) -> str | None:
    """A digest of everything that decides the image: the exact source (commit or
    archive content), context, Dockerfile, target and build args. Tags are left out:
    they name the result, they do not change it. None when the commit is unknown."""
    if isinstance(spec.source, GitSource):
        if not commit:
            return None
        identity = {"commit": commit}
    else:
        identity = {"archive": spec.source.sha256}
    inputs = {
        **identity,
        "context": spec.context,
        "dockerfile": spec.dockerfile,
        "target": spec.target,
        "build_args": spec.build_args,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def project_name(git_url: str | None, tags: Sequence[str]) -> str:
    """What a build belongs to, for lists, badges and the cache's namespace: its git
    repository (``host/path``), else its first tag's name, else ``uploads``."""
    if git_url:
        parts = urlsplit(
            git_url if "://" in git_url else "ssh://" + git_url.replace(":", "/", 1)
        )
        try:
            port = parts.port
        except ValueError:
            port = None
        if port == DEFAULT_PORTS.get(parts.scheme):
            port = None
        host = f"{parts.hostname or ''}{f':{port}' if port else ''}"
        raw = f"{host}/{parts.path.removesuffix('.git')}"
    elif tags:
        raw = tags[0].partition(":")[0]
    else:
        raw = "uploads"
    components = [name_part(part) for part in raw.split("/") if name_part(part)]
    return "/".join(c for c in components if c != "unnamed") or "uploads"


def name_part(text: str) -> str:
    """``text`` as one lowercase path component of an image name: a name that is one
    already stays as it is (``my_app.js``), so two names differing only in their
    separators stay apart; anything else becomes ``-``."""
    part = _SEPARATORS.sub(_separator, _UNSAFE.sub("-", text.lower()))
    return part.strip("._-") or "unnamed"


def _separator(found: re.Match[str]) -> str:
    run = found[0]
    return run if run in {".", "_", "__"} or set(run) == {"-"} else "-"


def reject_unknown_fields(data: Mapping[str, Any], known: Set[str]) -> None:
    """Refuse fields we do not know, so a misspelt option is not silently dropped."""
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidRequest(
            f"Unknown field {unknown[0]!r}; accepted fields are "
            f"{', '.join(sorted(known))}.",
            field=unknown[0],
        )


def redact_url(url: str) -> str:
    """The URL without any user name or password, for logs, records and pages."""
    parts = urlsplit(url)
    if not parts.password and not parts.username:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, ""))


def parse_git_source(url: Any, ref: Any, *, allow_file_urls: bool = False) -> GitSource:
    return GitSource(
        url=clean_git_url(url, allow_file_urls=allow_file_urls),
        ref=clean_git_ref(ref),
    )


def clean_git_url(url: Any, *, allow_file_urls: bool = False) -> str:
    """Accept http(s), git, ssh and scp-like URLs; refuse transports that run code."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest("Give the git repository URL.", field="git_url")
    url = url.strip()
    if len(url) > MAX_PATH_CHARS:
        raise InvalidRequest(
            f"The git URL is longer than {MAX_PATH_CHARS} characters.", field="git_url"
        )
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidRequest(
            "The git URL has spaces or control characters.", field="git_url"
        )
    if url.startswith("-") or "::" in url.split("/", 1)[0]:
        raise InvalidRequest(
            "The git URL must be http(s)://, git://, ssh:// or user@host:path.",
            field="git_url",
        )
    if _SCP_LIKE.match(url):
        return url
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError as exc:  # also a bracketed host that is no IP address
        raise InvalidRequest(
            f"The git URL has a malformed host or port: {exc}.", field="git_url"
        ) from exc
    scheme = parts.scheme.lower()
    if scheme == "file" and allow_file_urls:
        return url
    if scheme not in _GIT_SCHEMES:
        raise InvalidRequest(
            f"Git URLs with scheme {scheme or 'none'!r} are not "
            "accepted; use http(s)://, git:// or ssh://.",
            field="git_url",
        )
    if not parts.hostname:
        raise InvalidRequest("The git URL names no host.", field="git_url")
    return url


def clean_git_ref(ref: Any) -> str:
    """A branch, tag or commit name that git cannot mistake for an option."""
    if ref is None or ref == "":
        return "HEAD"
    if isinstance(ref, str) and len(ref) > MAX_REF_CHARS:
        raise InvalidRequest(
            f"The git ref is {len(ref)} characters long; at most {MAX_REF_CHARS} "
            "are accepted.",
            field="git_ref",
        )
    if not isinstance(ref, str) or not _REF.match(ref):
        raise InvalidRequest(
            "The git ref must be a branch, tag or commit name "
            "(letters, digits, '.', '_', '/', '-', '+').",
            field="git_ref",
        )
    if ".." in ref or ref.endswith((".lock", "/", ".")) or "//" in ref:
        raise InvalidRequest("The git ref is not a valid ref name.", field="git_ref")
    return ref


def clean_relative_path(value: Any, *, field: str) -> str:
    """A path inside the source tree: relative, normalised, never climbing out."""
    if not isinstance(value, str) or len(value) > MAX_PATH_CHARS or "\x00" in value:
        raise InvalidRequest(
            f"The {field} must be a path inside the source.", field=field
        )
    path = posixpath.normpath(value.strip() or ".")
    if path.startswith("/") or path == ".." or path.startswith("../"):
        raise InvalidRequest(
            f"The {field} must be a relative path inside the source, not {value!r}.",
            field=field,
        )
    return path


def clean_target(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _STAGE.match(value):
        raise InvalidRequest(
            "The target must be a stage name from the Dockerfile.", field="target"
        )
    return value


def clean_build_args(value: Any) -> dict[str, str]:
    """Build args as a name → string mapping, or a list of ``NAME=value`` strings."""
    return clean_variables(value, field="build_args", noun="Build arg")


def clean_variables(value: Any, *, field: str, noun: str) -> dict[str, str]:
    """Named string values (build args, environment variables), checked."""
    if isinstance(value, list | tuple):
        value = dict(_split_assignment(item, field=field, noun=noun) for item in value)
    if not isinstance(value, Mapping):
        raise InvalidRequest(
            f"{noun}s must be an object of names to strings.", field=field
        )
    if len(value) > MAX_BUILD_ARGS:
        raise InvalidRequest(
            f"At most {MAX_BUILD_ARGS} {noun.lower()}s are accepted.", field=field
        )
    cleaned: dict[str, str] = {}
    for name, arg in value.items():
        if not isinstance(name, str) or not _ARG_NAME.match(name):
            raise InvalidRequest(
                f"{noun} name {_shown(name)} is not valid: use letters, digits and "
                "'_', not starting with a digit, at most 128 characters.",
                field=field,
            )
        if field == "build_args" and name.upper().startswith("BUILDKIT_"):
            # They steer the engine itself (BUILDKIT_SYNTAX names a frontend
            # image it runs); the farm sets the ones it uses.
            raise InvalidRequest(
                f"Build arg {name} steers the engine; BUILDKIT_* build args are "
                "the farm's to set.",
                field=field,
            )
        if isinstance(arg, bool) or not isinstance(arg, str | int | float):
            raise InvalidRequest(f"{noun} {name} must be a string.", field=field)
        if len(str(arg)) > MAX_VALUE_CHARS:
            raise InvalidRequest(
                f"{noun} {name} is longer than {MAX_VALUE_CHARS} characters.",
                field=field,
            )
        cleaned[name] = str(arg)
    return cleaned


def _shown(value: Any, limit: int = 60) -> str:
    """A value as an error message quotes it: at most ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _split_assignment(item: Any, *, field: str, noun: str) -> tuple[str, str]:
    if not isinstance(item, str) or "=" not in item:
        raise InvalidRequest(
            f"{noun} {_shown(item)} must look like NAME=value.", field=field
        )
    name, _, arg = item.partition("=")
    return name.strip(), arg


def clean_tags(value: Any) -> tuple[str, ...]:
    """Image names (``repository[:tag]``) to push under the farm's registry."""
    if isinstance(value, str):
        value = [part for part in re.split(r"[\s,]+", value) if part]
    if not isinstance(value, list | tuple):
        raise InvalidRequest(
            "Tags must be a list of names like 'web:1.0'.", field="tags"
        )
    if len(value) > MAX_TAGS:
        raise InvalidRequest(f"At most {MAX_TAGS} tags are accepted.", field="tags")
    return tuple(dict.fromkeys(clean_tag(tag) for tag in value))


def clean_tag(tag: Any) -> str:
    if not isinstance(tag, str) or len(tag) > 255:
        raise InvalidRequest("Each tag must be a name like 'web:1.0'.", field="tags")
    repository, _, version = tag.partition(":")
    first = repository.split("/", 1)[0]
    # Docker reads a first component with a dot or port, or 'localhost', as a
    # registry host; the farm pushes only to its own registry.
    names_host = "/" in repository and ("." in first or first == "localhost")
    if (
        names_host
        or not _REPOSITORY.match(repository)
        or (version and not _TAG.match(version))
    ):
        raise InvalidRequest(
            f"Tag {tag!r} is not a valid image name: use lowercase "
            "'name[:tag]', without a registry host.",
            field="tags",
        )
    if first in (BASE_IMAGE_NAMESPACE, CACHE_NAMESPACE) or (
        repository == UNTAGGED_REPOSITORY
    ):
        raise InvalidRequest(
            f"Tag {tag!r} names a repository the farm keeps for itself "
            f"({BASE_IMAGE_NAMESPACE}/…, {CACHE_NAMESPACE}/…, "
            f"{UNTAGGED_REPOSITORY}): choose another name.",
            field="tags",
        )
    return f"{repository}:{version or 'latest'}"
