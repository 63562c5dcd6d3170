"""Run playbooks through ansible-runner; progress and results come from its events.

Ansible's stdout is never parsed: the event handler sees each task start and host result and the
final ``playbook_on_stats`` event carries the per-host recap.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xnat_fleet.errors import FleetError
from xnat_fleet.model.loader import VAULT_PASSWORD_ENV, InventorySource
from xnat_fleet.paths import project_root
from xnat_fleet.xnat.client import scrub

# Lines of ansible-runner's stdout/stderr kept when a run fails before its first task.
TAIL_LINES = 20

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
    tasks: int = 0  # tasks started (playbook_on_task_start events)
    output: list[str] = field(default_factory=list)  # output tail (scrubbed), see failed_early

    @property
    def success(self) -> bool:
        return self.rc == 0 and all(h.success for h in self.hosts.values())

    @property
    def failed_early(self) -> bool:
        """The run failed before its first task: no host result explains it, the output does
        (ansible-playbook missing, a playbook that does not parse, a limit matching no host)."""
        return not self.success and self.tasks == 0

    @property
    def cause(self) -> str:
        """The line of the output that says why the run stopped (Ansible's error, if any)."""
        for line in self.output:
            if line.startswith(("[ERROR]", "ERROR!")):
                return line
        return self.output[-1] if self.output else f"no output (rc {self.rc})"

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
        result.tasks += 1
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


def ansible_bin_dir() -> Path:
    """The directory of ``ansible-playbook``: beside the running interpreter (the virtual
    environment's bin/, also when it is not on PATH, e.g. ``.venv/bin/xnat-fleet``), else the
    one on PATH."""
    beside = Path(sys.executable).parent  # not resolved: a venv's python is a symlink
    if os.access(beside / "ansible-playbook", os.X_OK):
        return beside
    found = shutil.which("ansible-playbook")
    if found:
        return Path(found).parent
    raise FleetError(
        f"ansible-playbook not found beside {sys.executable} nor on PATH: install xnat-fleet "
        "with its dependencies into this environment (make bootstrap)"
    )


def inventory_secrets(hostvars: Mapping[str, Mapping[str, Any]], password: Path | None) -> set[str]:
    """Every secret value the inventory holds (``vault_*`` variables of every host, nested ones
    too) and the vault password (a file, not a script), for scrubbing output."""

    def strings(value: Any) -> Iterable[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list | tuple):
            for v in value:
                yield from strings(v)

    found = {
        text
        for variables in hostvars.values()
        for key, value in variables.items()
        if key.startswith("vault_")
        for text in strings(value)
        if text
    }
    if password is not None and password.is_file() and not os.access(password, os.X_OK):
        found.add(password.read_text().strip())
    return {s for s in found if s}


def _tail(path: Path, secrets: Iterable[str]) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    lines = [line.rstrip() for line in scrub(text, secrets).splitlines() if line.strip()]
    return lines[-TAIL_LINES:]


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
    secrets: Iterable[str] = (),
    tags: str | None = None,
    timeout: int | None = None,
) -> RunResult:
    """Run ``playbooks/<playbook>`` against the inventory; events feed ``on_progress``.

    ansible-runner's private directory (artifacts, stdout) is removed afterwards unless
    ``keep_dir`` names where to keep it (tests grep it for secrets). When the run fails before
    its first task, the result keeps the tail of its output with ``secrets`` scrubbed.
    """
    import ansible_runner

    root = project_root()
    secrets = [s for s in secrets if s]
    binaries = ansible_bin_dir()
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
    if tags:
        cmdline += ["--tags", tags]
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
                # ansible-playbook and its helpers from this installation, PATH or not
                "PATH": os.pathsep.join(
                    p for p in (str(binaries), os.environ.get("PATH", "")) if p
                ),
                **env,
                # ansible-runner turns host-key checking off unless told otherwise (its default
                # ANSIBLE_HOST_KEY_CHECKING=False would put StrictHostKeyChecking=no first on
                # every ssh command line): keys are always checked, real hosts and lab alike.
                "ANSIBLE_HOST_KEY_CHECKING": "True",
            },
            event_handler=handler,
            timeout=timeout,
            quiet=True,
            suppress_env_files=True,
        )
        result.status = r.status
        result.rc = int(r.rc) if r.rc is not None else -1
        if result.failed_early:
            artifacts = Path(r.config.artifact_dir)
            result.output = _tail(artifacts / "stdout", secrets) + _tail(
                artifacts / "stderr", secrets
            )
    finally:
        if keep_dir is None:
            shutil.rmtree(private, ignore_errors=True)
    return result
