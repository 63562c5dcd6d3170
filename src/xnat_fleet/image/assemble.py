"""Assembling a bootable GPT disk image from a root tree: no loop device, no mount, no root
needed beyond what owns the tree's files.

1. the ESP as its own FAT32 file (``mkfs.vfat``), filled with ``mmd`` / ``mcopy`` (mtools):
   systemd-boot as the removable-media loader ``EFI/BOOT/BOOTX64.EFI``, the kernel and initrd of
   the tree, ``loader/loader.conf`` and one entry (templates under ``templates/image/``);
2. the root as its own ext4 file, populated from the tree by ``mkfs.ext4 -d``;
3. a sparse disk file with a GPT written by ``sfdisk`` (1 MiB aligned; backup GPT at the end);
4. both file systems copied into the disk at their offsets, data extents only, so the holes stay
   holes (and the bmap lists only what holds data);
5. a mirrored root (``md_mirror``, the Supermicro profile) gets an md RAID1 member superblock
   at its partition's end (:mod:`xnat_fleet.image.mdsuper`), its file system ending before it.

Every build gets fresh UUIDs: disk GUID, partition GUIDs, the ext4 UUID and the FAT volume id.
The tree's ``/etc/fstab`` names the file systems by those UUIDs and the kernel command line the
root by its UUID.
"""

from __future__ import annotations

import secrets
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2

from xnat_fleet.errors import FleetError
from xnat_fleet.image import files, mdsuper
from xnat_fleet.image.recipe import MiB, Recipe
from xnat_fleet.paths import project_root

GPT_TYPES = {
    "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "linux-root-x86-64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    "linux": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
}
ALIGN = MiB
ENTRY = "xnat-fleet"
# The mirrored root's md name: homehost "any" makes every relay assemble it as /dev/md/root.
MD_ROOT_NAME = "any:root"
SYSTEMD_BOOT = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"
Progress = Callable[[str], None]


class AssembleError(FleetError):
    """The disk image cannot be assembled (a tool failed, the tree does not fit)."""


@dataclass(frozen=True)
class PartitionPlan:
    name: str
    type_guid: str
    start: int  # bytes
    size: int
    uuid: str  # the partition's GUID
    fs_uuid: str  # ext4 UUID, or the FAT volume id as XXXX-XXXX
    filesystem: str
    label: str
    md_mirror: bool = False

    @property
    def fs_size(self) -> int:
        """The file system's size: the partition's, less an md member's tail (mdsuper)."""
        return mdsuper.data_size(self.size) if self.md_mirror else self.size


@dataclass(frozen=True)
class DiskPlan:
    size: int
    disk_guid: str
    partitions: list[PartitionPlan]

    def by_type(self, kind: str) -> PartitionPlan:
        return next(p for p in self.partitions if p.type_guid == GPT_TYPES[kind])


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(project_root() / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 (configuration files, not HTML)
    )


def _tool(name: str) -> str:
    return files.require(name, AssembleError)


def _run(*argv: str, env: dict[str, str] | None = None) -> str:
    return files.run(*argv, error=AssembleError, env=env).stdout


def plan(recipe: Recipe) -> DiskPlan:
    """Offsets, sizes and fresh UUIDs of the recipe's partitions."""
    size = recipe.disk.size_bytes
    usable_end = size - ALIGN  # the backup GPT and its alignment
    offset = ALIGN
    fixed = sum(p.size_bytes(0) for p in recipe.disk.partitions if p.size != "rest")
    rest = usable_end - ALIGN - fixed
    if rest < 64 * MiB:
        raise AssembleError(f"disk.size {recipe.disk.size} leaves no room for the root")
    parts = []
    for p in recipe.disk.partitions:
        length = p.size_bytes(rest)
        if length % ALIGN:
            raise AssembleError(f"partition {p.name}: size must be whole MiB")
        fs_uuid = (
            str(uuid.uuid4())
            if p.filesystem == "ext4"
            else f"{secrets.randbits(16):04X}-{secrets.randbits(16):04X}"
        )
        parts.append(
            PartitionPlan(
                p.name,
                GPT_TYPES[p.type],
                offset,
                length,
                str(uuid.uuid4()).upper(),
                fs_uuid,
                p.filesystem,
                p.label,
                p.md_mirror,
            )
        )
        offset += length
    return DiskPlan(size, str(uuid.uuid4()).upper(), parts)


def sfdisk_script(disk: DiskPlan) -> str:
    lines = ["label: gpt", f"label-id: {disk.disk_guid}", "unit: sectors", "first-lba: 2048"]
    for p in disk.partitions:
        lines.append(
            f"start={p.start // 512}, size={p.size // 512}, type={p.type_guid}, "
            f'uuid={p.uuid}, name="{p.name}"'
        )
    return "\n".join(lines) + "\n"


def _kernel(tree: Path) -> tuple[str, Path, Path]:
    """The newest kernel of the tree and its initrd."""
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise AssembleError(f"{tree}/boot: no kernel (vmlinuz-*) in the root tree")
    kernel = kernels[-1]
    version = kernel.name.removeprefix("vmlinuz-")
    initrd = tree / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        raise AssembleError(f"{initrd}: the kernel {version} has no initrd in the root tree")
    return version, kernel, initrd


def write_boot_config(tree: Path, recipe: Recipe, disk: DiskPlan) -> None:
    """fstab and the module blacklist into the tree (before the root file system is made)."""
    env = templates()
    root, esp = disk.by_type("linux-root-x86-64"), disk.by_type("esp")
    (tree / "etc" / "fstab").write_text(
        env.get_template("image/fstab.j2").render(root_uuid=root.fs_uuid, esp_uuid=esp.fs_uuid)
    )
    (tree / "boot" / "efi").mkdir(parents=True, exist_ok=True)
    blacklist = tree / "etc" / "modprobe.d" / "xnat-fleet-blacklist.conf"
    if recipe.boot.blacklist_modules:
        blacklist.parent.mkdir(parents=True, exist_ok=True)
        blacklist.write_text(
            env.get_template("image/modprobe-blacklist.conf.j2").render(
                profile=recipe.profile, modules=recipe.boot.blacklist_modules
            )
        )


def make_esp(
    tree: Path, recipe: Recipe, disk: DiskPlan, work: Path, image_id: str, image_version: str
) -> Path:
    esp = disk.by_type("esp")
    path = work / "esp.img"
    path.unlink(missing_ok=True)
    volume_id = esp.fs_uuid.replace("-", "")
    _run(
        "mkfs.vfat",
        "-F",
        "32",
        "-n",
        esp.label,
        "-i",
        volume_id,
        "-C",
        str(path),
        str(esp.size // 1024),
    )
    loader = tree / SYSTEMD_BOOT
    if not loader.is_file():
        raise AssembleError(f"/{SYSTEMD_BOOT}: systemd-boot is not in the root tree")
    version, kernel, initrd = _kernel(tree)
    env = templates()
    root = disk.by_type("linux-root-x86-64")
    conf = work / "loader.conf"
    conf.write_text(env.get_template("image/loader.conf.j2").render(entry=ENTRY))
    entry = work / f"{ENTRY}.conf"
    entry.write_text(
        env.get_template("image/loader-entry.conf.j2").render(
            entry=ENTRY,
            title=f"xnat-fleet relay ({recipe.profile})",
            kernel_version=version,
            cmdline=recipe.boot.cmdline(root.fs_uuid),
            image_id=image_id,
            image_version=image_version,
        )
    )
    mt = {"MTOOLS_SKIP_CHECK": "1"}
    img = str(path)
    _run(
        "mmd",
        "-i",
        img,
        "::/EFI",
        "::/EFI/BOOT",
        "::/EFI/systemd",
        "::/loader",
        "::/loader/entries",
        f"::/{ENTRY}",
        env=mt,
    )
    for src, dest in (
        (loader, "::/EFI/BOOT/BOOTX64.EFI"),
        (loader, "::/EFI/systemd/systemd-bootx64.efi"),
        (kernel, f"::/{ENTRY}/vmlinuz"),
        (initrd, f"::/{ENTRY}/initrd.img"),
        (conf, "::/loader/loader.conf"),
        (entry, f"::/loader/entries/{ENTRY}.conf"),
    ):
        _run("mcopy", "-i", img, str(src), dest, env=mt)
    return path


def make_root(tree: Path, disk: DiskPlan, work: Path) -> Path:
    root = disk.by_type("linux-root-x86-64")
    path = work / "root.img"
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(root.fs_size)
    # -d copies the tree with its owners and modes; no journal check at a relay's first mount
    # is needed (-E lazy_itable_init keeps the image small).
    _run(
        "mkfs.ext4",
        "-q",
        "-F",
        "-L",
        root.label,
        "-U",
        root.fs_uuid,
        "-d",
        str(tree),
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
        str(path),
    )
    return path


def assemble(
    tree: Path,
    recipe: Recipe,
    output: Path,
    work: Path,
    image_id: str,
    image_version: str,
    progress: Progress = lambda _msg: None,
) -> DiskPlan:
    """The disk image ``output`` from the root tree ``tree``; its layout and UUIDs."""
    disk = plan(recipe)
    work.mkdir(parents=True, exist_ok=True)
    write_boot_config(tree, recipe, disk)
    progress("ESP: systemd-boot, kernel, initrd")
    esp = make_esp(tree, recipe, disk, work, image_id, image_version)
    progress("root file system: mkfs.ext4 -d")
    root = make_root(tree, disk, work)
    progress("GPT and copy")
    output.unlink(missing_ok=True)
    with output.open("wb") as f:
        f.truncate(disk.size)
    proc = subprocess.run(  # noqa: S603
        [_tool("sfdisk"), "--quiet", "--no-reread", "--no-tell-kernel", str(output)],
        input=sfdisk_script(disk),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise AssembleError(f"sfdisk failed: {proc.stderr.strip()}")
    files.copy_extents(esp, output, offset=disk.by_type("esp").start)
    root_part = disk.by_type("linux-root-x86-64")
    files.copy_extents(root, output, offset=root_part.start)
    if root_part.md_mirror:
        progress("md RAID1 member superblock (format 1.0) at the root partition's end")
        member = mdsuper.raid1_member(root_part.size, MD_ROOT_NAME)
        with output.open("r+b") as f:
            f.seek(root_part.start + member.super_offset)
            f.write(member.block)
    esp.unlink()
    root.unlink()
    return disk
