"""The SSH enrolment of lab and molecule containers (src/xnat_fleet/container_ssh.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xnat_fleet import container_ssh
from xnat_fleet.errors import FleetError

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBLGWgp/HQs2jatD5ZPVV4AN58U6cxlUdJ2OCdvlJnZf root@a"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9lepVAA19jSnfzTiJTjHIcoxMlL90ye3Q/PvzUcrdG root@b"


def test_known_hosts_line_brackets_a_port_other_than_22() -> None:
    assert container_ssh.known_hosts_line("10.0.0.5", 22, KEY_A) == " ".join(
        ["10.0.0.5", *KEY_A.split()[:2]]
    )
    assert container_ssh.known_hosts_line("10.0.0.5", 2222, KEY_A).startswith("[10.0.0.5]:2222 ")


def test_a_recreated_container_replaces_only_its_own_entry(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    container_ssh.record_host_key(known, "10.0.0.5", 22, KEY_A)
    container_ssh.record_host_key(known, "10.0.0.6", 22, KEY_A)
    container_ssh.record_host_key(known, "10.0.0.5", 22, KEY_B)
    lines = known.read_text().splitlines()
    assert len(lines) == 2
    assert container_ssh.known_hosts_line("10.0.0.6", 22, KEY_A) in lines
    assert container_ssh.known_hosts_line("10.0.0.5", 22, KEY_B) in lines
    assert known.stat().st_mode & 0o077 == 0


def test_enrolment_script_takes_the_key_on_stdin_and_checks_sudoers() -> None:
    script = container_ssh.enrollment_script("labadmin", KEY_A, 22)
    assert KEY_A.split()[1] not in script  # the key never passes through the shell
    assert "visudo -cqf" in script
    assert "sshd_config.d" not in script
    assert "Port 2222" in container_ssh.enrollment_script("labadmin", KEY_A, 2222)


@pytest.mark.parametrize("user", ["root; rm -rf /", "Admin", "", "a" * 40])
def test_enrolment_refuses_odd_login_names(user: str) -> None:
    with pytest.raises(FleetError, match="login name"):
        container_ssh.enrollment_script(user, KEY_A, 22)


def test_enrolment_refuses_what_is_not_one_public_key() -> None:
    with pytest.raises(FleetError, match="public key"):
        container_ssh.enrollment_script("labadmin", KEY_A + "\n" + KEY_B, 22)


def test_ssh_options_check_host_keys_strictly(tmp_path: Path) -> None:
    args = container_ssh.ssh_common_args(tmp_path / "kh")
    assert "StrictHostKeyChecking=yes" in args
    assert f"UserKnownHostsFile={tmp_path / 'kh'}" in args
    assert "StrictHostKeyChecking=no" not in args
