"""A Redis server of our own, on loopback, with its data in one folder."""

from __future__ import annotations

import redis

from farm.local.process import LocalService, ServiceProcess, wait_until


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class LocalRedis(LocalService):
    """Start ``redis-server`` bound to 127.0.0.1 with append-only persistence."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--protected-mode",
            "yes",
        ]
        log = self.data_dir / "redis.log"
        self.process = ServiceProcess(f"redis-{self.port}", argv, log_path=log)
        self.process.start()
        wait_until(
            lambda: redis_answers(self.url),
            timeout_seconds=20,
            what="redis",
            log_path=log,
        )
