"""The alerts and recording rules in deploy/monitoring/farm-rules.yml: promtool runs
their unit tests, every alert is a signal compared with a number, and no rule goes
untested."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

MONITORING = Path(__file__).resolve().parent.parent / "deploy" / "monitoring"
RULES = MONITORING / "farm-rules.yml"
RULE_TESTS = MONITORING / "farm-rules.test.yml"

# `<signal> <op> <number>`: the last comparison, against a plain number.
ALERT_SHAPE = re.compile(
    r"(?P<signal>.+)\s(?P<op>==|!=|>=|<=|>|<)\s*"
    r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
)
# Operators that bind no tighter than the final comparison (PromQL precedence): if
# one stood outside brackets in the signal, the comparison would take only part of it.
LOOSE_OPERATORS = re.compile(r"==|!=|>=|<=|>|<|\b(?:and|or|unless)\b")


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in rules() if "alert" in rule]


def alert_signal(rule: dict[str, Any]) -> str:
    """The signal part of an alert's ``<signal> <op> <number>``."""
    shape = ALERT_SHAPE.fullmatch(" ".join(rule["expr"].split()))
    assert shape, f"{rule['alert']}: {rule['expr']!r} is not `<signal> <op> <number>`"
    return shape["signal"]


def rule_tests() -> list[dict[str, Any]]:
    return yaml.safe_load(RULE_TESTS.read_text())["tests"]


def outside_brackets(expr: str) -> str:
    """The text of expr outside (), {} and [] and outside quoted strings."""
    depth, quote, kept = 0, "", []
    for char in expr:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'`":
            quote = char
        elif char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
        elif depth == 0:
            kept.append(char)
    assert depth == 0 and not quote, f"unbalanced: {expr!r}"
    return "".join(kept)


def test_promtool_passes_the_rules_unit_tests():
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make install` adds Debian's prometheus"
    done = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "rule", [r for r in rules() if "alert" in r], ids=lambda rule: rule["alert"]
)
def test_every_alert_compares_one_signal_with_a_number(rule):
    loose = LOOSE_OPERATORS.search(outside_brackets(alert_signal(rule)))
    assert not loose, f"{rule['alert']}: bracket the signal before {loose[0]!r}"


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not():
    fired, quiet = set(), set()
    for group in rule_tests():
        for case in group.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = set(alert_names())
    assert alerts - fired == set(), "alerts no unit test fires"
    assert alerts - quiet == set(), "alerts no unit test keeps quiet"
    assert (fired | quiet) - alerts == set(), "unit tests of alerts that do not exist"


def test_every_recording_rule_has_a_value_checked_by_a_unit_test():
    checked = " ".join(
        case["expr"]
        for group in rule_tests()
        for case in group.get("promql_expr_test", [])
    )
    for name in (rule["record"] for rule in rules() if "record" in rule):
        assert re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", checked), name


def test_the_shape_check_tells_a_signal_from_part_of_one():
    assert ALERT_SHAPE.fullmatch("(a and on (n) b == 1) == 0")
    assert not ALERT_SHAPE.fullmatch("a > bool 1")
    part = ALERT_SHAPE.fullmatch("a and on (n) b == 0")
    assert part and LOOSE_OPERATORS.search(outside_brackets(part["signal"]))
    assert outside_brackets('sum by (q) (x{s=~"a|b"}[5m]) / y') == "sum by   / y"
