"""An md RAID1 member superblock (format 1.0), written into a disk image with no md driver.

The Supermicro profile's root is an md RAID1 from its very first boot, so that the storage role
can add the second boot SSD to the running root (``mdadm --add``, ``--grow --raid-devices=2``)
without copying the root or rebooting. The build machine has no md driver, and an image is
assembled without loop devices, so the member superblock is written here. Format 1.0 puts it
at the end of the partition and the data at offset 0: the ext4 file system inside stays where
``mkfs.ext4`` put it (the image tools read it at the partition's offset as before), and the
array is complete with one member (``raid_disks`` 1), so the initramfs starts it at once.

The layout is the kernel's ``struct mdp_superblock_1`` (``include/uapi/linux/raid/md_p.h``),
placed and checksummed as ``drivers/md/md.c`` (``super_1_load``, ``calc_sb_1_csum``) expects;
docs/storage.md says how this was checked (``mdadm --examine`` in the unit tests, the kernel in
the boot tests).
"""

from __future__ import annotations

import struct
import time
import uuid
from dataclasses import dataclass

MAGIC = 0xA92B4EFC
SECTOR = 512
MAX_DEV = 384  # dev_roles slots (what mdadm gives a new 1.x array)
ROLE_SPARE = 0xFFFF
MAX_SECTOR = 0xFFFFFFFFFFFFFFFF  # resync_offset: the whole array is in sync
# Kept free between the end of the data and the superblock: room for the write-intent bitmap
# the storage role adds at first boot (format 1.0 puts it before the superblock).
RESERVE = 1 << 20


@dataclass(frozen=True)
class Member:
    """Where the superblock goes in the partition and how much of it holds data."""

    super_offset: int  # bytes from the partition's start
    data_size: int  # bytes from the partition's start (the file system must fit in it)
    block: bytes  # the superblock, 4 KiB (zero-padded)


def super_offset(partition_bytes: int) -> int:
    """Format 1.0: 8 KiB before the end, aligned down to 4 KiB (the kernel's rule)."""
    sectors = partition_bytes // SECTOR
    return ((sectors - 16) & ~7) * SECTOR


def data_size(partition_bytes: int) -> int:
    """The bytes of a member partition that hold data (the file system's size): whole MiB."""
    size = super_offset(partition_bytes) - RESERVE
    return size // (1 << 20) * (1 << 20)


def checksum(block: bytes, max_dev: int) -> int:
    """calc_sb_1_csum: 32-bit little-endian words summed in 64 bits, folded once."""
    size = 256 + max_dev * 2
    total: int = sum(struct.unpack_from(f"<{size // 4}I", block))
    if size % 4:
        total += int(struct.unpack_from("<H", block, size - 2)[0])
    return ((total & 0xFFFFFFFF) + (total >> 32)) & 0xFFFFFFFF


def raid1_member(
    partition_bytes: int,
    name: str,
    set_uuid: uuid.UUID | None = None,
    device_uuid: uuid.UUID | None = None,
    now: float | None = None,
) -> Member:
    """The superblock of the only member (role 0) of a clean one-disk RAID1 named NAME."""
    if partition_bytes < 4 * RESERVE:
        raise ValueError(f"a {partition_bytes} byte partition is too small for an md member")
    encoded = name.encode()
    if len(encoded) > 32:
        raise ValueError(f"md array name {name!r} is longer than 32 bytes")
    offset = super_offset(partition_bytes)
    data = data_size(partition_bytes)
    stamp = int(now if now is not None else time.time()) & ((1 << 40) - 1)
    head = struct.pack(
        "<IIII16s32sQIIQIIIIQIIII",
        MAGIC, 1, 0, 0,
        (set_uuid or uuid.uuid4()).bytes, encoded.ljust(32, b"\0"),
        stamp,
        1, 0,  # level 1, layout 0
        data // SECTOR,  # size: what each member gives the array
        0, 1,  # chunksize (none for RAID1), raid_disks
        0,  # bitmap_offset (no bitmap feature)
        0, 0, 0, 0, 0, 0,  # reshape fields: none
    )  # fmt: skip
    device = struct.pack(
        "<QQQQII16sBBHI",
        0, data // SECTOR, offset // SECTOR, 0,  # data_offset, data_size, super_offset, recovery
        0, 0,  # dev_number, cnt_corrected_read
        (device_uuid or uuid.uuid4()).bytes,
        0, 0, 0, 0,  # devflags, bad block log: none
    )  # fmt: skip
    state = struct.pack("<QQQII32x", stamp, 1, MAX_SECTOR, 0, MAX_DEV)
    roles = struct.pack("<H", 0) + struct.pack("<H", ROLE_SPARE) * (MAX_DEV - 1)
    block = bytearray(head + device + state + roles)
    if (len(head), len(device), len(state)) != (128, 64, 64):
        raise AssertionError("struct mdp_superblock_1 is 256 bytes before dev_roles")
    struct.pack_into("<I", block, 216, checksum(bytes(block), MAX_DEV))
    return Member(offset, data, bytes(block.ljust(4096, b"\0")))
