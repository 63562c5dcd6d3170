"""The NUC's data storage, booted (tests/image_fixtures.py: relay-leeds of the two-NUC study).

A personalised clone is written to a 6 GiB file disk and booted under QEMU (TCG, OVMF) with a
TPM2 (swtpm) of its own, the relay's "box". A test probe (tests/fixtures/storage_probe.py,
put into the written disk by the test only) records at every boot what the storage looks like
from inside. The first boot grows the root and makes the encrypted data partition on the rest
of the disk: LUKS2 with the vault's recovery passphrase and a TPM2 token, ext4, mounted on
/data with XNAT's data tree, the passphrase file shredded. The next boot on the same box
unlocks it with no keyboard; the data file system is then filled up, and the root keeps its
free space while sshd, PostgreSQL and Tomcat keep running. Booted on another box (a new TPM2)
the volume stays locked, XNAT stays stopped and the console says why; the vault's recovery
passphrase still opens it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests import guest_probe
from tests.conftest import example_secrets
from xnat_fleet.image import audit, qemu
from xnat_fleet.image import clone as clone_lib
from xnat_fleet.image import disk as disk_lib

pytestmark = pytest.mark.image
MEMORY_MIB = 3072
DISK_BYTES = 6 << 30
PROBE = Path(__file__).parent / "fixtures" / "storage_probe.py"
PROBE_UNIT = guest_probe.unit(
    "xnat-fleet test probe (tests/test_image_storage_boot.py; tests only)",
    ["xnat-fleet-first-boot.service", "xnat-fleet-storage-check.service", "postgresql.service",
     "ssh.service", "tomcat.service"],
)  # fmt: skip


def _reports(disk: Path, work: Path) -> list[dict[str, Any]]:
    root = audit.RootFs(disk, work)
    try:
        out = []
        for n in range(1, 10):
            raw = root.read(f"/var/lib/xnat-fleet-test/boot-{n}.json")
            if raw is None:
                break
            out.append(json.loads(raw))
        return out
    finally:
        root.close()


def _mount_source(report: dict[str, Any], target: str) -> str | None:
    def walk(nodes: list[dict[str, Any]]) -> str | None:
        for node in nodes:
            if node["target"] == target:
                return str(node["source"])
            found = walk(node.get("children", []))
            if found:
                return found
        return None

    return walk(report["findmnt"]["filesystems"])


def _partitions(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    disk = next(d for d in report["lsblk"]["blockdevices"] if d["name"] == "vda")
    return {p["partlabel"]: p for p in disk.get("children", []) if p.get("partlabel")}


def test_nuc_data_volume_is_made_at_first_boot_and_opens_only_on_its_own_box(
    clones: dict[str, clone_lib.CloneResult], tmp_path: Path
) -> None:
    missing = qemu.requirements(tpm=True)
    assert not missing, f"QEMU/OVMF/swtpm missing (make bootstrap installs them): {missing}"
    leeds = clones["relay-leeds"]
    disk = tmp_path / "leeds-disk.raw"
    guest_probe.write_clone(leeds, disk, DISK_BYTES)
    guest_probe.install(disk, tmp_path / "m0", PROBE, PROBE_UNIT)
    part = disk_lib.partition(disk, clone_lib.ROOT_PARTITION)
    with disk_lib.mounted(disk, part, tmp_path / "m1") as root:
        assert (root / "etc/xnat-fleet/storage/recovery.key").is_file()  # the clone carries it
    box = tmp_path / "tpm-leeds"

    # 1. First boot on its own box: the layout is made.
    qemu.boot(disk, tmp_path, memory_mib=MEMORY_MIB, tpm=box, ready=guest_probe.DONE)
    first = _reports(disk, tmp_path / "r1")[-1]
    parts = _partitions(first)
    assert first["data_mounted"], first
    assert _mount_source(first, "/data") == "/dev/mapper/relay-data"
    assert parts["relay-data"]["fstype"] == "crypto_LUKS"
    assert parts["relay-data"]["children"][0]["fstype"] == "ext4"
    tokens = [t["type"] for t in first["luks"]["tokens"].values()]
    assert tokens == ["systemd-tpm2"] and len(first["luks"]["keyslots"]) == 2
    assert not first["recovery_key_file"]  # shredded once the TPM2 opened the volume
    assert first["xnat_config_on_data"]
    root_bytes = int(parts["root"]["size"])
    data_bytes = int(parts["relay-data"]["size"])
    assert root_bytes > leeds.manifest["size_bytes"] - (300 << 20)  # grew past the image's
    assert (1 << 30) <= data_bytes < (1 << 30) + (4 << 20)  # the rest: what the root left
    assert first["status"]["verdict"] in ("ok", "warn") and first["status"]["data_mounted"]
    assert root_bytes + data_bytes > DISK_BYTES - (300 << 20)  # the whole disk is used

    # 2. The same box again: unlocked with no keyboard; the data fills up, the root does not.
    guest_probe.put_files(disk, tmp_path / "m2", {"etc/xnat-fleet-test/fill": "yes\n"})
    qemu.boot(disk, tmp_path, memory_mib=MEMORY_MIB, tpm=box, ready=guest_probe.DONE)
    second = _reports(disk, tmp_path / "r2")[-1]
    # Tomcat is up or (under TCG, slowly) on its way up: started, never held back
    assert second["data_mounted"]
    assert second["services"]["units"]["tomcat.service"] in ("active", "activating"), second

    fill = second["fill"]
    assert fill["error"] == "No space left on device" and fill["data_avail_after"] == 0
    assert abs(fill["root_avail_after"] - fill["root_avail_before"]) < (16 << 20)
    after = fill["services_after"]
    assert after["pg_isready"] and after["units"]["ssh.service"] == "active"
    assert after["units"]["tomcat.service"] in ("active", "activating"), after["tomcat"]
    assert after["units"]["postgresql@15-main.service"] == "active"

    # 3. Another box (a TPM2 that never saw this disk): locked, XNAT stopped, the reason shown.
    passphrase = example_secrets("relay-leeds")["vault_storage_recovery_passphrase"]
    guest_probe.put_files(disk, tmp_path / "m3", {"etc/xnat-fleet-test/recovery": passphrase})
    other = qemu.boot(
        disk, tmp_path, memory_mib=MEMORY_MIB, tpm=tmp_path / "tpm-other", ready=guest_probe.DONE,
        failed_units=True,
    )  # fmt: skip
    third = _reports(disk, tmp_path / "r3")[-1]
    assert not third["data_mounted"]
    units = third["services"]["units"]
    assert units["tomcat.service"] == "inactive", units
    assert units["xnat-fleet-storage-check.service"] == "failed", units
    assert units["ssh.service"] == "active" and third["services"]["pg_isready"]
    assert "/data is not mounted, XNAT stays stopped" in third["check_journal"]
    assert "/data is not mounted, XNAT stays stopped" in other.console
    assert "Please enter passphrase" not in other.console  # no keyboard prompt, ever
    assert third["recovery_opens"] is True
    assert third["status"]["verdict"] == "fail"
    shutil.rmtree(tmp_path / "tpm-other", ignore_errors=True)
