"""A PostgreSQL cluster of our own on loopback, for the several-node setup."""

from __future__ import annotations

import glob
import shutil
import subprocess

import sqlalchemy

from farm.local.process import (
    LocalService,
    ServiceProcess,
    ServiceStartError,
    wait_until,
)

OWNER = "postgres"


def postgres_bin(name: str) -> str:
    """Debian keeps the server binaries out of PATH, under a versioned folder."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise FileNotFoundError(f"{name} not found; install Debian's postgresql")
    return found


class LocalPostgres(LocalService):
    """Initialise and start a cluster in ``data_dir`` owned by the postgres user."""

    @property
    def url(self) -> str:
        return f"postgresql://{OWNER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        cluster = self.data_dir / "cluster"
        if not (cluster / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            shutil.chown(self.data_dir, OWNER, OWNER)
            done = subprocess.run(
                [
                    "runuser",
                    "-u",
                    OWNER,
                    "--",
                    postgres_bin("initdb"),
                    "-D",
                    str(cluster),
                    "-A",
                    "trust",
                    "-U",
                    OWNER,
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise ServiceStartError(f"initdb failed: {done.stderr.strip()}")
        argv = [
            postgres_bin("postgres"),
            "-D",
            str(cluster),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.data_dir}",
        ]
        log = self.data_dir / "postgres.log"
        self.process = ServiceProcess(
            f"postgres-{self.port}", argv, log_path=log, user=OWNER
        )
        self.process.start()
        wait_until(self._answers, timeout_seconds=30, what="postgres", log_path=log)

    def _answers(self) -> bool:
        engine = sqlalchemy.create_engine(
            self.url.replace("postgresql://", "postgresql+psycopg://")
        )
        try:
            with engine.connect() as connection:
                return connection.execute(sqlalchemy.text("select 1")).scalar() == 1
        except sqlalchemy.exc.OperationalError:
            return False
        finally:
            engine.dispose()
