"""`xnat-fleet check` never touches the network and never changes the inventory."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from tests.conftest import ScratchInventory
from xnat_fleet.cli import cli


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# Python's audit events for every way to reach the network, DNS included.
NETWORK_EVENTS = {
    "socket.connect",
    "socket.sendto",
    "socket.sendmsg",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyaddr",
    "socket.getnameinfo",
}
_recording: list[list[Any]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recording and event in NETWORK_EVENTS:
        _recording[-1].append((event, args))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only inside the test


def test_check_makes_no_connection_and_changes_nothing(scratch: ScratchInventory) -> None:
    # Importing Ansible runs a self-test of its getaddrinfo patch on the literal 127.0.0.1
    # (ansible/module_utils/_internal/_patches/_socket_patch.py): no traffic, and not part of
    # what check does, so Ansible is imported before recording starts.
    import ansible.inventory.manager
    import ansible.template  # noqa: F401

    attempts: list[Any] = []
    before = _digest(scratch.path)
    _recording.append(attempts)
    try:
        result = CliRunner().invoke(cli, ["check", "-i", str(scratch.path)])
    finally:
        _recording.pop()
    assert result.exit_code == 0, result.output
    assert "study PRISM is valid" in result.output
    assert attempts == []
    assert _digest(scratch.path) == before


def test_check_of_an_invalid_inventory_changes_nothing(scratch: ScratchInventory) -> None:
    scratch.set("host_vars/relay-kings/site.yml", "fleet_hardware", "laptop")
    before = _digest(scratch.path)
    result = CliRunner().invoke(cli, ["check", "-i", str(scratch.path)])
    assert result.exit_code == 3
    assert _digest(scratch.path) == before


def test_wrong_vault_password_is_one_clear_error(scratch: ScratchInventory, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    result = CliRunner().invoke(
        cli, ["check", "-i", str(scratch.path), "--vault-password-file", str(wrong)]
    )
    assert result.exit_code != 0
    assert (
        "Decryption failed" in str(result.exception) or "decrypt" in str(result.exception).lower()
    )
