"""Running a group's smoke test on this node.

The group's images are pulled by digest and started together on a network of their
own, each reachable by its name in the group. The network is ``internal``: the
containers reach one another and nothing else. A probe container on that network
asks each image's port (an HTTP GET when a path is given, else a TCP connect), the
way its peers would. The test ends once every image had ``seconds`` to fall over and
every port answered, or at ``timeout_seconds``; then everything is removed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from docker.utils.utils import parse_repository_tag

from farm.config import Settings
from farm.errors import EngineError, FarmError, NotFound
from farm.ledger import BuildLedger
from farm.models import BuildGroup, BuildState, utcnow
from farm.smoke import BEAT_SECONDS, SmokeState, started_images
from workers.engine import ContainerSpec, EngineClient

logger = logging.getLogger(__name__)

LABEL = "farm.smoke"
NODE_LABEL = "farm.smoke.node"
POLL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 3
LOG_TAIL_LINES = 20
_STATUS_LINE = re.compile(r"^HTTP/\d(?:\.\d)? (\d{3})")

# The probe's scripts take their values as arguments, never spliced into the text.
HTTP_PROBE = (
    'printf "GET %s HTTP/1.0\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n" '
    '"$1" "$2" | nc -w "$4" "$2" "$3" | head -c 512'
)
TCP_PROBE = 'nc -w "$3" "$1" "$2" </dev/null'


@dataclass
class Service:
    """One started image and what was seen of it."""

    name: str
    build_id: str
    image: str
    port: int | None
    path: str | None
    container: str = ""
    answered: bool | None = None
    http_status: int | None = None
    exit_code: int | None = None
    stayed_up: bool = False
    detail: str = ""
    log_tail: list[str] = field(default_factory=list)

    @property
    def waiting_for_answer(self) -> bool:
        return self.port is not None and not self.answered and self.exit_code is None

    def report(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "build_id": self.build_id,
            "image": self.image,
            "port": self.port,
            "path": self.path,
            "stayed_up": self.stayed_up,
            "answered": self.answered,
            "http_status": self.http_status,
            "exit_code": self.exit_code,
            "detail": self.detail,
            "log_tail": self.log_tail,
        }


class SmokeTester:
    """Runs smoke tests on this node's engine and records their outcome."""

    def __init__(
        self, settings: Settings, ledger: BuildLedger, engine: EngineClient
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.engine = engine

    def run(self, group_id: str) -> None:
        """Run the group's test if it is queued; beat while it runs, so that a
        test whose node dies is handed to another one."""
        self.engine.ping()
        group = self.ledger.get_group(group_id)
        started_at = utcnow()
        report: dict[str, Any] = {
            "node": self.settings.worker_name,
            "started_at": started_at.isoformat(),
            "attempt": int((group.smoke_result or {}).get("attempt", 0)) + 1,
        }
        if not self.ledger.move_smoke_state(
            group_id, {SmokeState.QUEUED}, SmokeState.RUNNING, result=report
        ):
            logger.info("group=%s: smoke test not queued any more, skipped", group_id)
            return
        done = threading.Event()
        beating = threading.Thread(
            target=self._beat, args=(group_id, done), daemon=True, name="smoke-beat"
        )
        beating.start()
        try:
            services = self._test(group)
        except FarmError as exc:
            state = SmokeState.ERROR
            report["error"] = {"code": exc.code, "message": exc.message}
            logger.warning("group=%s: smoke test could not run: %s", group_id, exc)
        else:
            passed = all(s.stayed_up and s.answered is not False for s in services)
            state = SmokeState.PASSED if passed else SmokeState.FAILED
            report["images"] = [service.report() for service in services]
        finally:
            done.set()
            beating.join()
        report["finished_at"] = utcnow().isoformat()
        report["duration_seconds"] = _seconds_since(started_at)
        self.ledger.move_smoke_state(
            group_id, {SmokeState.RUNNING}, state, result=report
        )

    def _beat(self, group_id: str, done: threading.Event) -> None:
        while not done.wait(BEAT_SECONDS):
            try:
                self.ledger.touch_smoke(group_id)
            except FarmError as exc:
                logger.warning("group=%s: smoke test beat missed: %s", group_id, exc)

    def clear_leftovers(self) -> None:
        """Remove containers and networks of tests this node was killed during.

        Only those of groups this farm's database knows: another farm sharing the
        engine may have a node of the same name.
        """
        containers, networks = self.engine.labelled(
            f"{NODE_LABEL}={self.settings.worker_name}"
        )
        for container, labels in containers:
            if self._ours(labels):
                self.engine.remove_container(container)
        for network, labels in networks:
            if self._ours(labels):
                self.engine.remove_network(network)

    def _ours(self, labels: dict[str, str]) -> bool:
        try:
            self.ledger.get_group(labels.get(LABEL, ""))
        except NotFound:
            return False
        return True

    def _test(self, group: BuildGroup) -> list[Service]:
        assert group.smoke is not None
        settings = group.smoke
        services = self._services(group)
        network = f"farm-smoke-{group.id}"
        labels = {LABEL: group.id, NODE_LABEL: self.settings.worker_name}
        probe_image = self.settings.smoke_probe_image
        if self.engine.image_id(probe_image) is None:
            raise EngineError(
                f"The probe image {probe_image} is not on this node; push the base "
                "images to the farm registry (farm base-images push) and restart "
                "the worker, or set FARM_SMOKE_PROBE_IMAGE."
            )
        for service in services:
            self.engine.pull(service.image)
            if service.port is None:
                service.port = self._exposed_port(service.image)
        self.engine.create_network(network, labels=labels)
        containers: list[str] = []
        try:
            probe = self.engine.start_container(
                ContainerSpec(
                    image=probe_image,
                    name=f"{network}--probe",
                    network=network,
                    aliases=[],
                    command=["sleep", str(settings["timeout_seconds"] + 60)],
                    labels=labels,
                )
            )
            containers.append(probe)
            for service in services:
                service.container = self.engine.start_container(
                    ContainerSpec(
                        image=service.image,
                        name=f"{network}-{service.name}",
                        network=network,
                        aliases=[service.name],
                        env=settings["images"][service.name]["env"],
                        labels=labels,
                    )
                )
                containers.append(service.container)
            logger.info(
                "group=%s: smoke test started %d images on %s",
                group.id,
                len(services),
                network,
            )
            self._watch(services, probe, settings)
            for service in services:
                self._conclude(service)
        finally:
            self._clean_up(containers, network, [s.image for s in services])
        return services

    def _clean_up(self, containers: list[str], network: str, images: list[str]) -> None:
        """Remove what the test made; a failure here is logged, not raised, so it
        does not hide the test's outcome (a restarted worker clears leftovers)."""
        steps: list[tuple[Callable[[str], None], str]] = [
            (self.engine.remove_container, c) for c in containers
        ]
        steps.append((self.engine.remove_network, network))
        # Only the by-digest names go: the image stays if it is tagged or in use.
        steps.extend((self._untag, image) for image in images)
        for remove, what in steps:
            try:
                remove(what)
            except EngineError as exc:
                logger.warning("smoke test: could not remove %s: %s", what, exc)

    def _untag(self, reference: str) -> None:
        self.engine.remove_image(reference)

    def _services(self, group: BuildGroup) -> list[Service]:
        assert group.smoke is not None
        builds = {m["name"]: self.ledger.get(m["build_id"]) for m in group.members}
        services = []
        for name, image in started_images(group.smoke):
            build = builds[name]
            if build.state != BuildState.SUCCEEDED or not build.image_digest:
                raise EngineError(f"Image {name!r} has no pushed image to start.")
            repository, _ = parse_repository_tag(build.image_references[0])
            services.append(
                Service(
                    name=name,
                    build_id=build.id,
                    image=f"{repository}@{build.image_digest}",
                    port=image["port"],
                    path=image["path"],
                )
            )
        return services

    def _exposed_port(self, image: str) -> int | None:
        """The lowest TCP port the image declares with EXPOSE, if any."""
        exposed = self.engine.image_config(image).get("ExposedPorts") or {}
        ports = [
            int(key.split("/")[0])
            for key in exposed
            if key.endswith("/tcp") and key.split("/")[0].isdigit()
        ]
        return min(ports) if ports else None

    def _watch(
        self, services: list[Service], probe: str, settings: dict[str, Any]
    ) -> None:
        """Look at every service each second until it is settled or time is up."""
        started = time.monotonic()
        while True:
            for service in services:
                self._look(service, probe)
            elapsed = time.monotonic() - started
            waiting = any(service.waiting_for_answer for service in services)
            if elapsed >= settings["seconds"] and not waiting:
                return
            if elapsed >= settings["timeout_seconds"]:
                return
            time.sleep(POLL_SECONDS)

    def _look(self, service: Service, probe: str) -> None:
        if service.exit_code is not None:
            return
        state = self.engine.container_state(service.container)
        if not state.get("Running"):
            service.exit_code = int(state.get("ExitCode") or 0)
            reason = (
                "killed for using too much memory" if state.get("OOMKilled") else ""
            )
            service.detail = (
                f"exited with code {service.exit_code}"
                + (f", {reason}" if reason else "")
                + (f": {state['Error']}" if state.get("Error") else "")
            )
            return
        if service.waiting_for_answer:
            self._ask(service, probe)

    def _ask(self, service: Service, probe: str) -> None:
        assert service.port is not None
        timeout = str(PROBE_TIMEOUT_SECONDS)
        if service.path:
            _, output = self.engine.run_in(
                probe,
                ["sh", "-c", HTTP_PROBE, "probe"]
                + [service.path, service.name, str(service.port), timeout],
            )
            match = _STATUS_LINE.match(output)
            if match:
                service.http_status = int(match.group(1))
                service.answered = service.http_status < 400
                service.detail = f"GET {service.path} answered {service.http_status}"
            else:
                service.answered = False
                service.detail = _first_line(output) or "no HTTP answer"
        else:
            code, output = self.engine.run_in(
                probe,
                ["sh", "-c", TCP_PROBE, "probe", service.name, str(service.port)]
                + [timeout],
            )
            service.answered = code == 0
            service.detail = (
                f"port {service.port} accepted a connection"
                if code == 0
                else _first_line(output) or f"port {service.port} did not answer"
            )

    def _conclude(self, service: Service) -> None:
        if service.exit_code is None:
            state = self.engine.container_state(service.container)
            service.stayed_up = bool(state.get("Running"))
            if not service.stayed_up:
                service.exit_code = int(state.get("ExitCode") or 0)
                service.detail = f"exited with code {service.exit_code}"
        if service.port is None:
            service.detail = service.detail or "no port to ask: none given or exposed"
        service.log_tail = self.engine.container_logs(
            service.container, lines=LOG_TAIL_LINES
        )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def _seconds_since(moment: datetime) -> float:
    return round((utcnow() - moment).total_seconds(), 2)
