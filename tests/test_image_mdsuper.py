"""The md RAID1 member superblock a mirrored root gets at assembly (src/xnat_fleet/image/
mdsuper.py), read back by mdadm and blkid on a loop device: mdadm must accept its checksum and
see a clean one-disk RAID1 named any:root; the ext4 inside stays readable at the partition's
start; a changed byte is caught. The kernel assembling it is the Supermicro boot test's part."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.image_helpers import small_recipe, tiny_tree
from xnat_fleet.image import assemble, disk, mdsuper

MIB = 1 << 20


@contextmanager
def _loop(path: Path, offset: int = 0, size: int | None = None) -> Iterator[str]:
    argv = ["losetup", "-f", "--show", "-r", "--offset", str(offset)]
    if size is not None:
        argv += ["--sizelimit", str(size)]
    dev = subprocess.run([*argv, str(path)], capture_output=True, text=True, check=True)
    try:
        yield dev.stdout.strip()
    finally:
        subprocess.run(["losetup", "-d", dev.stdout.strip()], check=False)


def _examine(device: str) -> tuple[dict[str, str], str]:
    export = subprocess.run(
        ["mdadm", "--examine", "--export", device], capture_output=True, text=True, check=False
    ).stdout
    text = subprocess.run(["mdadm", "--examine", device], capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in export.splitlines() if "=" in line), text


def _member_file(tmp_path: Path, size: int) -> tuple[Path, mdsuper.Member, uuid.UUID]:
    set_uuid = uuid.uuid4()
    member = mdsuper.raid1_member(size, "any:root", set_uuid=set_uuid)
    path = tmp_path / "member.img"
    with path.open("wb") as f:
        f.truncate(size)
        f.seek(member.super_offset)
        f.write(member.block)
    return path, member, set_uuid


def test_mdadm_reads_a_clean_one_disk_raid1_with_a_correct_checksum(tmp_path: Path) -> None:
    size = 96 * MIB
    path, member, set_uuid = _member_file(tmp_path, size)
    assert member.super_offset == size - 8192  # format 1.0: 8 KiB before the end
    assert member.data_size <= member.super_offset - mdsuper.RESERVE
    with _loop(path) as dev:
        fields, text = _examine(dev)
    assert fields["MD_LEVEL"] == "raid1" and fields["MD_DEVICES"] == "1", fields
    assert fields["MD_NAME"] == "any:root" and "Version : 1.0" in text
    assert fields["MD_UUID"].replace(":", "") == set_uuid.hex
    assert "Checksum" in text and "correct" in text.split("Checksum")[1].splitlines()[0]
    assert "State : clean" in text and "Active device 0" in text
    assert f"Avail Dev Size : {member.data_size // 512} sectors" in text


def test_a_changed_byte_fails_the_checksum(tmp_path: Path) -> None:
    path, member, _ = _member_file(tmp_path, 64 * MIB)
    with path.open("r+b") as f:
        f.seek(member.super_offset + 80)  # the array's size
        f.write(b"\x01")
    with _loop(path) as dev:
        _, text = _examine(dev)
    assert "expected" in text.split("Checksum")[1].splitlines()[0], text


def test_a_too_long_name_or_a_tiny_partition_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 32"):
        mdsuper.raid1_member(64 * MIB, "x" * 33)
    with pytest.raises(ValueError, match="too small"):
        mdsuper.raid1_member(MIB, "any:root")


def test_a_mirrored_root_is_an_md_member_with_its_ext4_before_the_superblock(
    tmp_path: Path,
) -> None:
    tree = tiny_tree(tmp_path / "tree")
    image = tmp_path / "sm.raw"
    plan = assemble.assemble(
        tree, small_recipe("supermicro"), image, tmp_path / "work", "relay-supermicro", "1"
    )
    root = plan.by_type("linux-root-x86-64")
    assert root.md_mirror and root.fs_size == mdsuper.data_size(root.size)
    with _loop(image, root.start, root.size) as dev:
        kind = subprocess.run(
            ["blkid", "-p", "-o", "value", "-s", "TYPE", dev], capture_output=True, text=True
        ).stdout.strip()
        fields, _ = _examine(dev)
    assert kind == "linux_raid_member" and fields["MD_NAME"] == assemble.MD_ROOT_NAME
    # the file system alone, as the kernel's md device shows it: a clean ext4 of fs_size bytes
    with _loop(image, root.start, root.fs_size) as dev:
        fsck = subprocess.run(["e2fsck", "-fn", dev], capture_output=True, text=True)
        info = subprocess.run(["dumpe2fs", "-h", dev], capture_output=True, text=True).stdout
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    head = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in info.splitlines())}
    assert int(head["Block count"]) * int(head["Block size"]) == root.fs_size
    assert f"Filesystem UUID:          {root.fs_uuid}" in info
    # the image tools still mount it (as ext4, by type) and see the tree
    part = disk.partition(image, "root")
    with disk.mounted(image, part, tmp_path / "mnt") as mnt:
        assert (mnt / "etc" / "hostname").is_file()
