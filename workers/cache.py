"""The layer cache nodes share through the registry, one image per Dockerfile stage.

BuildKit's inline cache only describes the stage an image was built from, so a node
that never saw a project would rebuild its builder stages. After each build the farm
also builds every named stage the target depends on as an image with inline cache and
pushes it under ``farm-cache/<project>``; every build imports all of them that exist.
Keeping them per project stops one project's cache from feeding another's builds.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from farm.buildspec import CACHE_NAMESPACE, name_part, project_name
from farm.dockerfile import Dockerfile, Stage
from farm.errors import EngineError, FarmError
from farm.livestate import LiveState
from farm.models import Build
from farm.registry import RegistryClient
from workers.buildkit.progress import BuildProgress
from workers.engine import EngineClient

logger = logging.getLogger(__name__)

INLINE_CACHE_ARG = "BUILDKIT_INLINE_CACHE"
# COPY --from=x and RUN --mount=...,from=x name another stage (Dockerfile reference).
_FROM_FLAG = re.compile(r"(?:--from=|[,\s]from=)([A-Za-z0-9_.-]+)")


def project_key(build: Build) -> str:
    """The namespace a build's cache lives in: its project (farm.buildspec); for an
    upload, within it, who sent it. A repository's content is the same for everyone
    who builds it, but an upload is only as trusted as its sender, and BuildKit's
    cache keys say which steps ran, not what they made."""
    project = build.project or project_name(
        build.git_url if build.source_kind == "git" else None, build.tags or []
    )
    if build.source_kind != "git" and build.submitted_by:
        return f"{project}/from-{name_part(build.submitted_by)}"
    return project


@dataclass(frozen=True)
class CachePlan:
    """Where each stage's cache image of one build lives in the registry."""

    stage_refs: dict[str, str]
    final_ref: str
    target: str | None = None

    @property
    def refs(self) -> list[str]:
        return [*self.stage_refs.values(), self.final_ref]

    @property
    def exports(self) -> list[tuple[str | None, str]]:
        """(target, reference) pairs to build with inline cache, final stage last."""
        return [*self.stage_refs.items(), (self.target, self.final_ref)]


def plan_cache(build: Build, dockerfile: Dockerfile, registry: str) -> CachePlan:
    """Cache references for the named stages the target needs, and for the target."""
    # Two Dockerfiles in one repository may both have a stage called "build".
    path = f"{build.context}/{build.dockerfile}"
    suffix = hashlib.sha256(path.encode()).hexdigest()[:8]
    repository = f"{registry}/{CACHE_NAMESPACE}/{project_key(build)}"
    target = dockerfile.stage(build.target) if build.target else None
    final = target or dockerfile.stages[-1]
    needed = stages_needed(dockerfile, final) - {final.index}
    named = [s.name for s in dockerfile.stages if s.index in needed and s.name]
    return CachePlan(
        stage_refs={name: f"{repository}:{name}-{suffix}" for name in named},
        final_ref=f"{repository}:{final.name or 'final'}-{suffix}",
        target=build.target,
    )


def stages_needed(dockerfile: Dockerfile, stage: Stage) -> set[int]:
    """Indexes of ``stage`` and every stage it builds on or copies from."""
    needed: set[int] = set()
    pending = [stage]
    while pending:
        current = pending.pop()
        if current.index in needed:
            continue
        needed.add(current.index)
        pending += [dockerfile.stages[i] for i in _stage_sources(dockerfile, current)]
    return needed


def _stage_sources(dockerfile: Dockerfile, stage: Stage) -> list[int]:
    names = [stage.base_image]
    for instruction in stage.instructions:
        names += _FROM_FLAG.findall(instruction.args)
    found = []
    for name in names:
        source = _stage_by_name_or_index(dockerfile, name)
        if source is not None and source.index < stage.index:
            found.append(source.index)
    return found


def _stage_by_name_or_index(dockerfile: Dockerfile, name: str) -> Stage | None:
    if name.isdigit() and int(name) < len(dockerfile.stages):
        return dockerfile.stages[int(name)]
    return dockerfile.stage(name)


class StageCache:
    """Import a project's stage cache images into a build, and export them after."""

    def __init__(
        self,
        engine: EngineClient,
        registry: RegistryClient,
        live: LiveState,
        *,
        pull_first: bool = False,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.live = live
        # The engine's builder reads a registry off loopback over HTTPS only, even
        # one the engine itself reaches over plain HTTP (--insecure-registry); it
        # reads cache images the engine already holds, so those are pulled first.
        self.pull_first = pull_first

    def available(self, plan: CachePlan) -> list[str]:
        """The plan's cache images that the registry has (BuildKit fails on others),
        pulled into the engine where its builder could not read them remotely."""
        found = [ref for ref in plan.refs if self.registry.has_tag(ref)]
        if self.pull_first:
            found = [ref for ref in found if self._pulled(ref)]
        self.live.mark_cache_used(found)
        return found

    def _pulled(self, ref: str) -> bool:
        try:
            self.engine.pull(ref)
        except EngineError as exc:
            logger.warning("cache=%s: not pulled, left out: %s", ref, exc.message)
            return False
        return True

    def export(
        self,
        plan: CachePlan,
        context: IO[bytes],
        *,
        dockerfile: str,
        build_args: Mapping[str, str],
        cache_from: Sequence[str],
        log: Callable[[list[str]], None],
    ) -> dict[str, int]:
        """Build each needed stage as an image with inline cache and push it;
        return the size of each named stage's image (a builder stage's size).

        The main build just ran, so every stage is in the engine's local cache and
        these builds only assemble images; a failure here never fails the build.
        The image users get carries no cache metadata, so the same inputs keep
        giving the same digest.
        """
        sizes: dict[str, int] = {}
        for target, ref in plan.exports:
            started = time.monotonic()
            context.seek(0)
            try:
                self.engine.build(
                    context,
                    dockerfile=dockerfile,
                    tags=[ref],
                    target=target,
                    build_args={**build_args, INLINE_CACHE_ARG: "1"},
                    cache_from=cache_from,
                    progress=BuildProgress(),
                )
                self.engine.push(ref)
                if target is not None and ref != plan.final_ref:
                    sizes[target] = self.engine.image_size(ref)
            except FarmError as exc:
                log([f"Cache: could not export {ref}: {exc.message}"])
                continue
            self.live.mark_cache_used([ref])
            log([f"Cache: exported {ref} in {time.monotonic() - started:.1f}s"])
        return sizes
