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
