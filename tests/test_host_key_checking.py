"""Host keys are always checked: no configuration of the project turns the check off."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.conftest import ROOT


def test_molecule_checks_host_keys_against_the_scenario_known_hosts() -> None:
    config = yaml.safe_load((ROOT / "molecule/shared/config.yml").read_text())
    # molecule's default ansible.cfg says host_key_checking = False: ours must say True
    assert config["provisioner"]["config_options"]["defaults"]["host_key_checking"] is True
    options = config["driver"]["ssh_connection_options"]
    assert "-o StrictHostKeyChecking=yes" in options
    assert any(
        o.startswith("-o UserKnownHostsFile=${MOLECULE_EPHEMERAL_DIRECTORY}/") for o in options
    )


def test_nothing_in_the_configuration_switches_host_key_checking_off() -> None:
    """Configuration and code (not prose, tests or comments) never turn the check off."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    scanned = [
        name
        for name in files
        if name.split("/")[0] in {"src", "roles", "molecule", "playbooks", "scripts", "inventory",
                                   ".config", "ansible.cfg", "Makefile", ".ci"}
        and (ROOT / name).is_file()
        and not name.endswith((".md", ".txt"))
    ]  # fmt: skip
    offending = re.compile(
        r"StrictHostKeyChecking=no|host_key_checking\s*[:=]\s*(false|no)\b|"
        r"HOST_KEY_CHECKING\W+False|AutoAddPolicy|UserKnownHostsFile=/dev/null",
        re.IGNORECASE,
    )
    hits = []
    for name in scanned:
        for number, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1):
            if line.strip().startswith("#"):
                continue
            hits += [f"{name}:{number}: {m.group(0)}" for m in offending.finditer(line)]
    assert len(scanned) > 50  # the scan sees the repository
    assert hits == []
