"""The Supermicro's storage, booted: the boot mirror, the SSD cache and the encrypted data pool
(roles/storage, layout pool; docs/storage.md), with disks pulled, replaced and re-imaged.

relay-leeds of the example study (profile supermicro) is cloned and written to virtual SSD A
only. The box: two SSDs and five hard disks on a SCSI bus (as its SATA disks look to Linux, by
serial in /dev/disk/by-id), a TPM2 (swtpm) and QEMU's user network, through which the relay's
null client reaches a real SMTP sink on this machine. Four data disks are blank, the fifth
carries a foreign ext4 (a disk somebody left in the box). A test probe
(tests/fixtures/pool_probe.py, put into SSD A's root before the first boot) reports what the
guest sees onto every ESP, which the test reads from the host.

1. first boot: SSD B joins the root mirror, both SSDs' cache partitions form the cache
   mirror, the four blank disks a RAID6 with LVM, the cache attached writethrough, LUKS2
   bound to the TPM2, ext4 on /data with XNAT's data; the foreign disk is untouched and
   reported; files are written with their checksums;
2. reboot: all of it again, the files intact;
3. one data disk pulled: the pool runs degraded, the files are intact, mail reaches the sink;
4. a blank disk in its place: the pool rebuilds on it by itself;
5. SSD A pulled: the relay boots from SSD B;
6. SSD A re-written with a clone of a newer image: the pool and its files survive.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from tests import guest_probe
from tests.conftest import copy_example
from tests.image_fixtures import BUILD_DIR, EXAMPLE, QEMU_GUEST, QEMU_HOST, QEMU_MAC, QEMU_NET
from xnat_fleet.image import build as build_lib
from xnat_fleet.image import clone as clone_lib
from xnat_fleet.image import qemu
from xnat_fleet.model.loader import InventorySource

pytestmark = pytest.mark.image
# The profile sizes PostgreSQL for the real box (shared_buffers 8 GB: roles/postgresql/vars).
MEMORY_MIB = 12288
PROBE = Path(__file__).parent / "fixtures" / "pool_probe.py"
PROBE_UNIT = guest_probe.unit(
    "xnat-fleet test probe (tests/test_image_pool_boot.py; tests only)",
    ["xnat-fleet-first-boot.service", "xnat-fleet-storage-check.service", "postgresql.service",
     "ssh.service", "tomcat.service", "xnat-fleet-storage-heal.service"],
)  # fmt: skip
SSD_BYTES = 6 << 30  # the 4 GiB image, then a 2 GiB cache partition
HDD_BYTES = 1 << 30


class Sink:
    """An SMTP sink on this machine: what the relay's null client delivers."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.messages.append(
            {"from": envelope.mail_from, "to": envelope.rcpt_tos,
             "data": envelope.content.decode("utf-8", "replace")}
        )  # fmt: skip
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Sink, int]]:
    sink, port = Sink(), _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def leeds_inventory(tmp_path_factory: pytest.TempPathFactory, smtp: tuple[Sink, int]) -> Path:
    """The example study; relay-leeds (a Supermicro) on QEMU's user network, relaying its mail
    to the sink on this machine (QEMU's host address reaches this machine's loopback)."""
    inv = tmp_path_factory.mktemp("pool-inventory") / "example"
    copy_example(inv)
    site = inv / "host_vars" / "relay-leeds" / "site.yml"
    data = yaml.safe_load(site.read_text())
    data["fleet_network"] = {
        "mac": QEMU_MAC, "address": f"{QEMU_GUEST}/24", "gateway": QEMU_HOST, "dns": [QEMU_HOST],
    }  # fmt: skip
    data["fleet_smtp"] = {"smarthost": QEMU_HOST, "port": smtp[1], "starttls": False}
    site.write_text(yaml.safe_dump(data))
    return inv


def _golden(version: str) -> build_lib.BuildResult:
    return build_lib.build(
        InventorySource(EXAMPLE), "supermicro", build_dir=BUILD_DIR, standins=True, version=version
    )


def _clone(inventory: Path, golden: build_lib.BuildResult, out: str) -> clone_lib.CloneResult:
    results = clone_lib.clone(
        InventorySource(inventory), ["relay-leeds"], image=golden.directory,
        build_dir=BUILD_DIR, output=BUILD_DIR / out,
    )  # fmt: skip
    return results[0]


def _last(disk: Path) -> dict[str, Any]:
    reports = guest_probe.esp_reports(disk)
    assert reports, f"{disk.name}: no probe report on its ESP"
    return reports[-1]


def _foreign_disk(path: Path) -> str:
    """A disk someone left in the box: a GPT with one ext4 partition holding a file."""
    subprocess.run(["truncate", "-s", str(HDD_BYTES), str(path)], check=True)
    subprocess.run(["sfdisk", "--quiet", str(path)], input="label: gpt\nstart=2048, name=old\n",
                   text=True, check=True)  # fmt: skip
    subprocess.run(["truncate", "-s", str(HDD_BYTES - (2 << 20)), str(path) + ".p"], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-L", "old-archive", str(path) + ".p"], check=True)
    subprocess.run(["dd", f"if={path}.p", f"of={path}", "bs=1M", "seek=1", "conv=notrunc,sparse",
                    "status=none"], check=True)  # fmt: skip
    Path(str(path) + ".p").unlink()
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True,
                          check=True).stdout.split()[0]  # fmt: skip


def _nic() -> str:
    return f"user,model=virtio-net-pci,mac={QEMU_MAC},net={QEMU_NET},host={QEMU_HOST}"


def _array(report: dict[str, Any], name: str) -> dict[str, Any]:
    """The array named any:NAME in its superblock. Its /dev/md link is usually NAME; on the
    first boot after a re-image, while SSD B's stale root half still carries the old any:root,
    the new root comes up as /dev/md/root_0 (md's way with two arrays of one name)."""
    arrays = report["arrays"]
    found = [a for a in arrays.values() if a["detail"].get("MD_NAME") == f"any:{name}"]
    assert len(found) == 1, f"not one array any:{name}: {sorted(arrays)}\n{report['mdstat']}"
    return dict(found[0])


def test_supermicro_mirror_cache_and_pool_survive_pulled_disks_and_a_new_image(
    leeds_inventory: Path, smtp: tuple[Sink, int], tmp_path: Path
) -> None:
    missing = qemu.requirements(tpm=True)
    assert not missing, f"QEMU/OVMF/swtpm missing (make bootstrap installs them): {missing}"
    sink, _ = smtp
    golden = _golden("test")
    leeds = _clone(leeds_inventory, golden, "pool-clones")
    ssd_a, ssd_b = tmp_path / "ssd-a.raw", tmp_path / "ssd-b.raw"
    guest_probe.write_clone(leeds, ssd_a, SSD_BYTES)
    guest_probe.install(ssd_a, tmp_path / "m0", PROBE, PROBE_UNIT)
    subprocess.run(["truncate", "-s", str(SSD_BYTES), str(ssd_b)], check=True)
    hdds = [tmp_path / f"hdd-{n}.raw" for n in range(4)]
    for h in hdds:
        subprocess.run(["truncate", "-s", str(HDD_BYTES), str(h)], check=True)
    foreign = tmp_path / "hdd-foreign.raw"
    foreign_sum = _foreign_disk(foreign)
    box, work = tmp_path / "tpm", tmp_path / "qemu"

    def drives(a: Path | None, b: Path | None, data: list[Path]) -> list[qemu.Drive]:
        out = []
        if a is not None:
            out.append(qemu.Drive(a, "SSD-A", ssd=True))
        if b is not None:
            out.append(qemu.Drive(b, "SSD-B", ssd=True))
        out += [qemu.Drive(p, f"HDD-{p.stem.split('-', 1)[1].upper()}") for p in data]
        return out

    def boot(a: Path | None, data: list[Path], actions: str, b: Path | None = ssd_b) -> None:
        qemu.boot(
            ssd_a, work, memory_mib=MEMORY_MIB, tpm=box, ready=guest_probe.DONE, timeout=1500,
            drives=drives(a, b, data), serial=1, nic=_nic(),
            fw_cfg={"xnat-fleet-test/actions": actions},
            console_log=tmp_path / "console.log",
        )  # fmt: skip

    # 1. First boot: the mirror, the cache, the pool, the encrypted volume; files written.
    boot(ssd_a, [*hdds, foreign], "wait-sync,seed,verify")
    first = _last(ssd_a)
    root, cache, pool = _array(first, "root"), _array(first, "cache"), _array(first, "pool")
    assert root["detail"]["MD_LEVEL"] == "raid1" and root["detail"]["MD_DEVICES"] == "2"
    assert len(root["members"]) == 2 and "degraded" not in root["state"], root
    assert cache["detail"]["MD_LEVEL"] == "raid1" and len(cache["members"]) == 2
    assert pool["detail"]["MD_LEVEL"] == "raid6" and pool["detail"]["MD_DEVICES"] == "4"
    assert len(pool["members"]) == 4, pool
    lvs = {lv["lv_name"]: lv for lv in first["lvs"]["report"][0]["lv"]}
    assert lvs["data"]["segtype"] == "cache" and lvs["data"]["cache_mode"] == "writethrough"
    assert first["data_mounted"] and first["data_source"] == "/dev/mapper/relay-data"
    assert first["xnat_on_data"], first
    tokens = [t["type"] for t in first["luks"]["tokens"].values()]
    assert tokens == ["systemd-tpm2"], first["luks"]
    untouched = first["state"]["left_untouched"]
    assert [u["disk"] for u in untouched] == [
        "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_HDD-FOREIGN"
    ]
    assert "ext4 (old-archive)" in untouched[0]["why"]
    assert first["verify"] == {"files": 12, "bad": []} and first["image_version"] == "test"
    assert "xnat-fleet relay (boot SSD B)" in first["efibootmgr"]
    assert first["units"]["tomcat.service"] in ("active", "activating"), first["units"]
    assert guest_probe.esp_reports(ssd_b), (
        "SSD B's ESP has no report: it is not a copy that the probe found"
    )
    assert any("left untouched" in m["data"] for m in sink.messages), sink.messages

    # 2. Reboot: everything again, the files intact.
    boot(ssd_a, [*hdds, foreign], "verify")
    second = _last(ssd_a)
    assert second["verify"] == {"files": 12, "bad": []}
    assert second["data_mounted"] and len(_array(second, "pool")["members"]) == 4
    assert second["units"]["xnat-fleet-storage-check.service"] == "active"

    # 3. One data disk pulled: degraded, files intact, the admin is told by mail.
    before = len(sink.messages)
    boot(ssd_a, [hdds[0], hdds[1], hdds[3], foreign], "verify,mail")
    third = _last(ssd_a)
    pool = _array(third, "pool")
    assert len(pool["members"]) == 3 and "degraded" in pool["state"], pool
    assert third["verify"] == {"files": 12, "bad": []} and third["data_mounted"]
    assert third["status"]["verdict"] == "fail"
    mails = [m["data"] for m in sink.messages[before:]]
    assert any("DegradedArray" in m or "degraded" in m for m in mails), (mails, third["maillog"])

    # 4. A blank disk in its place: the pool rebuilds on it by itself.
    new = tmp_path / "hdd-new.raw"
    subprocess.run(["truncate", "-s", str(HDD_BYTES), str(new)], check=True)
    boot(ssd_a, [hdds[0], hdds[1], new, hdds[3], foreign], "wait-sync,verify")
    fourth = _last(ssd_a)
    pool = _array(fourth, "pool")
    assert len(pool["members"]) == 4 and "degraded" not in pool["state"], pool
    assert fourth["verify"] == {"files": 12, "bad": []}
    assert "rebuilding on" in fourth["storage_journal"]
    hdds[2] = new

    # 5. SSD A pulled: the relay boots from SSD B.
    boot(None, [*hdds, foreign], "verify")
    fifth = _last(ssd_b)
    assert len(_array(fifth, "root")["members"]) == 1 and fifth["verify"]["bad"] == []
    assert fifth["units"]["ssh.service"] == "active" and fifth["data_mounted"]

    # 6. SSD A re-written with a clone of a newer image: the pool and its files survive.
    newer = _clone(leeds_inventory, _golden("test-newer"), "pool-clones-newer")
    guest_probe.write_clone(newer, ssd_a, SSD_BYTES, force=True)
    guest_probe.install(ssd_a, tmp_path / "m6", PROBE, PROBE_UNIT)
    boot(ssd_a, [*hdds, foreign], "wait-sync,verify")
    sixth = _last(ssd_a)
    assert sixth["verify"] == {"files": 12, "bad": []} and sixth["data_mounted"]
    assert len(_array(sixth, "root")["members"]) == 2
    assert len(_array(sixth, "pool")["members"]) == 4
    assert sixth["image_version"] == "test-newer" and sixth["xnat_on_data"]
    # the foreign disk was never written
    assert subprocess.run(["sha256sum", str(foreign)], capture_output=True, text=True,
                          check=True).stdout.split()[0] == foreign_sum  # fmt: skip
    shutil.rmtree(box, ignore_errors=True)
