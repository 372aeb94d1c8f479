"""Every benchmark in one go, then the targets they are held to.

Run: .venv/bin/python -m bench [example ...]   (make bench)
"""

from __future__ import annotations

import sys

from bench import cross_node, farm_vs_docker
from bench.farm_vs_docker import start_bench


def main() -> int:
    examples = start_bench(__doc__ or "")
    print("== the farm against docker build, one node", flush=True)
    rows = farm_vs_docker.measure(examples)
    farm_vs_docker.report(rows)
    print("\n== two nodes sharing the cache", flush=True)
    outcome = cross_node.measure(examples)
    cross_node.report(outcome)

    worst_cached = max(rows, key=lambda r: r.farm_cached - r.cached_allowance)
    parallel = outcome.at_once / outcome.one_by_one
    targets = [
        (
            "cold, farm / docker build",
            f"{farm_vs_docker.cold_ratio(rows):.2f}×",
            "≤ 1.05×",
            farm_vs_docker.cold_ratio(rows) <= 1.05,
        ),
        (
            f"cached, worst ({worst_cached.name})",
            f"{worst_cached.farm_cached:.2f} s",
            f"≤ {worst_cached.cached_allowance:.2f} s",
            worst_cached.farm_cached <= worst_cached.cached_allowance,
        ),
        (
            "cold node B with the shared cache / cold build",
            f"{outcome.cross_ratio:.2f}×",
            "≤ 0.2×",
            outcome.cross_ratio <= 0.2,
        ),
        (
            "steps cached on node B",
            f"{100 * outcome.cached_share:.0f}%",
            "≥ 95%",
            outcome.cached_share >= 0.95,
        ),
        (
            f"{cross_node.SMALL_BUILDS} builds, 2 nodes at once / 1 node in a row",
            f"{parallel:.2f}×",
            "≤ 0.6×",
            parallel <= 0.6,
        ),
    ]
    print("\n| target | measured | bound | met |\n|---|---|---|---|")
    for name, measured, bound, met in targets:
        print(f"| {name} | {measured} | {bound} | {'yes' if met else 'NO'} |")
    return 0 if all(met for *_, met in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
