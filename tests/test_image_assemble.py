"""Assembling a GPT disk from a tree without mounts: the layout, the boot files on the ESP, the
tree in the ext4 root, fresh UUIDs for every build, a sparse image whose bmap maps little."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.image_helpers import small_recipe, tiny_tree
from xnat_fleet.image import assemble, audit, bmap, files
from xnat_fleet.image.recipe import MiB


def _build(tmp_path: Path, name: str) -> tuple[Path, assemble.DiskPlan, Path]:
    tree = tiny_tree(tmp_path / f"{name}-tree")
    out = tmp_path / f"{name}.raw"
    disk = assemble.assemble(tree, small_recipe(), out, tmp_path / f"{name}-work", "relay-nuc", "1")
    return out, disk, tree


def test_the_disk_has_the_recipes_layout_and_boots_the_trees_kernel(tmp_path: Path) -> None:
    image, disk, tree = _build(tmp_path, "a")
    table = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    assert table["label"] == "gpt" and table["id"] == disk.disk_guid
    esp, root = table["partitions"]
    assert esp["type"] == assemble.GPT_TYPES["esp"] and esp["start"] == 2048
    assert esp["size"] * 512 == 64 * MiB
    assert root["type"] == assemble.GPT_TYPES["linux-root-x86-64"]
    assert root["start"] == 2048 + esp["size"] and (root["start"] * 512) % MiB == 0
    assert (root["start"] + root["size"]) * 512 == 192 * MiB - MiB  # room for the backup GPT
    assert root["uuid"] == disk.by_type("linux-root-x86-64").uuid

    out = audit.extract(image, tmp_path / "x")
    efi = out / "boot" / "efi"
    loader = tree / assemble.SYSTEMD_BOOT
    assert (efi / "EFI" / "BOOT" / "BOOTX64.EFI").read_bytes() == loader.read_bytes()
    assert (efi / "xnat-fleet" / "vmlinuz").read_bytes() == (
        tree / "boot" / "vmlinuz-6.1.0-test"
    ).read_bytes()
    entry = (efi / "loader" / "entries" / "xnat-fleet.conf").read_text()
    root_uuid = disk.by_type("linux-root-x86-64").fs_uuid
    assert f"options root=UUID={root_uuid} ro" in entry and "console=ttyS0,115200n8" in entry
    assert "timeout 0" in (efi / "loader" / "loader.conf").read_text()
    fstab = (out / "etc" / "fstab").read_text()
    assert f"UUID={root_uuid}  /  " in fstab
    assert f"UUID={disk.by_type('esp').fs_uuid}  /boot/efi" in fstab
    assert (out / "usr" / "lib" / "os-release").read_text().startswith('PRETTY_NAME="Debian')
    assert (out / "etc" / "modprobe.d" / "xnat-fleet-blacklist.conf").read_text().count(
        "blacklist iwlwifi"
    ) == 1

    # The file system really carries the planned UUID and label.
    part = tmp_path / "root.part"
    files.extract_range(image, root["start"] * 512, root["size"] * 512, part)
    info = subprocess.run(
        ["dumpe2fs", "-h", str(part)], capture_output=True, text=True, check=True
    ).stdout
    assert f"Filesystem UUID:          {root_uuid}" in info
    assert "Filesystem volume name:   relay-root" in info


def test_every_build_has_fresh_uuids_and_a_sparse_image(tmp_path: Path) -> None:
    a, disk_a, _ = _build(tmp_path, "a")
    _, disk_b, _ = _build(tmp_path, "b")
    ids_a = {
        disk_a.disk_guid,
        *(p.uuid for p in disk_a.partitions),
        *(p.fs_uuid for p in disk_a.partitions),
    }
    ids_b = {
        disk_b.disk_guid,
        *(p.uuid for p in disk_b.partitions),
        *(p.fs_uuid for p in disk_b.partitions),
    }
    assert len(ids_a) == 5 and not ids_a & ids_b
    made = bmap.create(a)
    assert made.image_size == 192 * MiB
    assert made.mapped_bytes < 40 * MiB, made.mapped_bytes
    assert a.stat().st_blocks * 512 < 48 * MiB  # holes on disk, not only in the map
