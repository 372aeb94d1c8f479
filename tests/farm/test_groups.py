import pytest

from farm.groups import group_state
from farm.models import Build


@pytest.mark.parametrize(
    "states, expected",
    [
        (["queued", "queued"], "queued"),
        (["queued", "running"], "running"),
        (["succeeded", "running"], "running"),
        (["succeeded", "failed"], "failed"),
        (["failed", "queued"], "running"),
        (["cancelled", "succeeded"], "cancelled"),
        (["succeeded", "succeeded"], "succeeded"),
    ],
)
def test_group_state_reads_as_a_whole(states, expected):
    assert group_state([Build(state=state) for state in states]) == expected


@pytest.mark.parametrize(
    "smoke, expected",
    [
        ("pending", "testing"),
        ("running", "testing"),
        ("passed", "succeeded"),
        ("failed", "failed"),
        ("error", "failed"),
        (None, "succeeded"),
    ],
)
def test_a_smoke_test_is_part_of_the_whole(smoke, expected):
    builds = [Build(state="succeeded"), Build(state="succeeded")]
    assert group_state(builds, smoke) == expected


def test_a_failed_build_wins_over_a_skipped_smoke_test():
    builds = [Build(state="succeeded"), Build(state="failed")]
    assert group_state(builds, "skipped") == "failed"
