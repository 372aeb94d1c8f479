"""A container registry of our own (Debian's docker-registry) on loopback."""

from __future__ import annotations

import urllib.request

from farm.local.process import LocalService, ServiceProcess, wait_until

CONFIG_TEMPLATE = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def registry_answers(address: str) -> bool:
    with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as response:
        return response.status == 200


class LocalRegistry(LocalService):
    """Start the CNCF distribution registry with storage in ``data_dir``."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        storage = self.data_dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "config.yml"
        config.write_text(CONFIG_TEMPLATE.format(root=storage, port=self.port))
        log = self.data_dir / "registry.log"
        self.process = ServiceProcess(
            f"registry-{self.port}",
            ["docker-registry", "serve", str(config)],
            log_path=log,
        )
        self.process.start()
        wait_until(
            lambda: registry_answers(self.address),
            timeout_seconds=20,
            what="registry",
            log_path=log,
        )
