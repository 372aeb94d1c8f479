"""Hypothesis profiles for the fuzz tests.

``ci`` (the default) is bounded and derandomized: every run tries the same 300
inputs per test, so a failure in CI fails the same way on a laptop, and the folder
runs in about 20 seconds. ``long`` tries 20,000 new inputs per test on each run,
for a deeper search by hand (about 25 minutes on two cores)::

    FARM_FUZZ_PROFILE=long .venv/bin/pytest -p no:schemathesis tests/fuzz

(Without ``-p no:schemathesis`` a failure report shows blank argument values.)
Neither profile keeps a database of examples.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=20_000,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("FARM_FUZZ_PROFILE", "ci"))
