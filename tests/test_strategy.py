"""The project's Ansible strategy: Mitogen, with every module run in a fresh fork by default.

Probe: a command module reports its parent's PID, which is the process the module ran in. Under
``xnat_fleet_linear`` two tasks run in two different forks of the host's Mitogen interpreter;
with the isolation switched off for the host they share that one interpreter (which shows that
Mitogen, not Ansible's own strategy, ran them, so the first check is not trivially true).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PLAYBOOK = """\
- name: Probe the process each module runs in
  hosts: probe
  gather_facts: false
  tasks:
    - name: First module
      ansible.builtin.command: sh -c 'echo $PPID'
      register: first
      changed_when: false
    - name: Second module
      ansible.builtin.command: sh -c 'echo $PPID'
      register: second
      changed_when: false
    - name: Report
      ansible.builtin.copy:
        content: "{{ {'first': first.stdout, 'second': second.stdout} | to_json }}"
        dest: "{{ report }}"
        mode: "0600"
      delegate_to: localhost
"""


def _module_parents(tmp_path: Path, *extra: str, strategy: str | None = None) -> dict[str, str]:
    playbook = tmp_path / "probe.yml"
    playbook.write_text(PLAYBOOK)
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    if strategy:
        env["ANSIBLE_STRATEGY"] = strategy
    # The test's own virtual environment: its ansible-playbook, and its Python for the host
    python = Path(sys.executable)
    subprocess.run(
        [
            str(python.parent / "ansible-playbook"),
            "-i",
            "probe,",
            "-e",
            f"ansible_connection=local ansible_python_interpreter={python} report={report}",
            *extra,
            str(playbook),
        ],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, str] = json.loads(report.read_text())
    return result


def test_the_default_strategy_is_mitogen_with_forked_modules(tmp_path: Path) -> None:
    parents = _module_parents(tmp_path)
    assert parents["first"] != parents["second"], parents


def test_without_the_isolation_mitogen_runs_modules_in_one_interpreter(tmp_path: Path) -> None:
    parents = _module_parents(tmp_path, "-e", "mitogen_task_isolation=none")
    assert parents["first"] == parents["second"], parents


def test_ansible_strategy_linear_still_selects_ansibles_own(tmp_path: Path) -> None:
    # The escape hatch documented in docs/mitogen.md: each module is its own process again,
    # even with the isolation switched off.
    parents = _module_parents(tmp_path, "-e", "mitogen_task_isolation=none", strategy="linear")
    assert parents["first"] != parents["second"], parents
