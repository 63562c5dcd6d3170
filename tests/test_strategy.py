"""The project's Ansible strategy: Mitogen, with modules isolated by kind and their scans cached.

Probe: a module reports the process it ran in (a command module its shell's parent, the probe
module its own PID). Under ``xnat_fleet_linear`` ansible-core's command module runs in the host's
long-lived Mitogen interpreter (one process for both tasks, which also shows that Mitogen, not
Ansible's own strategy, ran them), while any other module runs in a fresh fork each time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT

PLAYBOOK = """\
- name: Probe the process each module runs in
  hosts: probe
  gather_facts: false
  tasks:
    - name: First command
      ansible.builtin.command: sh -c 'echo $PPID'
      register: first
      changed_when: false
    - name: Second command
      ansible.builtin.command: sh -c 'echo $PPID'
      register: second
      changed_when: false
    - name: First probe module
      pid_probe:
      register: first_probe
    - name: Second probe module
      pid_probe:
      register: second_probe
    - name: Report
      ansible.builtin.copy:
        content: >-
          {{ {'first': first.stdout, 'second': second.stdout,
              'first_probe': first_probe.pid, 'second_probe': second_probe.pid} | to_json }}
        dest: "{{ report }}"
        mode: "0600"
      delegate_to: localhost
"""

# A module outside the strategy's in-process list: it reports the PID it runs in.
PROBE_MODULE = """\
import os
from ansible.module_utils.basic import AnsibleModule

AnsibleModule(argument_spec={}).exit_json(changed=False, pid=os.getpid())
"""


def _module_processes(tmp_path: Path, *extra: str, strategy: str | None = None) -> dict[str, int]:
    playbook = tmp_path / "probe.yml"
    playbook.write_text(PLAYBOOK)
    (tmp_path / "library").mkdir(exist_ok=True)
    (tmp_path / "library" / "pid_probe.py").write_text(PROBE_MODULE)
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_LIBRARY"] = str(tmp_path / "library")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
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
    return {k: int(v) for k, v in json.loads(report.read_text()).items()}


def test_the_default_forks_every_module_but_ansible_cores_own(tmp_path: Path) -> None:
    seen = _module_processes(tmp_path)
    assert seen["first"] == seen["second"], seen
    assert seen["first_probe"] != seen["second_probe"], seen
    assert seen["first"] not in (seen["first_probe"], seen["second_probe"]), seen
    # The scans Mitogen made for the run are kept for the next one.
    assert list((tmp_path / "cache" / "xnat-fleet" / "mitogen-module-deps").glob("*.json"))


def test_a_host_that_asks_for_forks_gets_them_for_every_module(tmp_path: Path) -> None:
    seen = _module_processes(tmp_path, "-e", "mitogen_task_isolation=fork")
    assert seen["first"] != seen["second"], seen
    assert seen["first_probe"] != seen["second_probe"], seen


def test_without_the_isolation_mitogen_runs_modules_in_one_interpreter(tmp_path: Path) -> None:
    seen = _module_processes(tmp_path, "-e", "mitogen_task_isolation=none")
    assert seen["first"] == seen["second"] == seen["first_probe"] == seen["second_probe"], seen


def test_ansible_strategy_linear_still_selects_ansibles_own(tmp_path: Path) -> None:
    # The escape hatch documented in docs/mitogen.md: each module is its own process again,
    # even with the isolation switched off.
    seen = _module_processes(tmp_path, "-e", "mitogen_task_isolation=none", strategy="linear")
    assert seen["first"] != seen["second"], seen
    assert seen["first_probe"] != seen["second_probe"], seen


@pytest.fixture(scope="module")
def strategy() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "xnat_fleet_linear_under_test", ROOT / "plugins" / "strategy" / "xnat_fleet_linear.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_in_process_list_holds_only_ansible_cores_modules(strategy: ModuleType) -> None:
    assert strategy.task_isolation("ansible.builtin.template") == "none"
    assert strategy.task_isolation("ansible.builtin.apt") == "fork"
    assert strategy.task_isolation("community.crypto.openssl_privatekey") == "fork"
    assert all(a.startswith("ansible.builtin.") for a in strategy.IN_PROCESS_ACTIONS)


class _CountingScan:
    def __init__(self, resolved: list[tuple[str, str, bool]]) -> None:
        self.resolved = resolved
        self.calls = 0

    def __call__(self, name: str, path: str, search: object) -> list[tuple[str, str, bool]]:
        self.calls += 1
        return list(self.resolved)


def _scan_setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    module = tmp_path / "mod.py"
    module.write_text("import ansible.module_utils.basic\n")
    util = tmp_path / "utils" / "basic.py"
    util.parent.mkdir()
    util.write_text("X = 1\n")
    return module, util, tmp_path / "cache"


def test_a_scan_is_reused_while_its_inputs_are_unchanged(
    strategy: ModuleType, tmp_path: Path
) -> None:
    module, util, cache = _scan_setup(tmp_path)
    scan = _CountingScan([("ansible.module_utils.basic", str(util), False)])
    cached = strategy.cached_scan(scan, lambda: cache)
    first = cached("ansible_module_mod", str(module), (str(util.parent),))
    second = cached("ansible_module_mod", str(module), (str(util.parent),))
    assert first == second == scan.resolved
    assert scan.calls == 1
    # Another search path is another scan.
    cached("ansible_module_mod", str(module), (str(tmp_path),))
    assert scan.calls == 2


def test_a_changed_dependency_or_a_corrupt_entry_is_scanned_again(
    strategy: ModuleType, tmp_path: Path
) -> None:
    module, util, cache = _scan_setup(tmp_path)
    scan = _CountingScan([("ansible.module_utils.basic", str(util), False)])
    cached = strategy.cached_scan(scan, lambda: cache)
    args = ("ansible_module_mod", str(module), (str(util.parent),))
    cached(*args)
    util.write_text("X = 2  # changed\n")
    assert cached(*args) == scan.resolved
    assert scan.calls == 2
    for entry in cache.glob("*.json"):
        entry.write_text('{"key": ')  # a partial write
    assert cached(*args) == scan.resolved
    assert scan.calls == 3
    assert cached(*args) == scan.resolved
    assert scan.calls == 3  # the entry was written again


def test_an_unwritable_cache_costs_only_the_scan(strategy: ModuleType, tmp_path: Path) -> None:
    module, util, _ = _scan_setup(tmp_path)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    scan = _CountingScan([("ansible.module_utils.basic", str(util), False)])
    cached = strategy.cached_scan(scan, lambda: blocker / "cache")
    assert cached("ansible_module_mod", str(module), ()) == scan.resolved
    assert cached("ansible_module_mod", str(module), ()) == scan.resolved
    assert scan.calls == 2


def test_a_play_starts_with_what_is_alive_frozen(
    strategy: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    parsed = [[i] for i in range(1000)]  # stands for the parsed playbook
    seen: list[int] = []
    monkeypatch.setattr(
        strategy._MitogenLinear,
        "run",
        lambda self, iterator, ctx: seen.append(gc.get_freeze_count()),
    )
    gc.unfreeze()
    try:
        strategy.StrategyModule.run(object.__new__(strategy.StrategyModule), None, None)
    finally:
        gc.unfreeze()
    assert seen and seen[0] >= len(parsed), seen
