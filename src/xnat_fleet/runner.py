"""Run playbooks through ansible-runner; progress and results come from its events.

Ansible's stdout is never parsed: the event handler sees each task start and host result and the
final ``playbook_on_stats`` event carries the per-host recap.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xnat_fleet.model.loader import VAULT_PASSWORD_ENV, InventorySource
from xnat_fleet.paths import project_root

RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


@dataclass
class HostSummary:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0

    @property
    def success(self) -> bool:
        return self.failed == 0 and self.unreachable == 0


@dataclass
class RunResult:
    status: str  # ansible-runner's: successful, failed, timeout, canceled
    rc: int
    hosts: dict[str, HostSummary] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # "host: task: message"

    @property
    def success(self) -> bool:
        return self.rc == 0 and all(h.success for h in self.hosts.values())

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())


@dataclass(frozen=True)
class Progress:
    """What the event handler reports to the caller's display."""

    kind: str  # "task" | "ok" | "changed" | "failed" | "unreachable" | "skipped"
    host: str
    task: str
    message: str = ""


def _stats(data: Mapping[str, Any]) -> dict[str, HostSummary]:
    hosts: dict[str, HostSummary] = {}
    for attr, key in (
        ("ok", "ok"),
        ("changed", "changed"),
        ("failed", "failures"),
        ("unreachable", "dark"),
        ("skipped", "skipped"),
    ):
        for host, count in (data.get(key) or {}).items():
            setattr(hosts.setdefault(host, HostSummary()), attr, int(count))
    return hosts


def summarize_events(events: Sequence[Mapping[str, Any]]) -> RunResult:
    """Fold ansible-runner events into a result (also used by the live handler)."""
    result = RunResult(status="unknown", rc=-1)
    for event in events:
        _fold(result, event)
    return result


def _fold(result: RunResult, event: Mapping[str, Any]) -> Progress | None:
    name = event.get("event", "")
    data = event.get("event_data") or {}
    if name == "playbook_on_stats":
        result.hosts = _stats(data)
        return None
    if name == "playbook_on_task_start":
        return Progress("task", "", str(data.get("task", "")))
    if name in RESULT_EVENTS:
        host = str(data.get("host", ""))
        task = str(data.get("task", ""))
        kind = RESULT_EVENTS[name]
        res = data.get("res") or {}
        if kind == "ok" and res.get("changed"):
            kind = "changed"
        message = ""
        if kind in ("failed", "unreachable"):
            if data.get("ignore_errors"):
                return None
            text = str(res.get("msg") or res.get("stderr") or "")
            message = text.splitlines()[0] if text else ""
            result.failures.append(f"{host}: {task}: {message}")
        return Progress(kind, host, task, message)
    return None


def run_playbook(
    playbook: str,
    source: InventorySource,
    *,
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
    extravars: Mapping[str, Any] | None = None,
    artifact_store: Path,
    on_progress: Callable[[Progress], None] | None = None,
    keep_dir: Path | None = None,
) -> RunResult:
    """Run ``playbooks/<playbook>`` against the inventory; events feed ``on_progress``.

    ansible-runner's private directory (artifacts, stdout) is removed afterwards unless
    ``keep_dir`` names where to keep it (tests grep it for secrets).
    """
    import ansible_runner

    root = project_root()
    cmdline: list[str] = []
    password = source.vault_password()
    env: dict[str, str] = {}
    if password is not None:
        cmdline += ["--vault-password-file", str(password.resolve())]
        # The xnat_config role's engine (run on the controller) reads the same vault.
        env[VAULT_PASSWORD_ENV] = str(password.resolve())
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    result = RunResult(status="unknown", rc=-1)

    def handler(event: Mapping[str, Any]) -> bool:
        progress = _fold(result, event)
        if progress is not None and on_progress is not None:
            on_progress(progress)
        return False  # do not keep the event (or its data) on disk

    private = keep_dir or Path(tempfile.mkdtemp(prefix="xnat-fleet-run-"))
    private.mkdir(parents=True, exist_ok=True)
    try:
        r = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(root / "playbooks"),
            playbook=str(root / "playbooks" / playbook),
            inventory=[str(Path(s).resolve()) for s in source.sources],
            limit=limit,
            cmdline=" ".join(cmdline) or None,
            extravars={
                # controller-side locations the playbooks' mappings use (group_vars/all/paths.yml)
                "xnat_fleet_inventory_dir": str(source.directory.resolve()),
                "xnat_fleet_artifact_store": str(artifact_store.resolve()),
                **(extravars or {}),
            },
            envvars={
                "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
                "ANSIBLE_ROLES_PATH": str(root / "roles"),
                "ANSIBLE_FORCE_COLOR": "0",
                "ANSIBLE_NOCOLOR": "1",
                **env,
            },
            event_handler=handler,
            quiet=True,
            suppress_env_files=True,
        )
        result.status = r.status
        result.rc = int(r.rc)
    finally:
        if keep_dir is None:
            shutil.rmtree(private, ignore_errors=True)
    return result
