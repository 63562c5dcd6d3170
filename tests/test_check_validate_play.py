"""The assertions of playbooks/validate.yml (the guard of plain `ansible-playbook` runs) hold on
every inventory that must stay valid, and catch what `check` refuses that they also cover."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DEMO_PASSWORD, EXAMPLE, ROOT, ScratchInventory

STUDY = ROOT / "molecule" / "shared" / "study"


def _assert_tasks() -> list[dict[str, Any]]:
    """validate.yml's assert tasks (not the artifact gate, which needs the controller's store)."""
    play = yaml.safe_load((ROOT / "playbooks" / "validate.yml").read_text())[0]
    block = next(t for t in play["tasks"] if "block" in t)["block"]
    tasks = [t for t in block if "ansible.builtin.assert" in t and "__fleet_artifact" not in str(t)]
    assert len(tasks) >= 5, "validate.yml changed shape: update this test"
    return tasks


def _run(tmp_path: Path, inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """ansible-playbook running validate.yml's assertions against ``inventory`` (a hosts file)."""
    playbook = tmp_path / "asserts.yml"
    playbook.write_text(
        yaml.safe_dump(
            [{"name": "asserts", "hosts": "all", "gather_facts": False, "tasks": _assert_tasks()}]
        )
    )
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(playbook), *extra],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        timeout=300,
    )


def _run_example(tmp_path: Path, inventory: Path) -> subprocess.CompletedProcess[str]:
    """The example (or a copy) with its DEMO-ONLY vault password."""
    return _run(tmp_path, inventory / "hosts.yml", "--vault-password-file", str(DEMO_PASSWORD))


def test_the_example_passes(tmp_path: Path) -> None:
    proc = _run_example(tmp_path, EXAMPLE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "hosts",
    [
        pytest.param({"central-host": {}, "relay-host": {}}, id="relay-scenario"),
        pytest.param({"central-host": {}}, id="central-scenario"),
    ],
)
def test_the_molecule_study_passes(tmp_path: Path, hosts: dict[str, Any]) -> None:
    inventory = tmp_path / "study"
    inventory.mkdir()
    for name in ("group_vars", "host_vars"):
        (inventory / name).symlink_to(STUDY / name)
    children: dict[str, Any] = {"central": {"hosts": {"central-host": {}}}}
    if "relay-host" in hosts:
        children["relays"] = {"hosts": {"relay-host": {}}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": children}}))
    proc = _run(tmp_path, inventory / "hosts.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dicom_port_104_is_refused(scratch: ScratchInventory, tmp_path: Path) -> None:
    scratch.set(
        "host_vars/relay-kings.yml", "fleet_dicom_receivers", [{"ae_title": "K", "port": 104}]
    )
    proc = _run_example(tmp_path, scratch.path)
    assert proc.returncode != 0
    assert (
        "relay-kings: fleet_dicom_receivers[0].port: port 104: XNAT's DICOM receiver needs a "
        "port in 1024-49151" in proc.stdout
    )


def test_a_pushing_relay_without_push_address_is_refused(
    scratch: ScratchInventory, tmp_path: Path
) -> None:
    scratch.delete("host_vars/relay-leeds.yml", "fleet_push_from")
    proc = _run_example(tmp_path, scratch.path)
    assert proc.returncode != 0
    assert "relay-leeds: fleet_push_from: required with fleet_sync" in proc.stdout
