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
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from xnat_fleet.image import build as build_lib
from xnat_fleet.image import clone as clone_lib
from xnat_fleet.image import qemu
from xnat_fleet.model.loader import InventorySource
from xnat_fleet.paths import project_root

ROOT = project_root()
sys.path.insert(0, str(ROOT))
from tests import guest_probe  # noqa: E402  (the boot tests' probe and how to read it)

EXAMPLE = ROOT / "inventory" / "example"
PROBE = ROOT / "tests" / "fixtures" / "pool_probe.py"
PROBE_UNIT = guest_probe.unit(
    "xnat-fleet benchmark probe (benchmarks/storage.py)",
    ["xnat-fleet-first-boot.service", "xnat-fleet-storage-check.service", "tomcat.service"],
)
RELAY = {"nuc": "relay-kings", "supermicro": "relay-leeds"}
MEMORY = {"nuc": 3072, "supermicro": 12288}  # the profile's PostgreSQL needs the Supermicro's
SSD, HDD = 6 << 30, 1 << 30


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout  # noqa: S603


def run_profile(
    profile: str, build_dir: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    golden = build_lib.build(InventorySource(EXAMPLE), profile, build_dir=build_dir,
                             standins=True, version="bench")  # fmt: skip
    clone = clone_lib.clone(InventorySource(EXAMPLE), [RELAY[profile]], image=golden.directory,
                            build_dir=build_dir, output=work / "clones")[0]  # fmt: skip
    disk = work / f"{profile}-a.raw"
    guest_probe.write_clone(clone, disk, SSD)
    guest_probe.install(disk, work / "mnt", PROBE, PROBE_UNIT)
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
        qemu.boot(disk, work / "qemu", ready=guest_probe.DONE, fw_cfg={"xnat-fleet-test/actions":
                  "wait-sync,bench"}, **common)  # fmt: skip
        reports = guest_probe.esp_reports(disk)
        bench = (reports[-1] if reports else {}).get("bench") or {}
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
