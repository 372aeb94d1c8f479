"""Stage times worked out from a build's steps, as the runner records them."""

from datetime import UTC, datetime, timedelta

from workers.buildkit.progress import Step
from workers.runner import stage_timings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def step(stage, start, end, *, instruction="RUN x", cached=False, internal=False):
    return Step(
        digest=f"{stage}-{start}",
        stage=stage,
        instruction=instruction,
        cached=cached,
        internal=internal,
        started_at=T0 + timedelta(seconds=start),
        completed_at=T0 + timedelta(seconds=end),
    )


def test_a_stage_takes_the_time_its_own_steps_ran():
    steps = [
        step(None, 0, 9, internal=True),  # BuildKit's own work belongs to no stage
        step("build", 1, 2, instruction="FROM base"),
        step("build", 2, 6),
        step("build", 6, 7, cached=True),
        # The final stage's base is loaded at once, then it waits for the builder:
        # the wait is the builder's time, not its own.
        step("App", 0, 1, instruction="FROM runtime"),
        step("App", 7, 8, instruction="COPY --from=build /out /"),
    ]
    timings = {t.stage: t for t in stage_timings(steps, final="app")}

    assert set(timings) == {"build", "App"}
    assert timings["build"].role == "builder"
    assert timings["build"].duration_seconds == 5.0
    # FROM only names the base image: it is not counted as a build step.
    assert (timings["build"].steps_total, timings["build"].steps_cached) == (2, 1)
    assert timings["App"].role == "final"  # stage names match case-insensitively
    assert timings["App"].duration_seconds == 1.0


def test_a_stage_whose_steps_never_ran_has_no_time():
    unstarted = Step(digest="d", stage="build", instruction="RUN x", internal=False)
    assert stage_timings([unstarted], final="build") == []
