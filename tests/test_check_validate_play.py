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
    assert len(tasks) >= 2, "validate.yml changed shape: update this test"
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
        "host_vars/relay-kings/site.yml", "fleet_dicom_receivers", [{"ae_title": "K", "port": 104}]
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
    scratch.delete("host_vars/relay-leeds/site.yml", "fleet_push_from")
    proc = _run_example(tmp_path, scratch.path)
    assert proc.returncode != 0
    assert "relay-leeds: fleet_push_from: required with fleet_sync" in proc.stdout


def _artifact_gate_tasks() -> list[dict[str, Any]]:
    play = yaml.safe_load((ROOT / "playbooks" / "validate.yml").read_text())[0]
    block = next(t for t in play["tasks"] if "block" in t)["block"]
    tasks = [t for t in block if "__fleet_artifact" in str(t)]
    assert len(tasks) >= 3, "validate.yml changed shape: update this test"
    return tasks


def test_the_artifact_gate_names_every_missing_or_wrong_file(tmp_path: Path) -> None:
    import hashlib
    import json

    good = tmp_path / "tomcat.tar.gz"
    good.write_bytes(b"tomcat")
    wrong = tmp_path / "xnat.war"
    wrong.write_bytes(b"not the pinned war")
    plugin = tmp_path / "plugin.jar"
    plugin.write_bytes(b"plugin")
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (good, wrong, plugin)}
    pinned_war = "0" * 64
    variables = {
        "tomcat_archive_src": str(good),
        "tomcat_archive_sha256": digest[good],
        "xnat_war_src": str(wrong),
        "xnat_war_sha256": pinned_war,
        "xnat_plugins": [{"name": "p", "src": str(plugin), "sha256": digest[plugin]}],
        "java_source": "archive",
        "java_archive_src": str(tmp_path / "absent.tar.gz"),
        "java_archive_sha256": "1" * 64,
    }
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(variables))
    playbook = tmp_path / "gate.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "gate",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": _artifact_gate_tasks(),
                }
            ]
        )
    )
    proc = subprocess.run(
        ["ansible-playbook", "-i", "probe,", "-c", "local", str(playbook), "-e", f"@{extra}"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert (
        f"probe: artifact xnat_war ({wrong}) is not the pinned file (sha256 {digest[wrong]})" in out
    )
    assert f"expected sha256 {pinned_war}" in out
    assert f"probe: artifact jdk ({tmp_path / 'absent.tar.gz'}) is missing" in out
    assert "artifact tomcat" not in out and "artifact p " not in out, out
    # All pinned files in place: the gate passes and records them as verified.
    variables.update(xnat_war_sha256=digest[wrong], java_source="package")
    extra.write_text(json.dumps(variables))
    proc = subprocess.run(
        ["ansible-playbook", "-i", "probe,", "-c", "local", str(playbook), "-e", f"@{extra}", "-v"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verified = proc.stdout.split("__fleet_verified_artifacts:", 1)[-1]
    assert digest[good] in verified and digest[plugin] in verified, proc.stdout
