"""`xnat-fleet check` on inventory files that are not valid YAML: every file named with its line
and column, exit code 3, nothing changed, no Ansible noise."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import ScratchInventory, demo_vault
from tests.test_check_offline import _digest


def _check(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["xnat-fleet", "check", "-i", str(inventory), *extra],
        capture_output=True,
        text=True,
        check=False,
    )


def _append(inv: ScratchInventory, rel: str, text: str) -> int:
    """Append ``text`` to a file; the number of the first appended line."""
    f = inv.path / rel
    first = len(f.read_text().splitlines()) + 1
    with f.open("a") as fh:
        fh.write(text)
    return first


def test_syntax_errors_name_every_file_line_and_column(scratch: ScratchInventory) -> None:
    kings = _append(scratch, "host_vars/relay-kings/site.yml", "broken: value: here\n")
    (scratch.path / "hosts.yml").write_text("---\nall:\n  children:\n    central: [\n")
    relays = _append(scratch, "group_vars/relays/relay.yml", "fleet_plugins: [xsync]\n")
    before = _digest(scratch.path)
    proc = _check(scratch.path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    p = scratch.path
    lines = proc.stderr.splitlines()
    assert (
        f"error: {p}/host_vars/relay-kings/site.yml:{kings}:14: YAML syntax error: mapping values "
        "are not allowed here" in lines
    )
    assert any(line.startswith(f"error: {p}/hosts.yml:5:1: YAML syntax error: ") for line in lines)
    assert (
        f"error: {p}/group_vars/relays/relay.yml:{relays}:1: YAML syntax error: key "
        "'fleet_plugins' is given twice in one mapping" in lines
    )
    assert lines[-1] == f"error: 3 YAML error(s) in {p}; nothing was changed"
    assert "Traceback" not in proc.stderr
    assert "[WARNING]" not in proc.stderr  # Ansible never got to parse (and warn about) it
    assert _digest(scratch.path) == before


def test_syntax_error_in_a_vault_encrypted_file_names_its_decrypted_line(
    scratch: ScratchInventory,
) -> None:
    vault_file = scratch.path / "group_vars/all/vault.yml"
    vault = demo_vault()
    plain = vault.decrypt(vault_file.read_bytes()).decode()
    line = len(plain.splitlines()) + 1
    vault_file.write_bytes(vault.encrypt((plain + "vault_broken: [unclosed\n").encode()))
    proc = _check(scratch.path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"{vault_file}:{line + 1}:1: YAML syntax error: " in proc.stderr
    assert f"(in the decrypted file: ansible-vault edit {vault_file})" in proc.stderr
    assert "unclosed" not in proc.stderr  # the decrypted text itself is not shown


def test_broken_settings_file_is_listed_with_the_other_errors(scratch: ScratchInventory) -> None:
    (scratch.path / "xnat-fleet.yml").write_text("---\nvault_password_file: [oops\n")
    leeds = _append(scratch, "host_vars/relay-leeds/site.yml", "- a list item in a mapping\n")
    proc = _check(scratch.path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"{scratch.path}/xnat-fleet.yml:3:1: YAML syntax error: " in proc.stderr
    assert f"{scratch.path}/host_vars/relay-leeds/site.yml:{leeds}:1: YAML syntax error: " in (
        proc.stderr
    )


def test_json_report_lists_the_syntax_errors(scratch: ScratchInventory) -> None:
    kings = _append(scratch, "host_vars/relay-kings/site.yml", "broken: value: here\n")
    proc = _check(scratch.path, "--json")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["valid"] is False
    assert [p["message"] for p in report["problems"]] == [
        f"{scratch.path}/host_vars/relay-kings/site.yml:{kings}:14: YAML syntax error: mapping "
        "values are not allowed here"
    ]
