"""Keeping caches in bounds: each engine's build cache and the registry's stage images.

Every node prunes its own engine's build cache down to a size; one node at a time
(a lock in Redis) deletes stage cache images no build used for a number of days.
Each pass is logged and its report kept in Redis for the nodes API.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from farm.errors import FarmError
from farm.livestate import LiveState
from farm.registry import RegistryClient, split_reference
from workers.engine import EngineClient

logger = logging.getLogger(__name__)

LOCK_NAME = "cache-retention"


@dataclass(frozen=True)
class RetentionPolicy:
    """How much cache to keep."""

    engine_cache_keep_bytes: int = 20 * 1024**3
    cache_image_days: float = 14


class CacheRetention:
    """Apply a :class:`RetentionPolicy` for one node, and report what it freed."""

    def __init__(
        self,
        worker: str,
        engine: EngineClient,
        registry: RegistryClient,
        live: LiveState,
        policy: RetentionPolicy,
    ) -> None:
        self.worker = worker
        self.engine = engine
        self.registry = registry
        self.live = live
        self.policy = policy

    def run_once(self, *, lock_seconds: int = 600) -> dict[str, Any]:
        reclaimed = self.engine.prune_build_cache(
            keep_bytes=self.policy.engine_cache_keep_bytes
        )
        deleted: list[str] = []
        if self.live.hold_lock(LOCK_NAME, seconds=lock_seconds):
            deleted = self.expire_cache_images()
        report = {
            "at": time.time(),
            "engine_cache_reclaimed_bytes": reclaimed,
            "cache_images_deleted": deleted,
            "policy": {
                "engine_cache_keep_bytes": self.policy.engine_cache_keep_bytes,
                "cache_image_days": self.policy.cache_image_days,
            },
        }
        self.live.record_report("retention", self.worker, report)
        logger.info(
            "worker=%s: retention freed %d bytes of build cache, deleted %d "
            "cache images",
            self.worker,
            reclaimed,
            len(deleted),
        )
        return report

    def expire_cache_images(self) -> list[str]:
        """Delete the stage cache images no build used within the retention days.

        A manifest is deleted only when every tag known to point at it is stale:
        deleting by digest would take a fresh tag of the same image with it.
        """
        now = time.time()
        cutoff = now - self.policy.cache_image_days * 86400
        stale = self.live.cache_unused_since(cutoff)
        fresh = set(self.live.cache_unused_since(now)) - set(stale)
        # Manifests belong to a repository: the same digest elsewhere is no matter.
        kept = {(split_reference(ref)[1], self.registry.digest(ref)) for ref in fresh}
        deleted = []
        for reference in stale:
            digest = self.registry.digest(reference)
            name = split_reference(reference)[1]
            if digest and (name, digest) not in kept:
                self.registry.delete_manifest(name, digest)
                deleted.append(reference)
            self.live.forget_cache(reference)
        return deleted

    def run_forever(self, *, stop: threading.Event, interval_seconds: float) -> None:
        while not stop.wait(interval_seconds):
            try:
                self.run_once()
            except FarmError as exc:
                logger.warning(
                    "worker=%s: retention pass skipped: %s", self.worker, exc.message
                )
