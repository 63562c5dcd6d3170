"""The converge benchmark's per-host timings (benchmarks/converge.py), from progress events."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from xnat_fleet.runner import Progress, RunResult, summarize_events

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("converge", ROOT / "benchmarks" / "converge.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["converge"] = module
    spec.loader.exec_module(module)
    return module


def test_timings_per_host_from_task_starts_and_results(bench: ModuleType) -> None:
    now = [0.0]
    timings = bench.Timings(clock=lambda: now[0])
    for at, progress in [
        (0.0, Progress("task", "", "Gathering Facts")),
        (2.0, Progress("ok", "relay", "Gathering Facts")),
        (3.0, Progress("ok", "central", "Gathering Facts")),
        (5.0, Progress("task", "", "Install packages")),
        (6.0, Progress("changed", "relay", "Install packages")),
        (9.0, Progress("skipped", "central", "Install packages")),
        # a handler: no task start event, timed from the host's previous result
        (10.0, Progress("changed", "relay", "Restart sshd")),
        (12.0, Progress("task", "", "Only the relay")),
        (12.5, Progress("failed", "relay", "Only the relay", "boom")),
    ]:
        now[0] = at
        timings(progress)
    relay, central = timings.hosts["relay"], timings.hosts["central"]
    assert relay.tasks == 4 and relay.counts["changed"] == 2 and relay.counts["failed"] == 1
    assert relay.busy == pytest.approx(2 + 1 + 4 + 0.5)
    assert relay.wall == pytest.approx(12.5)
    assert relay.per_task == pytest.approx(7.5 / 4)
    assert central.tasks == 2 and central.counts["skipped"] == 1
    assert central.busy == pytest.approx(3 + 4) and central.wall == pytest.approx(9)


def test_table_and_json_carry_every_host_and_the_run(bench: ModuleType) -> None:
    timings = bench.Timings(clock=iter([0.0, 1.0, 2.0]).__next__)
    timings(Progress("task", "", "t"))
    timings(Progress("ok", "relay-kings", "t"))  # changed, but no_log: its event does not say
    timings(Progress("ok", "relay-kings", "handler"))
    result = summarize_events(
        [
            {"event": "playbook_on_task_start", "event_data": {"task": "t"}},
            {"event": "playbook_on_stats", "event_data": {"ok": {"relay-kings": 2},
                                                          "changed": {"relay-kings": 1}}},
        ]
    )  # fmt: skip
    result.status, result.rc = "successful", 0
    run = bench.Run("first", result, 2.0, timings)
    text = bench.table([run])
    assert "relay-kings" in text and "(run)" in text and "successful" in text
    data = run.to_dict()
    host = data["hosts"]["relay-kings"]
    assert host["tasks"] == 2 and host["changed"] == 1 and host["seconds_per_task"] == 1.0
    assert host["recap"]["changed"] == 1 and data["changed"] == 1
    assert isinstance(result, RunResult)
