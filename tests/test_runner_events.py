"""Progress and the per-host summary come from ansible-runner events, not from stdout."""

from __future__ import annotations

from typing import Any

from xnat_fleet.runner import summarize_events


def _event(name: str, **data: Any) -> dict[str, Any]:
    return {"event": name, "event_data": data}


def test_summary_from_stats_event_and_failures_from_results() -> None:
    events = [
        _event("playbook_on_task_start", task="Install packages"),
        _event("runner_on_ok", host="relay-kings", task="Install packages", res={"changed": True}),
        _event(
            "runner_on_failed",
            host="relay-leeds",
            task="Install packages",
            res={"msg": "No package matching 'nonexistent'\nsecond line"},
        ),
        _event(
            "runner_on_failed",
            host="relay-leeds",
            task="Probe",
            ignore_errors=True,
            res={"msg": "ignored"},
        ),
        _event(
            "runner_on_unreachable",
            host="xnat-central",
            task="Gathering Facts",
            res={"msg": "ssh: timeout"},
        ),
        _event(
            "playbook_on_stats",
            ok={"relay-kings": 5, "relay-leeds": 2},
            changed={"relay-kings": 1},
            failures={"relay-leeds": 1},
            dark={"xnat-central": 1},
            skipped={"relay-kings": 3},
        ),
    ]
    result = summarize_events(events)
    assert result.hosts["relay-kings"].changed == 1
    assert result.hosts["relay-kings"].skipped == 3
    assert result.hosts["relay-kings"].success
    assert not result.hosts["relay-leeds"].success
    assert result.hosts["xnat-central"].unreachable == 1
    assert result.failures == [
        "relay-leeds: Install packages: No package matching 'nonexistent'",
        "xnat-central: Gathering Facts: ssh: timeout",
    ]
    assert result.changed == 1
