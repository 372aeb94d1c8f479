"""Git push webhooks from GitHub and GitLab: verified, built once per delivery.

An operator makes a hook (``farm hook create``) for one repository: the branches it
builds (patterns such as ``main`` or ``release/*``) and the build options, whose tags
may say ``{branch}`` and ``{sha}``. The hook has its own URL, ``/hooks/<id>``, and a
secret the git host proves it knows: GitHub signs the body with it
(``X-Hub-Signature-256``), GitLab sends it (``X-Gitlab-Token``). A push to a matching
branch builds the pushed commit; the same delivery again builds nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from farm.builds import BuildService, describe_build
from farm.buildspec import (
    BUILD_OPTION_FIELDS,
    GitSource,
    clean_git_url,
    parse_spec,
    project_name,
    reject_unknown_fields,
)
from farm.errors import InvalidRequest, Unauthorized
from farm.models import Hook

logger = logging.getLogger(__name__)

PROVIDERS = ("github", "gitlab")
_BRANCH = re.compile(r"^[A-Za-z0-9._/*?\[\]-]{1,200}$")
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Push:
    """What a push event says: where from, which branch, which commit."""

    repositories: list[str]
    branch: str | None  # None for tags and other refs
    commit: str
    deleted: bool


class HookService:
    def __init__(self, builds: BuildService) -> None:
        self.builds = builds
        self.ledger = builds.ledger

    def create(
        self,
        *,
        name: str,
        provider: str,
        git_url: str,
        branches: Iterable[str] = ("*",),
        options: Mapping[str, Any] | None = None,
    ) -> Hook:
        """Check and record a hook; its secret is made here."""
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise InvalidRequest(
                "A hook needs a name of at most 64 characters.", field="name"
            )
        if provider not in PROVIDERS:
            raise InvalidRequest(
                f"The provider is one of {', '.join(PROVIDERS)}.", field="provider"
            )
        url = clean_git_url(git_url, allow_file_urls=self.builds.allow_file_urls)
        self.builds.destinations.check_url(url, field="git_url")
        patterns = list(branches) or ["*"]
        if not all(_BRANCH.match(pattern) for pattern in patterns):
            raise InvalidRequest(
                "Branch patterns use letters, digits, '.', '_', '/', '-' and the "
                "wildcards '*', '?', '[...]'.",
                field="branch",
            )
        options = dict(options or {})
        reject_unknown_fields(options, BUILD_OPTION_FIELDS)
        # Build options are checked now, with a stand-in branch, not at the push.
        parse_spec(_for_push(options, "main", "0" * 40), GitSource(url, "main"))
        self.builds.route(options)
        hook = Hook(
            id=secrets.token_hex(6),
            name=name,
            provider=provider,
            git_url=url,
            repository=project_name(url, []),
            branches=patterns,
            secret=secrets.token_urlsafe(32),
            options=options,
        )
        self.ledger.save_hook(hook)
        logger.info("hook=%s: created for %s", hook.id, hook.repository)
        return hook

    def receive(
        self, hook_id: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """Handle one delivery; return the HTTP status and what was done."""
        hook = self.ledger.get_hook(hook_id)
        headers = {name.lower(): value for name, value in headers.items()}
        _verify(hook, headers, body)
        event = _event(hook.provider, headers)
        if event == "ping":
            return 200, {"outcome": "pong", "hook": hook.id}
        if event != "push":
            return 200, {"outcome": "ignored", "reason": f"not a push ({event})"}
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise InvalidRequest("The event body is not JSON we can read.") from exc
        push = _parse_push(hook.provider, payload)
        # Named afresh from the hook's URL: a hook made before a change to how
        # projects are named still matches its repository's pushes.
        expected = project_name(hook.git_url, [])
        if expected not in {project_name(url, []) for url in push.repositories}:
            raise InvalidRequest(
                f"This hook builds {expected}; the push came from another repository.",
                field="repository",
            )
        if push.deleted or push.branch is None:
            return 200, {"outcome": "ignored", "reason": "not a branch update"}
        if not any(fnmatch.fnmatchcase(push.branch, p) for p in hook.branches):
            reason = f"branch {push.branch} is not one of {', '.join(hook.branches)}"
            return 200, {"outcome": "ignored", "reason": reason}
        delivery = _delivery_id(hook.provider, headers, push)
        earlier = self.ledger.claim_delivery(hook.id, delivery)
        if earlier is not None:
            return 200, {
                "outcome": "duplicate",
                "delivery": delivery,
                "build_id": earlier.build_id,
            }
        try:
            submission = self._build(hook, push)
        except Exception:
            self.ledger.forget_delivery(hook.id, delivery)
            raise
        self.ledger.settle_delivery(hook.id, delivery, submission.build.id)
        logger.info(
            "hook=%s: %s@%s %s build %s",
            hook.id,
            push.branch,
            push.commit[:12],
            submission.outcome,
            submission.build.id,
        )
        return 202, {
            "outcome": submission.outcome,
            "delivery": delivery,
            "build": describe_build(submission.build),
        }

    def _build(self, hook: Hook, push: Push) -> Any:
        assert push.branch is not None
        source = GitSource(url=hook.git_url, ref=push.branch)
        options = _for_push(hook.options, push.branch, push.commit)
        spec = parse_spec(options, source)
        self.builds.destinations.check_url(source.url, field="git_url")
        return self.builds.submit(
            spec,
            self.builds.route(options),
            commit=push.commit,
            submitted_by=f"hook:{hook.name}",
        )


def _for_push(options: Mapping[str, Any], branch: str, commit: str) -> dict[str, Any]:
    """The hook's options with ``{branch}`` and ``{sha}`` filled in its tags."""
    tags = options.get("tags") or []
    if isinstance(tags, str):
        tags = tags.replace(",", " ").split()
    safe_branch = _TAG_UNSAFE.sub("-", branch).strip("-.")[:100] or "branch"
    filled = [
        str(tag).replace("{branch}", safe_branch).replace("{sha}", commit[:12])
        for tag in tags
    ]
    return {**options, "tags": filled}


def _verify(hook: Hook, headers: Mapping[str, str], body: bytes) -> None:
    if hook.provider == "github":
        expected = (
            "sha256=" + hmac.new(hook.secret.encode(), body, hashlib.sha256).hexdigest()
        )
        given = headers.get("x-hub-signature-256", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized(
                "The X-Hub-Signature-256 header does not match this hook's secret."
            )
    else:
        given = headers.get("x-gitlab-token", "")
        if not hmac.compare_digest(given.encode(), hook.secret.encode()):
            raise Unauthorized("The X-Gitlab-Token header is not this hook's secret.")


def _event(provider: str, headers: Mapping[str, str]) -> str:
    if provider == "github":
        return headers.get("x-github-event", "")
    name = headers.get("x-gitlab-event", "")
    return {"Push Hook": "push", "System Hook": "system"}.get(name, name)


def _parse_push(provider: str, payload: Any) -> Push:
    if not isinstance(payload, dict):
        raise InvalidRequest("The push event must be a JSON object.")
    ref = payload.get("ref")
    if provider == "github":
        repo = payload.get("repository")
        commit = payload.get("after")
        urls: tuple[str, ...] = ("clone_url", "ssh_url", "git_url", "html_url")
    else:
        repo = payload.get("project")
        commit = payload.get("checkout_sha") or payload.get("after")
        urls = ("git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url")
    if not isinstance(ref, str) or not isinstance(repo, dict):
        raise InvalidRequest("The push event has no 'ref' or repository.")
    zeros = isinstance(commit, str) and set(commit) == {"0"}
    if not zeros and (not isinstance(commit, str) or not _SHA.match(commit)):
        raise InvalidRequest("The push event names no commit.", field="after")
    repositories = [str(repo[key]) for key in urls if isinstance(repo.get(key), str)]
    heads = "refs/heads/"
    return Push(
        repositories=repositories,
        branch=ref.removeprefix(heads) if ref.startswith(heads) else None,
        commit=str(commit),
        deleted=bool(payload.get("deleted")) or zeros,
    )


def _delivery_id(provider: str, headers: Mapping[str, str], push: Push) -> str:
    """The host's id for this delivery, which a re-delivery repeats."""
    name = "x-github-delivery" if provider == "github" else "x-gitlab-event-uuid"
    given = headers.get(name, "").strip()
    if given:
        return given[:128]
    return f"{push.branch}@{push.commit}"  # the same push, delivered again


def describe_hook(hook: Hook, *, base_url: str = "") -> dict[str, Any]:
    return {
        "id": hook.id,
        "name": hook.name,
        "provider": hook.provider,
        "url": f"{base_url}/hooks/{hook.id}",
        "repository": hook.repository,
        "git_url": hook.git_url,
        "branches": list(hook.branches),
        "options": dict(hook.options),
    }
