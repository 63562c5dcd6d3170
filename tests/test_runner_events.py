"""Progress and the per-host summary come from ansible-runner events, not from stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import EXAMPLE, ROOT, ScratchInventory, example_secrets
from xnat_fleet import runner
from xnat_fleet.errors import FleetError
from xnat_fleet.lab import lab_id
from xnat_fleet.model.loader import InventorySource
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


# -- finding Ansible, and runs that fail before their first task ------------------------------


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_ansible_playbook_is_found_beside_the_interpreter_without_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_bin = tmp_path / "venv" / "bin"
    _executable(venv_bin / "ansible-playbook")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert runner.ansible_bin_dir() == venv_bin
    # nothing beside the interpreter: PATH is the fallback
    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python"))
    on_path = _executable(tmp_path / "usr" / "bin" / "ansible-playbook").parent
    monkeypatch.setenv("PATH", str(on_path))
    assert runner.ansible_bin_dir() == on_path
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FleetError, match="ansible-playbook not found beside"):
        runner.ansible_bin_dir()


class _FakeRunner:
    def __init__(self, artifact_dir: Path) -> None:
        self.status = "failed"
        self.rc = 1
        self.config = SimpleNamespace(artifact_dir=str(artifact_dir))


def test_a_run_failing_before_its_first_task_keeps_its_output_scrubbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ansible_runner

    calls: list[dict[str, Any]] = []

    def fake_run(**kwargs: Any) -> _FakeRunner:
        calls.append(kwargs)
        artifacts = Path(kwargs["private_data_dir"]) / "artifacts" / "job"
        artifacts.mkdir(parents=True)
        (artifacts / "stdout").write_text(
            "[WARNING]: something about s3cr3t-value\n"
            "[ERROR]: the playbook could not be parsed near s3cr3t-value\n"
        )
        (artifacts / "stderr").write_text("")
        kwargs["event_handler"]({"event": "playbook_on_start", "event_data": {}})
        return _FakeRunner(artifacts)

    monkeypatch.setattr(ansible_runner, "run", fake_run)
    result = runner.run_playbook(
        "site.yml",
        InventorySource(EXAMPLE),
        artifact_store=tmp_path / "store",
        secrets=["s3cr3t-value"],
    )
    assert result.failed_early
    assert result.cause == "[ERROR]: the playbook could not be parsed near ********"
    assert not any("s3cr3t-value" in line for line in result.output)
    assert len(result.output) == 2
    # Ansible's executables come first on the run's PATH
    path = calls[0]["envvars"]["PATH"].split(os.pathsep)
    assert path[0] == str(runner.ansible_bin_dir())
    # ansible-runner would otherwise switch host-key checking off for the run
    assert calls[0]["envvars"]["ANSIBLE_HOST_KEY_CHECKING"] == "True"


def test_a_run_with_tasks_is_not_an_early_failure() -> None:
    result = summarize_events(
        [
            _event("playbook_on_task_start", task="Install packages"),
            _event("runner_on_failed", host="relay-kings", task="Install packages", res={}),
        ]
    )
    result.rc = 2
    assert result.tasks == 1
    assert not result.failed_early
    # a run that had nothing to do and succeeded did not fail at all
    assert not runner.RunResult(status="successful", rc=0).failed_early


def _toolkit_home(tmp_path: Path, inventory: Path) -> Path:
    """A toolkit home (XNAT_FLEET_HOME) whose lab overlay for the inventory adds nothing, so that
    `provision --lab` runs without containers."""
    home = tmp_path / "home"
    home.mkdir()
    for name in ("roles", "playbooks", "ansible.cfg"):
        (home / name).symlink_to(ROOT / name)
    lab = home / ".lab" / lab_id(inventory)
    lab.mkdir(parents=True)
    (lab / "lab.yml").write_text("---\nall:\n  hosts: {}\n")
    return home


def test_provision_without_the_venv_on_path_finds_ansible_and_says_why_it_stopped(
    scratch: ScratchInventory, tmp_path: Path
) -> None:
    secret = example_secrets()["vault_xnat_admin_password"]
    env = {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",  # not the virtual environment's bin/
        "XNAT_FLEET_HOME": str(_toolkit_home(tmp_path, scratch.path)),
    }
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "xnat-fleet"), "provision", "-i", str(scratch.path),
         "--lab", "--limit", secret],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out
    assert "The command was not found" not in out  # ansible-playbook ran
    assert "site.yml failed before its first task" in out
    assert "leaves us with no hosts to target" in out
    assert "Could not match supplied host pattern, ignoring: ********" in out
    assert secret not in out
    assert "provision: " not in proc.stdout  # no empty summary table
