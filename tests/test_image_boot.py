"""Boot test: the golden NUC image (`xnat-fleet image build`, tests/image_fixtures.py) boots
under QEMU (TCG, OVMF) through its own systemd-boot to a login prompt with no failed unit and no
console prompt; its first boot made a machine id and SSH host keys; the second boot of the same
disk is not a first boot. QEMU and OVMF come from the bootstrap: if they are missing the test
fails, it never skips.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from xnat_fleet.image import audit, qemu
from xnat_fleet.image import build as build_lib

pytestmark = pytest.mark.image
# A NUC relay has 16-32 GiB; the postgresql role sizes shared_buffers for it (1 GiB), so the
# guest gets enough for PostgreSQL to start (Tomcat does not run in a golden image).
MEMORY_MIB = 3072


def _journal(root: audit.RootFs, into: Path) -> list[dict[str, object]]:
    machine_id = (root.read("/etc/machine-id") or b"").decode().strip()
    journal = root.dump(f"/var/log/journal/{machine_id}", into)
    out = subprocess.run(
        ["journalctl", "--directory", str(journal), "-o", "json", "--no-pager"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def _failures(entries: list[dict[str, object]]) -> list[str]:
    return sorted(
        {
            f"{e.get('UNIT')}: {e.get('MESSAGE')}"
            for e in entries
            if "UNIT_RESULT" in e or e.get("JOB_RESULT") in ("failed", "dependency", "timeout")
        }
    )


@pytest.fixture
def disk(golden: build_lib.BuildResult, tmp_path: Path) -> Path:
    """A sparse copy of the golden image (booting writes to its disk; the golden one stays)."""
    missing = qemu.requirements()
    assert not missing, f"QEMU/OVMF missing (make bootstrap installs them): {missing}"
    raw = golden.directory / f"{golden.image_id}-{golden.image_version}.raw"
    copy = tmp_path / raw.name
    subprocess.run(["cp", "--sparse=always", str(raw), str(copy)], check=True)
    return copy


def test_two_boots_first_boot_then_not(disk: Path, tmp_path: Path) -> None:
    first = qemu.boot(disk, tmp_path, memory_mib=MEMORY_MIB)
    assert "systemd-boot" in first.console or "Boot0002" in first.console
    root = audit.RootFs(disk, tmp_path / "r1")
    machine_id = (root.read("/etc/machine-id") or b"").decode().strip()
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id), machine_id
    keys = sorted(n for n in root.names("/etc/ssh") if n.startswith("ssh_host_"))
    assert "ssh_host_ed25519_key" in keys and "ssh_host_ed25519_key.pub" in keys
    # Complete keys only (an interrupted ssh-keygen leaves ssh_host_rsa_key.XXXXXX).
    assert all(re.fullmatch(r"ssh_host_(rsa|ecdsa|ed25519)_key(\.pub)?", k) for k in keys), keys
    pub = root.read("/etc/ssh/ssh_host_ed25519_key.pub")
    entries = _journal(root, tmp_path / "j1")
    root.close()
    assert _failures(entries) == []
    messages = [str(e.get("MESSAGE", "")) for e in entries]
    assert any("Reached target multi-user.target" in m for m in messages)
    assert any(
        str(e.get("UNIT")) == "xnat-fleet-ssh-keygen.service"
        and "Finished" in str(e.get("MESSAGE"))
        for e in entries
    )
    assert any(
        str(e.get("UNIT")) == "ssh.service" and "Started" in str(e.get("MESSAGE")) for e in entries
    )

    # The relay's own snakeoil key is made before PostgreSQL, which starts on it; Tomcat (XNAT)
    # is not started by a golden image, not even by the first boot's preset-all.
    def started(unit: str) -> bool:
        return any(
            str(e.get("UNIT")) == unit
            and str(e.get("MESSAGE", "")).startswith(("Started", "Finished"))
            for e in entries
        )

    assert started("xnat-fleet-snakeoil.service")
    assert started("postgresql@15-main.service") and started("nginx.service")
    assert not [e for e in entries if str(e.get("UNIT")) == "tomcat.service"]
    # The login prompt names the sealed hostname: no build name leaked.
    assert "relay login:" in first.console

    second = qemu.boot(disk, tmp_path, memory_mib=MEMORY_MIB)
    assert "relay login:" in second.console
    root = audit.RootFs(disk, tmp_path / "r2")
    assert (root.read("/etc/machine-id") or b"").decode().strip() == machine_id
    assert root.read("/etc/ssh/ssh_host_ed25519_key.pub") == pub
    entries = _journal(root, tmp_path / "j2")
    root.close()
    boots = {e["_BOOT_ID"] for e in entries}
    assert len(boots) == 2, boots
    assert _failures(entries) == []
    # systemd's own verdict, per boot in order: the first was a first boot, the second not.
    order = sorted(
        boots,
        key=lambda b: min(
            int(str(e["__REALTIME_TIMESTAMP"])) for e in entries if e["_BOOT_ID"] == b
        ),
    )
    said = {b: [str(e.get("MESSAGE", "")) for e in entries if e["_BOOT_ID"] == b] for b in order}
    assert "Detected first boot." in said[order[0]]
    assert "Initializing machine ID from random generator." in said[order[0]]
    assert "Detected first boot." not in said[order[1]]
    assert any(
        "First Boot Complete was skipped" in m and "ConditionFirstBoot=yes" in m
        for m in said[order[1]]
    )
