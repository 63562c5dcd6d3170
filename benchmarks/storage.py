#!/usr/bin/env python3
"""Storage benchmark: power-on to first-boot complete for both relay profiles under QEMU (TCG),
and the Supermicro pool's read throughput with and without its SSD cache, in one run.

    python benchmarks/storage.py [--profile nuc|supermicro|both] [--build-dir DIR] [--json]

For each profile the golden image of the example study is built (the tests' stand-in
artifacts; cached in ``build/bench`` between runs), its relay is cloned (relay-kings: NUC,
relay-leeds: Supermicro) and written to virtual disks, and the box is powered on with a TPM2
(swtpm): the NUC on one 6 GiB disk, the Supermicro on two 6 GiB SSDs and four 1 GiB data disks
held to a hard disk's speed (QEMU throttling: ``--hdd-mbps``, ``--hdd-iops``). The first figure
is the time from QEMU's start to the console's "xnat-fleet first boot: done" (the storage
layout, the database password, XNAT started): TCG emulates every instruction, so it is many
times a real box's time and only comparable between runs on this machine.

The Supermicro is then booted again, and once no array resyncs, the test probe
(tests/fixtures/pool_probe.py, action ``bench``) reads the same 256 MiB of the data volume with
direct I/O four times with the cache attached (dm-cache promotes blocks read again), splits
the cache off, reads four times more, and attaches it again. The ratio is the best cached pass
over the best uncached one. Needs root and the bootstrap's tools; takes 15-25 minutes.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from xnat_fleet.image import build as build_lib
from xnat_fleet.image import clone as clone_lib
from xnat_fleet.image import disk as disk_lib
from xnat_fleet.image import qemu
from xnat_fleet.model.loader import InventorySource
from xnat_fleet.paths import project_root

ROOT = project_root()
EXAMPLE = ROOT / "inventory" / "example"
PROBE = ROOT / "tests" / "fixtures" / "pool_probe.py"
PROBE_UNIT = """[Unit]
Description=xnat-fleet benchmark probe (benchmarks/storage.py)
After=xnat-fleet-first-boot.service xnat-fleet-storage-check.service tomcat.service
[Service]
Type=oneshot
ExecStart=/usr/bin/python3 /usr/local/sbin/xnat-fleet-test-probe
[Install]
WantedBy=multi-user.target
"""
PROBE_DONE = re.compile(rb"xnat-fleet test probe: done")
RELAY = {"nuc": "relay-kings", "supermicro": "relay-leeds"}
MEMORY = {"nuc": 3072, "supermicro": 12288}  # the profile's PostgreSQL needs the Supermicro's
SSD, HDD = 6 << 30, 1 << 30


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout  # noqa: S603


def _write(clone: clone_lib.CloneResult, disk: Path) -> None:
    _sh("truncate", "-s", str(SSD), str(disk))
    tool = str(Path(sys.executable).with_name("xnat-fleet"))
    _sh(tool, "image", "write", str(clone.directory), "--device", str(disk), "--allow-standins")


def _probe_into(disk: Path, work: Path) -> None:
    part = disk_lib.partition(disk, clone_lib.ROOT_PARTITION)
    with disk_lib.mounted(disk, part, work, read_only=False) as root:
        (root / "usr/local/sbin/xnat-fleet-test-probe").write_text(PROBE.read_text())
        (root / "etc/systemd/system/xnat-fleet-test-probe.service").write_text(PROBE_UNIT)
        wants = root / "etc/systemd/system/multi-user.target.wants/xnat-fleet-test-probe.service"
        wants.symlink_to("../xnat-fleet-test-probe.service")
        preset = root / "etc/systemd/system-preset/00-aaa-xnat-fleet-test.preset"
        preset.parent.mkdir(parents=True, exist_ok=True)
        preset.write_text("enable xnat-fleet-test-probe.service\n")


def _mtools(*argv: str) -> str:
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)  # noqa: S603
    return proc.stdout


def _last_report(disk: Path) -> dict[str, Any]:
    esp = disk_lib.partitions(disk)[0]
    image = f"{disk}@@{esp.offset}"
    names = [Path(n).name for n in _mtools("mdir", "-b", "-i", image, "::/xnat-fleet-test").split()]
    last = max(names, key=lambda n: int(n.split("-")[1].split(".")[0]))
    return dict(json.loads(_mtools("mtype", "-i", image, f"::/xnat-fleet-test/{last}")))


def run_profile(
    profile: str, build_dir: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    golden = build_lib.build(InventorySource(EXAMPLE), profile, build_dir=build_dir,
                             standins=True, version="bench")  # fmt: skip
    clone = clone_lib.clone(InventorySource(EXAMPLE), [RELAY[profile]], image=golden.directory,
                            build_dir=build_dir, output=work / "clones")[0]  # fmt: skip
    disk = work / f"{profile}-a.raw"
    _write(clone, disk)
    _probe_into(disk, work / "mnt")
    drives = None
    if profile == "supermicro":
        b = work / "supermicro-b.raw"
        _sh("truncate", "-s", str(SSD), str(b))
        drives = [qemu.Drive(disk, "SSD-A", ssd=True), qemu.Drive(b, "SSD-B", ssd=True)]
        for n in range(4):
            hdd = work / f"hdd-{n}.raw"
            _sh("truncate", "-s", str(HDD), str(hdd))
            drives.append(qemu.Drive(hdd, f"HDD-{n}", bps=args.hdd_mbps << 20, iops=args.hdd_iops))
    common: dict[str, Any] = {
        "memory_mib": MEMORY[profile], "tpm": work / f"{profile}-tpm", "timeout": 1800,
        "drives": drives, "serial": 1 if profile == "supermicro" else 0,
    }  # fmt: skip
    first = qemu.boot(disk, work / "qemu", ready=qemu.FIRST_BOOT_DONE, **common)
    out: dict[str, Any] = {
        "profile": profile,
        "power_on_to_first_boot_done_s": round(first.seconds_to_ready, 1),
        "power_on_to_login_s": round(first.seconds_to_login, 1),
    }
    if profile == "supermicro":
        qemu.boot(disk, work / "qemu", ready=PROBE_DONE, fw_cfg={"xnat-fleet-test/actions":
                  "wait-sync,bench"}, **common)  # fmt: skip
        bench = _last_report(disk).get("bench") or {}
        cached, uncached = bench.get("cached_mib_s", []), bench.get("uncached_mib_s", [])
        out["pool_read"] = bench
        if cached and uncached and max(uncached) > 0:
            out["cache_ratio"] = round(max(cached) / max(uncached), 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=["nuc", "supermicro", "both"], default="both")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build" / "bench")
    parser.add_argument("--hdd-mbps", type=int, default=40, help="data disks' MiB/s (QEMU)")
    parser.add_argument("--hdd-iops", type=int, default=150, help="data disks' I/O per second")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    profiles = ["nuc", "supermicro"] if args.profile == "both" else [args.profile]
    work = Path(tempfile.mkdtemp(prefix="xnat-fleet-storage-bench-", dir=ROOT / "build"))
    try:
        results = [run_profile(p, args.build_dir, work, args) for p in profiles]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(f"{r['profile']}: power-on to first boot done {r['power_on_to_first_boot_done_s']} s "
              f"(login prompt at {r['power_on_to_login_s']} s)")  # fmt: skip
        if "pool_read" in r:
            pr = r["pool_read"]
            cached, uncached = pr.get("cached_mib_s"), pr.get("uncached_mib_s")
            print(f"  pool reads, 256 MiB direct: cached {cached} MiB/s, uncached {uncached} "
                  f"MiB/s; ratio {r.get('cache_ratio')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
