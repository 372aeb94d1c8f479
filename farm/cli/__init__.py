"""The ``farm`` command: run the services, submit and follow builds.

Exit codes: 0 success; 1 the build failed or was cancelled; 2 bad usage;
3 the farm answered with an error or could not be reached; 4 a service did not start.
"""

from __future__ import annotations

import logging
import sys

import click

from farm.cli.client import cancel, logs, retry, status, submit, wait
from farm.cli.groups import group
from farm.cli.hooks import hook
from farm.cli.local import local
from farm.cli.node import base_images
from farm.cli.serve import web, worker
from farm.cli.tokens import token

EXIT_BUILD_FAILED = 1
EXIT_API_ERROR = 3
EXIT_SERVICE_FAILED = 4


@click.group()
@click.option("--verbose", "-v", is_flag=True, help="Log at DEBUG level.")
def cli(verbose: bool) -> None:
    """A container-image build farm."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for command in (
    submit,
    wait,
    status,
    logs,
    cancel,
    retry,
    group,
    token,
    hook,
    web,
    worker,
    base_images,
    local,
):
    cli.add_command(command)


def main() -> None:
    cli()
