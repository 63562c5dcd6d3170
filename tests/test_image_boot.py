"""Boot test: the NUC profile's sealed image boots under QEMU (TCG, OVMF) through its own
systemd-boot to a login prompt with no failed unit and no console prompt; its first boot made a
machine id and SSH host keys; the second boot of the same disk is not a first boot.

The image is the pipeline's base stage (mmdebstrap of the profile's packages, cached per recipe),
sealed with the profile's list and assembled without mounts; the relay roles' provisioning stage
is not part of it yet. QEMU and OVMF come from the bootstrap: if they are missing the test fails,
it never skips.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from xnat_fleet import aptcache
from xnat_fleet.image import assemble, audit, base, qemu, recipe, seal

pytestmark = pytest.mark.image


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


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    missing = qemu.requirements()
    assert not missing, f"QEMU/OVMF missing (make bootstrap installs them): {missing}"
    work = tmp_path_factory.mktemp("image")
    r = recipe.load("nuc")
    proxy = aptcache.ensure().replace("0.0.0.0", "127.0.0.1")  # noqa: S104 (the bind address)
    tarball, _ = base.build(r, apt_proxy=proxy)
    tree = base.unpack(tarball, work / "tree")
    seal.apply(tree, list(r.seal))
    seal.stamp_os_release(tree, "xnat-fleet-relay-nuc", "boot-test", "1.8.10")
    image = work / "relay-nuc.raw"
    assemble.assemble(tree, r, image, work / "assemble", "xnat-fleet-relay-nuc", "boot-test")
    assert audit.scan_image(image) == []  # sealed: nothing to find before the first boot
    yield image


def test_two_boots_first_boot_then_not(golden: Path, tmp_path: Path) -> None:
    first = qemu.boot(golden, tmp_path)
    assert "systemd-boot" in first.console or "Boot0002" in first.console
    root = audit.RootFs(golden, tmp_path / "r1")
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
    # The login prompt names the sealed hostname: no build name leaked.
    assert "relay login:" in first.console

    second = qemu.boot(golden, tmp_path)
    assert "relay login:" in second.console
    root = audit.RootFs(golden, tmp_path / "r2")
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
