"""Disk images as files and trees: a qcow2 overlay seen as a raw disk, a partition mounted.

A clone is a qcow2 file whose backing file is the golden raw image: it holds only the clusters
its personalisation changed (``qemu-img map`` lists them). :func:`exported` shows it as a plain
raw file through ``qemu-storage-daemon``'s FUSE export (no kernel module beyond FUSE), which
the writer reads like any raw image and :func:`mounted` attaches to a loop device at a
partition's offset (partition scanning needs udev; an offset does not). Everything here needs
root (loop devices, mounts). docs/images.md ("Clone") describes the layout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xnat_fleet.errors import FleetError
from xnat_fleet.image import files

SECTOR = 512


class DiskError(FleetError):
    """A disk image could not be opened, exported or mounted."""


@dataclass(frozen=True)
class Partition:
    name: str
    offset: int  # bytes
    size: int  # bytes


def _run(*argv: str) -> str:
    return files.run(*argv, error=DiskError).stdout


def partitions(image: Path) -> list[Partition]:
    """The GPT partitions of a raw image (sfdisk reads the table, nothing is attached)."""
    table = json.loads(_run("sfdisk", "--json", str(image)))["partitiontable"]
    size = int(table.get("sectorsize", SECTOR))
    return [
        Partition(p.get("name", ""), int(p["start"]) * size, int(p["size"]) * size)
        for p in table["partitions"]
    ]


def partition(image: Path, name: str) -> Partition:
    for p in partitions(image):
        if p.name == name:
            return p
    raise DiskError(f"{image}: no partition named {name!r}")


def create_overlay(disk: Path, backing: Path) -> None:
    """A qcow2 DISK over the raw BACKING image (absolute path; nothing copied)."""
    disk.unlink(missing_ok=True)
    _run(
        "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
        "-b", str(backing.resolve()), "-F", "raw", str(disk),
    )  # fmt: skip


def overlay_extents(disk: Path) -> list[tuple[int, int]]:
    """Byte extents (offset, length) of the guest disk that the qcow2 DISK itself holds."""
    # -U: the export may hold the image open (its qcow2 lock) while the map is read
    out = json.loads(_run("qemu-img", "map", "-U", "--output=json", str(disk)))
    return [(int(e["start"]), int(e["length"])) for e in out if e.get("depth") == 0 and e["data"]]


def allocated_bytes(path: Path) -> int:
    """Bytes PATH takes on its file system (its blocks, not its apparent size)."""
    return path.stat().st_blocks * 512


@contextmanager
def exported(disk: Path, *, writable: bool = False) -> Iterator[Path]:
    """The qcow2 DISK as a raw file (a FUSE export of qemu-storage-daemon) while in the block."""
    work = Path(tempfile.mkdtemp(prefix="xnat-fleet-export-"))
    mountpoint = work / "disk.raw"
    mountpoint.touch()
    pidfile = work / "qsd.pid"
    proc = subprocess.run(  # noqa: S603 (argv, no shell)
        [
            files.require("qemu-storage-daemon", DiskError),
            "--blockdev", f"driver=file,filename={disk},node-name=file",
            "--blockdev", "driver=qcow2,file=file,node-name=disk",
            "--export",
            f"type=fuse,id=export,node-name=disk,mountpoint={mountpoint},"
            f"writable={'on' if writable else 'off'}",
            "--daemonize", "--pidfile", str(pidfile),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        mountpoint.unlink(missing_ok=True)
        work.rmdir()
        raise DiskError(f"{disk}: qemu-storage-daemon could not export it: {proc.stderr.strip()}")
    pid = int(pidfile.read_text().strip())
    try:
        yield mountpoint
    finally:
        os.kill(pid, signal.SIGTERM)  # the daemon flushes the qcow2 and unmounts the export
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        files.run("umount", str(mountpoint), error=DiskError, check=False)
        for p in (mountpoint, pidfile):
            p.unlink(missing_ok=True)
        work.rmdir()


@contextmanager
def mounted(
    image: Path, part: Partition, mountpoint: Path, *, read_only: bool = True
) -> Iterator[Path]:
    """PART of the raw IMAGE mounted at MOUNTPOINT (a loop device at its offset)."""
    flags = ["-r"] if read_only else []
    loop = _run(
        "losetup", "-f", "--show", *flags, "--offset", str(part.offset),
        "--sizelimit", str(part.size), str(image),
    ).strip()  # fmt: skip
    try:
        mountpoint.mkdir(parents=True, exist_ok=True)
        # A mirrored root (md format 1.0, the superblock at its end) shows as an md member to
        # blkid; the ext4 inside starts at the partition's start, so it is mounted by type.
        kind = files.run("blkid", "-p", "-o", "value", "-s", "TYPE", loop, error=DiskError,
                         check=False).stdout.strip()  # fmt: skip
        by_type = ["-t", "ext4"] if kind == "linux_raid_member" else []
        # noload: a read-only mount replays no journal (the golden image stays bit for bit)
        _run("mount", *by_type, "-o", "ro,noload" if read_only else "rw", loop, str(mountpoint))
        try:
            yield mountpoint
        finally:
            _run("umount", str(mountpoint))
    finally:
        files.run("losetup", "-d", loop, error=DiskError, check=False)
