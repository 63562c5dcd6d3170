"""A relay clone on a virtual disk with a test probe inside: the boot tests' and
benchmarks/storage.py's way to ask a booted guest what it sees (tests only, never part of an
image).

The probe (a script in tests/fixtures) runs as a oneshot unit once the relay's own units are up,
writes a JSON report and prints "xnat-fleet test probe: done" on the console, which is what
``qemu.boot`` waits for. Where the report goes is the probe's choice: the NUC's probe writes it
into the root (read back with ``audit.RootFs``), the pool probe onto every ESP (read back here
with mtools, as the root is an md member the host cannot mount writable).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from xnat_fleet.cli import cli
from xnat_fleet.image import clone as clone_lib
from xnat_fleet.image import disk as disk_lib

DONE = re.compile(rb"xnat-fleet test probe: done")
TOOL = "usr/local/sbin/xnat-fleet-test-probe"
UNIT = "xnat-fleet-test-probe.service"


def write_clone(
    clone: clone_lib.CloneResult, disk: Path, size: int, *, force: bool = False
) -> None:
    """The clone onto DISK (SIZE bytes) with ``xnat-fleet image write``, over whatever it held
    (FORCE: a disk with data, as when a relay's SSD is re-imaged): as on a real SSD, the old
    contents stay beyond the image's extents."""
    subprocess.run(["truncate", "-s", str(size), str(disk)], check=True)
    argv = ["image", "write", str(clone.directory), "--device", str(disk), "--allow-standins"]
    result = CliRunner().invoke(cli, [*argv, "--force"] if force else argv)
    if result.exit_code != 0:
        raise AssertionError(
            f"image write to {disk} failed: {result.output} {result.stderr} {result.exception!r}"
        )


def unit(description: str, after: Iterable[str]) -> str:
    """The probe's unit: after AFTER, once per boot, wanted by multi-user.target."""
    return (
        f"[Unit]\nDescription={description}\nAfter={' '.join(after)}\n"
        "[Service]\nType=oneshot\nExecStart=/usr/bin/python3 /" + TOOL + "\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def put_files(
    disk: Path, work: Path, files: Mapping[str, str], links: Mapping[str, str] | None = None
) -> None:
    """FILES (path in the root: text) and LINKS (path: target) into the written disk's root."""
    part = disk_lib.partition(disk, clone_lib.ROOT_PARTITION)
    with disk_lib.mounted(disk, part, work, read_only=False) as root:
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        for rel, target in (links or {}).items():
            path = root / rel
            if not path.is_symlink():
                path.symlink_to(target)


def install(disk: Path, work: Path, probe: Path, unit_text: str) -> None:
    """The probe, its unit and its enablement into the disk's root. The preset sorts before the
    image's own, which first boot's ``systemctl preset-all`` applies."""
    put_files(
        disk, work,
        {
            TOOL: probe.read_text(),
            f"etc/systemd/system/{UNIT}": unit_text,
            "etc/systemd/system-preset/00-aaa-xnat-fleet-test.preset": f"enable {UNIT}\n",
        },
        {f"etc/systemd/system/multi-user.target.wants/{UNIT}": f"../{UNIT}"},
    )  # fmt: skip


def _mtools(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=check)


def esp_reports(disk: Path) -> list[dict[str, Any]]:
    """The reports (xnat-fleet-test/boot-N.json) on the disk's ESP, oldest first; the disk is
    read in place with mtools, nothing is attached."""
    esp = disk_lib.partitions(disk)[0]
    image = f"{disk}@@{esp.offset}"
    listing = _mtools("mdir", "-b", "-i", image, "::/xnat-fleet-test", check=False)
    names = [Path(line.strip()).name for line in listing.stdout.splitlines() if line.strip()]
    names.sort(key=lambda n: int(n.split("-")[1].split(".")[0]))
    return [json.loads(_mtools("mtype", "-i", image, f"::/xnat-fleet-test/{n}").stdout)
            for n in names]  # fmt: skip
