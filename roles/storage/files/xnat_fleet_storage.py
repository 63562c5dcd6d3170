#!/usr/bin/python3
"""A relay's data storage: installed as /usr/local/sbin/xnat-fleet-storage by the storage role.

    xnat-fleet-storage apply [--dry-run] [--recovery-key-stdin]
        Lay out the data storage that /etc/xnat-fleet/storage.json describes: at a relay's
        first boot (the first-boot hook), or from the role on a host that was not cloned. Every
        step looks before it acts, so a run cut off half-way (a power cut) is completed by the
        next one, and a run on a finished layout changes nothing. Prints one JSON line:
        {"changed": bool, "actions": [...]}.
    xnat-fleet-storage check-boot
        At every boot, before Tomcat: once the layout exists, its data file system must be
        mounted; if not, says why (journal, every console, a mail to root, i.e. the study
        admin) and fails, and Tomcat (Requires= on this check) stays stopped.
    xnat-fleet-storage assemble [--wait S]
        Layout pool, at every boot before the data volume is opened: an array of this layout
        that udev left incomplete (a disk is missing) is started degraded after S seconds, as
        md's own last-resort timer would for an array of this host, and LVM is activated.
    xnat-fleet-storage heal
        Layout pool, at boot and daily: a degraded data pool takes a blank data disk (one with
        no signature at all: a replacement) and rebuilds on it; the admin gets a mail.
    xnat-fleet-storage check-config CANDIDATE | check-unit NAME CANDIDATE
        The role's `validate` commands: a configuration file as this tool reads it; a systemd
        unit copied under its real name and checked with `systemd-analyze verify`.
    xnat-fleet-storage status [--json] [--mail]
        Health in one machine-readable place (the status file): free space of the root and data
        file systems (warn / alarm thresholds), md arrays, SMART, the encrypted volume. With
        --mail, the study admin gets a mail when the verdict is not ok (the daily timer).

Layout "single" (an Intel NUC's one SSD; docs/storage.md explains it): the root partition grows
to ``root_size`` (never past what the data partition needs), a data partition labelled
``data_label`` takes the rest of the disk, LUKS2 with a recovery passphrase (from the vault)
and a TPM2 token (systemd-cryptenroll, PCR 7), ext4 inside, mounted on ``data_mount`` with the
image's own data tree copied in.

Layout "pool" (a Supermicro's two boot SSDs and four data disks): the root is an md RAID1
from the image on (format 1.0, one member); at first boot SSD B gets SSD A's partitions, its
own copy of the ESP and its root in the mirror; a cache partition on each SSD forms an md
RAID1; the data disks (named by id, or chosen by rule: rotational, large enough, not a boot
disk, nothing foreign on them unless ``wipe`` names them) form an md RAID6 (or RAID10) with
LVM on it, the cache attached writethrough (lvmcache), LUKS2 on the data volume, ext4 inside.
An existing pool is assembled and completed, never made again.

The tool only uses Debian 12's util-linux, cryptsetup, systemd, e2fsprogs and (layout pool)
mdadm, lvm2, dosfstools and efibootmgr; it never touches a disk or partition it did not make
unless the configuration's ``wipe`` names the disk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG = Path(os.environ.get("XNAT_FLEET_STORAGE_CONFIG", "/etc/xnat-fleet/storage.json"))
# GUID of a Linux file system data partition (the discoverable partitions specification).
LINUX_DATA = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
MIB_SECTORS = 2048  # 1 MiB in 512-byte sectors: partitions start and end on MiB boundaries
SECTOR = 512  # sysfs gives partition and disk sizes in 512-byte units, whatever the disk's
MARKER = ".xnat-fleet-storage.json"  # on the data file system: what made it, and from which image
WORK = Path("/run/xnat-fleet-storage")
CRYPTSETUP = "/lib/systemd/systemd-cryptsetup"


class StorageError(Exception):
    """A layout that cannot be made as configured; the message says what and where."""


@dataclass
class Config:
    layout: str = "single"
    data_mount: str = "/data"
    data_label: str = "relay-data"
    root_size: int = 32 << 30
    data_min_size: int = 1 << 30
    filesystem: str = "ext4"
    encrypt: bool = True
    unlock: str = "tpm2"  # tpm2 | none
    tpm2_pcrs: str = "7"
    recovery_key_file: str = "/etc/xnat-fleet/storage/recovery.key"
    # Copied from the image over an existing data file system made from an older image.
    refresh: list[str] = field(default_factory=lambda: ["xnat/home/config", "xnat/home/plugins"])
    space_warn_percent: int = 80
    space_alarm_percent: int = 90
    status_file: str = "/var/lib/xnat-fleet/storage-status.json"
    state_file: str = "/var/lib/xnat-fleet/storage-state.json"
    mail_to: str = "root"
    # Layout "pool" (Supermicro): the boot mirror's second disk and the data pool.
    mirror_disk: str = ""  # /dev/disk/by-id/... of SSD B; "" = chosen by rule
    cache: bool = True  # an SSD cache (lvmcache, writethrough) on an md RAID1 of both SSDs
    cache_size: int = 0  # bytes per SSD; 0 = the rest of each SSD
    pool_level: str = "raid6"  # raid6 (any two disks may fail) | raid10
    pool_disks: list[str] = field(default_factory=list)  # by-id paths; [] = chosen by rule
    pool_disk_count: int = 4
    pool_disk_min_size: int = 1 << 30
    wipe: list[str] = field(default_factory=list)  # by-id paths whose old contents may go
    volume_group: str = "relaypool"

    @classmethod
    def load(cls, path: Path = CONFIG) -> Config:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise StorageError(f"{path} is missing (the storage role writes it)") from None
        except json.JSONDecodeError as exc:
            raise StorageError(f"{path}: not JSON ({exc})") from None
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise StorageError(f"{path}: unknown keys {', '.join(unknown)}")
        cfg = cls(**raw)
        if cfg.layout not in ("single", "pool", "none"):
            raise StorageError(f"{path}: layout {cfg.layout!r} is not one of single, pool, none")
        if cfg.pool_level not in ("raid6", "raid10"):
            raise StorageError(f"{path}: pool_level {cfg.pool_level!r} is not raid6 or raid10")
        if cfg.pool_disk_count < 4:
            raise StorageError(f"{path}: pool_disk_count must be at least 4 (RAID6, RAID10)")
        if cfg.pool_level == "raid10" and cfg.pool_disk_count % 2:
            raise StorageError(f"{path}: RAID10 needs an even pool_disk_count")
        if cfg.pool_disks and len(cfg.pool_disks) != cfg.pool_disk_count:
            raise StorageError(
                f"{path}: pool_disks names {len(cfg.pool_disks)} disks, pool_disk_count is "
                f"{cfg.pool_disk_count}"
            )
        for name in [*cfg.pool_disks, *cfg.wipe, *([cfg.mirror_disk] if cfg.mirror_disk else [])]:
            if not name.startswith("/dev/disk/by-id/"):
                raise StorageError(f"{path}: {name!r}: disks are named by /dev/disk/by-id/ path")
        if cfg.unlock not in ("tpm2", "none"):
            raise StorageError(f"{path}: unlock {cfg.unlock!r} is not one of tpm2, none")
        if not 0 < cfg.space_warn_percent <= cfg.space_alarm_percent <= 100:
            raise StorageError(f"{path}: need 0 < space_warn_percent <= space_alarm_percent <= 100")
        return cfg

    @property
    def mapper(self) -> str:
        return self.data_label

    @property
    def data_device(self) -> str:
        """What is mounted on data_mount: the opened LUKS volume or the partition itself."""
        if self.encrypt:
            return f"/dev/mapper/{self.mapper}"
        if self.layout == "pool":
            return self.pool_volume
        return f"/dev/disk/by-partlabel/{self.data_label}"

    @property
    def pool_volume(self) -> str:
        """The pool's logical volume (under LUKS2 when encrypted)."""
        return f"/dev/{self.volume_group}/data"

    @property
    def device_timeout(self) -> str:
        """How long boot waits for the data device: a degraded pool starts after ~30 s."""
        return "90s" if self.layout == "pool" else "30s"


def log(message: str) -> None:
    print(f"xnat-fleet storage: {message}", file=sys.stderr, flush=True)


def run(
    argv: Sequence[str], *, stdin: str | None = None, env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run a command (never with a secret on its command line); its output is returned."""
    full_env = None if env is None else {**os.environ, **env}
    proc = subprocess.run(  # noqa: S603 (argv lists, no shell)
        list(argv), input=stdin, capture_output=True, text=True, env=full_env, check=False
    )
    if check and proc.returncode != 0:
        said = proc.stderr.strip() or proc.stdout.strip()
        raise StorageError(f"{shlex.join(argv)} failed ({proc.returncode}): {said}")
    return proc


# -- the disk ------------------------------------------------------------------------------


@dataclass
class Part:
    name: str  # kernel name, e.g. vda2
    number: int
    start: int  # 512-byte sectors
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def path(self) -> str:
        return f"/dev/{self.name}"


@dataclass
class Disk:
    name: str  # e.g. vda
    sectors: int  # 512-byte sectors
    parts: list[Part]

    @property
    def path(self) -> str:
        return f"/dev/{self.name}"

    @property
    def usable_end(self) -> int:
        """The last MiB boundary before the backup GPT (33 sectors at the disk's end)."""
        return (self.sectors - 34) // MIB_SECTORS * MIB_SECTORS


SYS = Path(os.environ.get("XNAT_FLEET_STORAGE_SYSFS", "/sys"))


def read_disk(name: str) -> Disk:
    base = SYS / "class/block" / name
    sectors = int((base / "size").read_text())
    parts = []
    for entry in sorted(base.iterdir()):
        if (entry / "partition").is_file():
            parts.append(
                Part(
                    entry.name,
                    int((entry / "partition").read_text()),
                    int((entry / "start").read_text()),
                    int((entry / "size").read_text()),
                )
            )
    return Disk(name, sectors, sorted(parts, key=lambda p: p.start))


def root_partition() -> tuple[Disk, Part]:
    source = run(["findmnt", "-n", "-o", "SOURCE", "/"]).stdout.strip()
    name = Path(os.path.realpath(source)).name
    parent = run(["lsblk", "-n", "-o", "PKNAME", f"/dev/{name}"]).stdout.split()
    if not parent:
        raise StorageError(f"the root file system ({source}) is not on a partition of a disk")
    disk = read_disk(parent[0])
    part = next((p for p in disk.parts if p.name == name), None)
    if part is None:
        raise StorageError(f"{name} is not a partition of {disk.path}")
    return disk, part


def partition_by_label(disk: Disk, label: str) -> Part | None:
    out = run(["lsblk", "-J", "-o", "NAME,PARTLABEL", disk.path]).stdout
    children = json.loads(out)["blockdevices"][0].get("children", [])
    name = next((c["name"] for c in children if c.get("partlabel") == label), None)
    return next((p for p in disk.parts if p.name == name), None)


@dataclass
class Plan:
    """How the single-disk layout changes the boot disk's table (512-byte sectors)."""

    root_end: int  # the root partition's new end (== its end when it does not grow)
    data_start: int
    data_size: int

    @property
    def grows_root(self) -> bool:
        return self.root_end > 0


def plan_single(disk: Disk, root: Part, cfg: Config) -> Plan:
    """Root grows to root_size (aligned down) but leaves data_min_size; data takes the rest."""
    if disk.parts[-1].name != root.name:
        raise StorageError(
            f"{disk.path}: the root partition {root.name} is not the last one; a data partition "
            "cannot follow it"
        )
    limit = disk.usable_end - cfg.data_min_size // SECTOR
    wanted = (root.start + cfg.root_size // SECTOR) // MIB_SECTORS * MIB_SECTORS
    root_end = min(wanted, limit)
    if root_end < root.end:
        root_end = root.end  # never shrink: the image's root is at least its built size
    data_start = -(-root_end // MIB_SECTORS) * MIB_SECTORS
    data_size = disk.usable_end - data_start
    if data_size * SECTOR < cfg.data_min_size:
        have = (disk.sectors * SECTOR) >> 20
        raise StorageError(
            f"{disk.path} ({have} MiB) has no room for a data partition of at least "
            f"{cfg.data_min_size >> 20} MiB after the root partition"
        )
    return Plan(root_end if root_end > root.end else 0, data_start, data_size)


# -- state ------------------------------------------------------------------------------------


def load_state(cfg: Config) -> dict[str, Any]:
    try:
        return dict(json.loads(Path(cfg.state_file).read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def save_state(cfg: Config, state: dict[str, Any]) -> None:
    path = Path(cfg.state_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


# -- apply ------------------------------------------------------------------------------------


class Applier:
    def __init__(self, cfg: Config, dry_run: bool, recovery_key: str | None) -> None:
        self.cfg = cfg
        self.dry_run = dry_run
        self.recovery_key = recovery_key
        self.actions: list[str] = []
        self.state = load_state(cfg)

    def act(self, what: str) -> bool:
        """Record an action; True when it is to be carried out (not a dry run)."""
        self.actions.append(what)
        if not self.dry_run:
            log(what)
        return not self.dry_run

    def key(self) -> str:
        if self.recovery_key:
            return self.recovery_key
        path = Path(self.cfg.recovery_key_file)
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            raise StorageError(
                f"{path} is missing: the recovery passphrase (the relay's "
                "vault_storage_recovery_passphrase) is needed to make the encrypted volume"
            ) from None
        if len(value) < 20:
            raise StorageError(f"{path}: the recovery passphrase is shorter than 20 characters")
        return value

    def apply(self) -> None:
        if self.cfg.layout == "none":
            return
        if run(["systemd-detect-virt", "--quiet", "--container"], check=False).returncode == 0:
            log("in a container: no disk of its own to lay out")
            return
        if self.cfg.layout == "pool":
            PoolLayout(self).apply()
            self.finish()
            return
        disk, root = root_partition()
        data = partition_by_label(disk, self.cfg.data_label)
        if data is None:
            data = self.make_partitions(disk, root)
        if data is None:  # a dry run: the rest follows from the new partition
            if self.cfg.encrypt:
                self.act(f"make and open the LUKS2 volume {self.cfg.mapper} ({self.cfg.unlock})")
            fs, mount = self.cfg.filesystem, self.cfg.data_mount
            self.act(f"make an {fs} file system and mount it on {mount}")
            return
        device = f"/dev/{data.name}"
        if self.cfg.encrypt:
            self.encrypt(device)
        self.filesystem()
        self.mount()
        self.finish()

    def finish(self) -> None:
        if self.cfg.encrypt and not self.dry_run:
            self.forget_recovery_key()
        if not self.dry_run and not self.state.get("applied"):
            self.state["applied"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            save_state(self.cfg, self.state)

    def make_partitions(self, disk: Disk, root: Part) -> Part | None:
        plan = plan_single(disk, root, self.cfg)
        number = max(p.number for p in disk.parts) + 1
        if self.act(f"move the backup GPT of {disk.path} to the disk's end"):
            run(["sfdisk", "--relocate", "gpt-bak-std", disk.path])
        if plan.grows_root:
            size = (plan.root_end - root.start) * SECTOR
            if self.act(f"grow {root.path} to {size >> 20} MiB and its file system with it"):
                sfdisk = ["sfdisk", "--no-reread", "--no-tell-kernel", "-N", str(root.number)]
                run([*sfdisk, disk.path], stdin=f"{root.start}, {plan.root_end - root.start}\n")
                run(["partx", "--update", "--nr", str(root.number), disk.path])
                run(["resize2fs", root.path])
        size = plan.data_size * SECTOR
        what = f"make partition {number} ({self.cfg.data_label}, {size >> 20} MiB) on {disk.path}"
        if not self.act(what):
            return None
        run(
            ["sfdisk", "--append", "--no-reread", "--no-tell-kernel", disk.path],
            stdin=f"start={plan.data_start}, size={plan.data_size}, type={LINUX_DATA}, "
            f'name="{self.cfg.data_label}"\n',
        )
        run(["partx", "--add", "--nr", str(number), disk.path])
        run(["udevadm", "settle"])
        part = next((p for p in read_disk(disk.name).parts if p.number == number), None)
        if part is None:
            raise StorageError(f"{disk.path}: partition {number} did not appear")
        # Ours from here on: a cut-off run may wipe what it finds there (the space of a reused
        # disk can hold an old file system's signature).
        self.state["data_partition"] = part.name
        save_state(self.cfg, self.state)
        run(["wipefs", "--all", "--quiet", part.path])
        return part

    def encrypt(self, device: str) -> None:
        if run(["cryptsetup", "isLuks", device], check=False).returncode != 0:
            signature = run(["blkid", "-p", "-o", "value", "-s", "TYPE", device], check=False)
            if signature.stdout.strip():
                if self.state.get("data_partition") != Path(device).name:
                    raise StorageError(
                        f"{device} holds a {signature.stdout.strip()} signature that this tool "
                        "did not make: left untouched"
                    )
                if self.act(f"wipe the stale {signature.stdout.strip()} signature on {device}"):
                    run(["wipefs", "--all", "--quiet", device])
            if self.act(f"make a LUKS2 volume on {device} (recovery passphrase from the vault)"):
                run(
                    ["cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
                     "--label", self.cfg.data_label, "--key-file", "-", device],
                    stdin=self.key(),
                )  # fmt: skip
        if self.cfg.unlock == "tpm2" and not self.has_token(device, "systemd-tpm2"):
            if not Path("/dev/tpmrm0").exists():
                raise StorageError(
                    "the profile binds the data volume to a TPM2, and this box shows none "
                    "(/dev/tpmrm0): enable the TPM in the firmware"
                )
            if self.act(f"bind {device} to this box's TPM2 (PCRs {self.cfg.tpm2_pcrs})"):
                run(
                    ["systemd-cryptenroll", "--tpm2-device=auto",
                     f"--tpm2-pcrs={self.cfg.tpm2_pcrs}", device],
                    env={"PASSWORD": self.key()},
                )  # fmt: skip
        self.crypttab(device)
        if not Path(self.cfg.data_device).exists() and self.act(f"open {device}"):
            if self.cfg.unlock == "tpm2":
                # as at every later boot: through the TPM, with no passphrase
                run([CRYPTSETUP, "attach", self.cfg.mapper, device, "none", self.unlock_options()])
            else:
                run(
                    ["cryptsetup", "open", "--key-file", "-", device, self.cfg.mapper],
                    stdin=self.key(),
                )

    def has_token(self, device: str, kind: str) -> bool:
        if self.dry_run and run(["cryptsetup", "isLuks", device], check=False).returncode:
            return False
        dump = run(["cryptsetup", "luksDump", "--dump-json-metadata", device]).stdout
        tokens = json.loads(dump).get("tokens", {})
        return any(t.get("type") == kind for t in tokens.values())

    def unlock_options(self) -> str:
        options = ["luks", "discard", "headless=true", "nofail",
                   f"x-systemd.device-timeout={self.cfg.device_timeout}"]  # fmt: skip
        if self.cfg.unlock == "tpm2":
            options.insert(0, "tpm2-device=auto")
        return ",".join(options)

    def crypttab(self, device: str) -> None:
        if self.dry_run and run(["cryptsetup", "isLuks", device], check=False).returncode:
            self.act(f"add {self.cfg.mapper} to /etc/crypttab")
            return
        uuid = run(["cryptsetup", "luksUUID", device]).stdout.strip()
        line = f"{self.cfg.mapper} UUID={uuid} none {self.unlock_options()}"
        replace_line(Path("/etc/crypttab"), self.cfg.mapper, line, self)

    def filesystem(self) -> None:
        device = self.cfg.data_device
        if self.dry_run and not Path(device).exists():
            self.act(f"make an {self.cfg.filesystem} file system on {device}")
            return
        kind = run(["blkid", "-p", "-o", "value", "-s", "TYPE", device], check=False)
        found = kind.stdout.strip()
        if found == self.cfg.filesystem:
            return
        if found:
            raise StorageError(f"{device} holds {found}, not {self.cfg.filesystem}: left untouched")
        if self.act(f"make an {self.cfg.filesystem} file system labelled {self.cfg.data_label}"):
            run(["mkfs." + self.cfg.filesystem, "-q", "-m", "1", "-L", self.cfg.data_label, device])

    def mount(self) -> None:
        mount = self.cfg.data_mount
        options = f"defaults,nofail,x-systemd.device-timeout={self.cfg.device_timeout}"
        line = f"{self.cfg.data_device} {mount} {self.cfg.filesystem} {options} 0 2"
        if os.path.ismount(mount) and self.fstab_has(line):
            return
        if self.dry_run:
            self.act(f"mount {self.cfg.data_device} on {mount} with the image's data tree in it")
            return
        WORK.mkdir(parents=True, exist_ok=True)
        new, image = WORK / "data", WORK / "image-root"
        new.mkdir(exist_ok=True)
        image.mkdir(exist_ok=True)
        run(["mount", self.cfg.data_device, str(new)])
        try:
            run(["mount", "--bind", "/", str(image)])  # the root's own tree, under any mount
            try:
                self.fill(image / mount.lstrip("/"), new)
            finally:
                run(["umount", str(image)])
        finally:
            run(["umount", str(new)])
        replace_line(Path("/etc/fstab"), f"{self.cfg.data_device} ", line, self, by_prefix=True)
        run(["systemctl", "daemon-reload"])
        if not os.path.ismount(mount):
            self.act(f"mount {mount}")
            run(["mount", mount])

    @staticmethod
    def fstab_has(line: str) -> bool:
        try:
            return line in Path("/etc/fstab").read_text().splitlines()
        except FileNotFoundError:
            return False

    def fill(self, source: Path, target: Path) -> None:
        """The image's data tree into a new data file system; refresh an older one's config."""
        image = os_release().get("IMAGE_VERSION", "")
        marker = target / MARKER
        try:
            made = json.loads(marker.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            made = None
        if made is None:
            self.act(f"copy the image's {source.name} tree into the new data file system")
            if source.is_dir():
                run(["cp", "-a", "--reflink=never", f"{source}/.", f"{target}/"])
            made = {"made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "image": image}
        elif made.get("image") != image:
            for rel in self.cfg.refresh:
                if (source / rel).is_dir():
                    self.act(
                        f"refresh {rel} from image {image} (the data came from {made['image']})"
                    )
                    shutil.rmtree(target / rel, ignore_errors=True)
                    (target / rel).parent.mkdir(parents=True, exist_ok=True)
                    run(["cp", "-a", "--reflink=never", str(source / rel), str(target / rel)])
            made["image"] = image
        else:
            return
        marker.write_text(json.dumps(made, sort_keys=True) + "\n")
        run(["sync", "-f", str(target)])

    def forget_recovery_key(self) -> None:
        path = Path(self.cfg.recovery_key_file)
        if path.exists() and self.cfg.unlock != "none":
            self.act(f"shred {path}: the TPM opens the volume, the vault keeps the passphrase")
            run(["shred", "--remove", str(path)])


def replace_line(
    path: Path, key: str, line: str, applier: Applier, by_prefix: bool = False
) -> None:
    """Put LINE in PATH in place of the line whose first field is KEY (or that starts with it)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    if line in lines:
        return

    def matches(existing: str) -> bool:
        if by_prefix:
            return existing.startswith(key)
        return existing.split()[:1] == [key]

    kept = [existing for existing in lines if not matches(existing)]
    if not applier.act(f"write {line.split()[0]} to {path}"):
        return
    tmp = path.with_name(path.name + ".xnat-fleet-new")
    tmp.write_text("\n".join([*kept, line]) + "\n")
    if path.exists():
        shutil.copymode(path, tmp)
    tmp.replace(path)


def os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        for raw in Path("/etc/os-release").read_text().splitlines():
            key, sep, value = raw.partition("=")
            if sep:
                out[key] = value.strip().strip('"')
    return out


# -- layout "pool": the Supermicro's boot mirror, SSD cache and data pool ----------------------

LINUX_RAID = "A19D880F-05FC-4D3B-A006-743F0F84911E"
ROOT_ARRAY, CACHE_ARRAY, POOL_ARRAY = "root", "cache", "pool"
POOL_LABEL, CACHE_LABEL = "relay-pool", "cache"
# What a replacement data disk may lack against the others' partitions (vendors' sizes differ).
POOL_SLACK = 64 << 20
BY_ID_PREFERENCE = ("ata-", "nvme-", "scsi-", "usb-")


@dataclass
class BlockDisk:
    """A whole disk as the pool layout sees it."""

    name: str
    size: int  # bytes
    rotational: bool
    by_id: str  # the /dev/disk/by-id/ path it is named by ("" when it has none)
    signatures: list[str]  # what blkid/wipefs find on it and its partitions (empty: blank)
    part_labels: list[str]  # GPT partition names, in order

    @property
    def path(self) -> str:
        return f"/dev/{self.name}"


def by_id_names(by_id: Path = Path("/dev/disk/by-id")) -> dict[str, str]:
    """Kernel name -> the preferred /dev/disk/by-id/ link of each whole disk."""
    best: dict[str, str] = {}
    if not by_id.is_dir():
        return best
    for link in sorted(by_id.iterdir()):
        if "-part" in link.name:
            continue
        name = Path(os.path.realpath(link)).name
        rank = next((i for i, p in enumerate(BY_ID_PREFERENCE) if link.name.startswith(p)), 9)
        old = best.get(name)
        old_rank = 9 if old is None else next(
            (i for i, p in enumerate(BY_ID_PREFERENCE) if Path(old).name.startswith(p)), 9
        )  # fmt: skip
        if old is None or rank < old_rank:
            best[name] = str(link)
    return best


def list_disks() -> list[BlockDisk]:
    """Every whole disk with a device behind it (no loop, md, dm, optical drive)."""
    ids = by_id_names()
    disks = []
    for entry in sorted((SYS / "block").iterdir()):
        if not (entry / "device").exists() or entry.name.startswith(("sr", "loop", "md", "dm-")):
            continue
        size = int((entry / "size").read_text()) * SECTOR
        rotational = (entry / "queue/rotational").read_text().strip() == "1"
        disks.append(BlockDisk(entry.name, size, rotational, ids.get(entry.name, ""), [], []))
    for d in disks:
        d.signatures, d.part_labels = signatures(d.path)
    return disks


def signatures(device: str) -> tuple[list[str], list[str]]:
    """What a disk holds (partition table, file systems, md/LVM/LUKS members) and its GPT names."""
    found: list[str] = []
    labels: list[str] = []
    out = run(["lsblk", "-J", "-b", "-o", "NAME,TYPE,FSTYPE,PARTLABEL,LABEL,PTTYPE", device],
              check=False).stdout  # fmt: skip
    try:
        tree = json.loads(out)["blockdevices"][0]
    except (json.JSONDecodeError, KeyError, IndexError):
        return found, labels
    if tree.get("pttype"):
        found.append(f"{tree['pttype']} partition table")
    if tree.get("fstype"):
        found.append(f"{tree['fstype']}" + (f" ({tree['label']})" if tree.get("label") else ""))
    for child in tree.get("children", []):
        if child.get("type") != "part":
            continue
        labels.append(child.get("partlabel") or "")
        if child.get("fstype"):
            label = f" ({child['label']})" if child.get("label") else ""
            found.append(f"{child['name']}: {child['fstype']}{label}")
    if not found:
        probe = run(["wipefs", "--no-act", "--noheadings", "-o", "TYPE", device], check=False)
        found += [line.strip() for line in probe.stdout.splitlines() if line.strip()]
    return found, labels


@dataclass
class PoolChoice:
    """The data disks picked for the pool, and those passed over (with why)."""

    disks: list[BlockDisk]
    skipped: list[tuple[BlockDisk, str]]


def is_pool_member(disk: BlockDisk) -> bool:
    """A disk this layout made for the pool: one GPT partition named relay-pool, an md member."""
    return disk.part_labels == [POOL_LABEL] and any(
        "linux_raid_member" in s for s in disk.signatures
    )


def choose_pool_disks(disks: list[BlockDisk], boot: set[str], cfg: Config) -> PoolChoice:
    """The inventory's disks by id, else by rule: rotational, large enough, not a boot disk.
    A disk with anything on it that is not this pool's is passed over unless ``wipe`` names it."""
    skipped: list[tuple[BlockDisk, str]] = []
    chosen: list[BlockDisk] = []
    if cfg.pool_disks:
        by_id = {d.by_id: d for d in disks if d.by_id}
        for name in cfg.pool_disks:
            if name not in by_id:
                raise StorageError(f"the inventory's pool disk {name} is not attached")
        candidates = [by_id[name] for name in cfg.pool_disks]
    else:
        candidates = []
        for d in disks:
            if d.name in boot:
                continue
            if not d.rotational:
                skipped.append((d, "not rotational (an SSD)"))
            elif d.size < cfg.pool_disk_min_size:
                skipped.append((d, f"smaller than {cfg.pool_disk_min_size >> 20} MiB"))
            else:
                candidates.append(d)
    for d in candidates:
        if d.name in boot:
            raise StorageError(f"{d.by_id or d.path} is a boot disk and cannot be a pool disk")
        if d.signatures and not is_pool_member(d) and d.by_id not in cfg.wipe:
            what = ", ".join(d.signatures)
            skipped.append((d, f"holds {what}: left untouched (list it in storage_wipe to use it)"))
            continue
        chosen.append(d)
    if cfg.pool_disks and len(chosen) < len(candidates):
        reasons = "; ".join(f"{d.by_id}: {why}" for d, why in skipped)
        raise StorageError(f"the inventory's pool disks cannot all be used: {reasons}")
    return PoolChoice(sorted(chosen, key=lambda d: d.by_id or d.name)[: cfg.pool_disk_count],
                      skipped)  # fmt: skip


def choose_mirror_disk(
    disks: list[BlockDisk], boot: BlockDisk, need: int, cfg: Config
) -> BlockDisk:
    """SSD B: the inventory's, else the one other non-rotational disk large enough."""
    if cfg.mirror_disk:
        found = next((d for d in disks if d.by_id == cfg.mirror_disk), None)
        if found is None:
            raise StorageError(f"the inventory's mirror disk {cfg.mirror_disk} is not attached")
        return found
    ssds = [d for d in disks if d.name != boot.name and not d.rotational and d.size >= need]
    if len(ssds) != 1:
        names = ", ".join(d.by_id or d.path for d in ssds) or "none"
        raise StorageError(
            f"the boot mirror needs exactly one more SSD of at least {need >> 20} MiB besides "
            f"{boot.by_id or boot.path}; found {names} (name it: storage_mirror_disk)"
        )
    return ssds[0]


def export_tags(text: str) -> dict[str, str]:
    """KEY=VALUE lines (``mdadm --export``, one device of ``blkid -o export``)."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def md_detail(device: str) -> dict[str, str]:
    """``mdadm --detail --export``: MD_LEVEL, MD_DEVICES, MD_UUID, MD_DEVICE_<dev>_ROLE, ..."""
    return export_tags(run(["mdadm", "--detail", "--export", device], check=False).stdout)


def md_examine(device: str) -> dict[str, str]:
    return export_tags(run(["mdadm", "--examine", "--export", device], check=False).stdout)


def array_path(name: str) -> str:
    return f"/dev/md/{name}"


def array_members(name: str) -> list[str]:
    """Partitions whose md superblock names the array any:NAME (this layout's). blkid takes one
    search token only, so the type is checked on what it finds."""
    found = run(["blkid", "-o", "export", "-t", f"LABEL=any:{name}"], check=False).stdout
    members = []
    for block in found.split("\n\n"):
        tags = export_tags(block)
        if tags.get("TYPE") == "linux_raid_member" and tags.get("DEVNAME"):
            members.append(tags["DEVNAME"])
    return sorted(members)


def start_arrays(
    wait: float, volume_group: str, names: Sequence[str] = ("pool", "cache")
) -> list[str]:
    """md's own last resort for arrays udev left incomplete: after WAIT seconds for all their
    disks, start each of this layout's arrays with what is there (degraded: RAID6 runs without
    two disks, the cache mirror without one), then activate the volume group. What it did."""
    done: list[str] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not all(Path(array_path(n)).exists() for n in names):
        time.sleep(1)
    for name in names:
        if Path(array_path(name)).exists():
            continue
        members = array_members(name)
        if not members:
            continue
        held = [SYS / "class/block" / Path(m).name / "holders" for m in members]
        holders = {h.name for d in held for h in d.glob("md*")}
        if holders:
            for md in sorted(holders):
                run(["mdadm", "--run", f"/dev/{md}"])
                done.append(
                    f"start the incomplete {name} array /dev/{md} with {len(members)} disks"
                )
        else:
            run(["mdadm", "--assemble", "--run", array_path(name), *members])
            done.append(f"assemble the {name} array from {', '.join(members)}")
        log(done[-1])
    if done or Path(array_path(POOL_ARRAY)).exists():
        run(["udevadm", "settle"], check=False)
        run(["vgchange", "--activate", "y", volume_group], check=False)
    return done


class PoolLayout:
    """The boot mirror (md RAID1 root, ESP on both SSDs), the cache (md RAID1 of both SSDs'
    cache partitions) and the pool (md RAID6/10 of the data disks, LVM, the cache attached
    writethrough), LUKS2 on the pool's volume, ext4 on data_mount. What exists is assembled and
    completed, never made again: re-imaging the boot SSD keeps the pool."""

    def __init__(self, applier: Applier) -> None:
        self.a = applier
        self.cfg = applier.cfg

    # the root array and its disks ------------------------------------------------------------

    def root_array(self) -> str:
        source = run(["findmnt", "-n", "-o", "SOURCE", "/"]).stdout.strip()
        name = Path(os.path.realpath(source)).name
        if not name.startswith("md"):
            raise StorageError(
                f"the root ({source}) is not an md array: the pool layout needs the image of a "
                "profile with a mirrored root (relay_images/supermicro.yml)"
            )
        return f"/dev/{name}"

    @staticmethod
    def members(array: str) -> list[str]:
        """The member partitions of ARRAY (/dev/mdN or its /dev/md/NAME link)."""
        slaves = SYS / "block" / Path(os.path.realpath(array)).name / "slaves"
        return sorted(p.name for p in slaves.iterdir()) if slaves.is_dir() else []

    @staticmethod
    def parent(partition: str) -> str:
        return Path(os.path.realpath(SYS / "class/block" / partition)).parent.name

    def apply(self) -> None:
        root = self.root_array()
        members = self.members(root)
        disks = {d.name: d for d in list_disks()}
        boot_a = next(
            (disks[self.parent(m)] for m in members if self.parent(m) in disks), None
        )  # fmt: skip
        if boot_a is None:
            raise StorageError(f"{root}: none of its members ({members}) is on a disk")
        a = read_disk(boot_a.name)
        root_part = next(p for p in a.parts if p.name in members)
        need = (root_part.end + MIB_SECTORS) * SECTOR
        boot_b = self.mirror_disk(list(disks.values()), boot_a, need)
        self.assemble_existing()
        cache_size = self.cache_partitions(a, root_part, boot_b) if self.cfg.cache else 0
        self.mirror(a, root_part, root, boot_b)
        boot = {boot_a.name} | ({boot_b.name} if boot_b else set())
        self.pool(list(disks.values()), boot)
        if self.cfg.cache and boot_b is not None and cache_size:
            self.cache_array(boot_a, boot_b)
        self.volume()
        device = self.cfg.pool_volume
        if self.a.dry_run and not Path(device).exists():
            self.a.act(f"make LUKS2 on {device}, ext4 inside, mount it on {self.cfg.data_mount}")
            return
        if not self.a.dry_run and not Path(device).exists():
            # an existing volume that did not activate is never made again
            run(["lvchange", "--activate", "y", device.removeprefix("/dev/")])
        if self.cfg.encrypt:
            self.a.encrypt(device)
        self.a.filesystem()
        self.a.mount()

    def mirror_disk(self, disks: list[BlockDisk], boot_a: BlockDisk, need: int) -> BlockDisk:
        b = choose_mirror_disk(disks, boot_a, need, self.cfg)
        ours = b.part_labels[:2] == ["esp", "root"]
        if b.signatures and not ours and b.by_id not in self.cfg.wipe:
            raise StorageError(
                f"the mirror disk {b.by_id or b.path} holds {', '.join(b.signatures)}: left "
                "untouched (list it in storage_wipe to use it)"
            )
        return b

    def assemble_existing(self) -> None:
        """Start this relay's pool and cache arrays if the boot has not (a degraded one too)."""
        if self.a.dry_run:
            missing = [n for n in (POOL_ARRAY, CACHE_ARRAY) if not Path(array_path(n)).exists()]
            for name in missing:
                if array_members(name):
                    self.a.act(f"start the existing {name} array")
            return
        for line in start_arrays(0, self.cfg.volume_group):
            self.a.act(line)

    # the boot SSDs --------------------------------------------------------------------------

    def cache_partitions(self, a: Disk, root: Part, b: BlockDisk) -> int:
        """A cache partition after the root on SSD A (SSD B gets the same table: mirror())."""
        have = partition_by_label(a, CACHE_LABEL)
        if have is not None:
            return have.size * SECTOR
        start = -(-root.end // MIB_SECTORS) * MIB_SECTORS
        b_end = (b.size // SECTOR - 34) // MIB_SECTORS * MIB_SECTORS
        end = min(a.usable_end, b_end)
        if self.cfg.cache_size:
            end = min(end, start + self.cfg.cache_size // SECTOR // MIB_SECTORS * MIB_SECTORS)
        size = end - start
        if size < 64 * MIB_SECTORS:
            raise StorageError(f"{a.path}: no room for a cache partition after the root")
        if self.a.act(f"move the backup GPT of {a.path} to the disk's end"):
            run(["sfdisk", "--relocate", "gpt-bak-std", a.path])
        number = max(p.number for p in a.parts) + 1
        if self.a.act(f"make cache partition {number} ({size >> 11} MiB) on {a.path}"):
            run(
                ["sfdisk", "--append", "--no-reread", "--no-tell-kernel", a.path],
                stdin=f'start={start}, size={size}, type={LINUX_RAID}, name="{CACHE_LABEL}"\n',
            )
            run(["partx", "--add", "--nr", str(number), a.path])
            run(["udevadm", "settle"])
            if partition_by_label(read_disk(a.name), CACHE_LABEL) is None:
                raise StorageError(f"{a.path}: the cache partition did not appear")
        return size * SECTOR

    def mirror(self, a: Disk, root_part: Part, root: str, b: BlockDisk) -> None:
        """SSD B: A's partition table (ESP, root, cache), its own ESP copy, its root in the
        mirror. A stale mirror half (SSD A was re-imaged) is taken back, never kept apart."""
        a = read_disk(a.name)
        b_disk = read_disk(b.name)
        same = [(p.start, p.size) for p in b_disk.parts] == [(p.start, p.size) for p in a.parts]
        if not same:
            self.release(b_disk)
            if self.a.act(f"give {b.by_id or b.path} the boot SSD's partitions (ESP, root, cache)"):
                dump = run(["sfdisk", "--dump", a.path]).stdout
                lines = [ln for ln in dump.splitlines()
                         if not ln.startswith(("label-id:", "device:", "last-lba:"))]  # fmt: skip
                lines = [re.sub(r",\s*uuid=[0-9A-Fa-f-]+", "", ln) for ln in lines]
                lines = [re.sub(r"^/dev/\S+\s*:\s*", "", ln) for ln in lines]
                run(["wipefs", "--all", "--quiet", b.path])
                run(["sfdisk", "--quiet", b.path], stdin="\n".join(lines) + "\n")
                run(["partx", "--update", b.path], check=False)
                run(["udevadm", "settle"])
            b_disk = read_disk(b.name)
        if self.a.dry_run and not b_disk.parts:
            self.a.act(f"copy the ESP to {b.path}, add its root to {root}")
            return
        esp_b, root_b = b_disk.parts[0], b_disk.parts[1]
        self.esp_copy(esp_b.path)
        if root_b.name not in self.members(root):
            detail = md_examine(root_b.path)
            if detail.get("MD_UUID") and detail.get("MD_UUID") != md_detail(root).get("MD_UUID"):
                self.stop_arrays_on(root_b.name)
                if self.a.act(f"forget the stale mirror half on {root_b.path}"):
                    run(["mdadm", "--zero-superblock", root_b.path])
            if self.a.act(f"add {root_b.path} to the root mirror {root} (it resyncs)"):
                if not Path(SYS / "block" / Path(root).name / "md/bitmap").is_dir():
                    # a write-intent bitmap: a member back after a crash resyncs what changed
                    proc = run(["mdadm", "--grow", root, "--bitmap=internal"], check=False)
                    if proc.returncode:
                        log(f"no write-intent bitmap on {root}: {proc.stderr.strip()}")
                run(["wipefs", "--all", "--quiet", root_b.path])
                run(["mdadm", root, "--add", root_b.path])
        raid_disks = int(md_detail(root).get("MD_DEVICES", "1"))
        if raid_disks < 2 and self.a.act(f"make {root} a two-disk mirror"):
            run(["mdadm", "--grow", root, "--raid-devices=2"])
        self.boot_entries(a, b_disk)

    def release(self, disk: Disk) -> None:
        """Before SSD B is partitioned again: its old cache half leaves LVM and md."""
        for p in disk.parts:
            self.stop_arrays_on(p.name, uncache=True)

    def stop_arrays_on(self, partition: str, uncache: bool = False) -> None:
        holders = SYS / "class/block" / partition / "holders"
        for md in sorted(holders.iterdir()) if holders.is_dir() else []:
            is_cache = Path(os.path.realpath(array_path(CACHE_ARRAY))).name == md.name
            volume = self.cfg.pool_volume.removeprefix("/dev/")
            if (
                is_cache
                and uncache
                and self.a.act(f"detach the SSD cache from {volume} (writethrough: no data lost)")
            ):
                run(["lvconvert", "--yes", "--uncache", volume], check=False)
                run(["vgreduce", "--yes", self.cfg.volume_group, f"/dev/{md.name}"], check=False)
                run(["pvremove", "--yes", f"/dev/{md.name}"], check=False)
            if self.a.act(f"stop /dev/{md.name} (on {partition})"):
                run(["mdadm", "--stop", f"/dev/{md.name}"])

    def esp_copy(self, esp_b: str) -> None:
        """SSD B's ESP: its own FAT (its own volume id), the same files as SSD A's."""
        kind = run(["blkid", "-p", "-o", "value", "-s", "TYPE", esp_b], check=False).stdout.strip()
        if kind != "vfat" and self.a.act(f"make the second ESP on {esp_b}"):
            run(["mkfs.vfat", "-F", "32", "-n", "ESP-B", esp_b])
        if self.a.dry_run:
            return
        WORK.mkdir(parents=True, exist_ok=True)
        target = WORK / "esp-b"
        target.mkdir(exist_ok=True)
        run(["mount", esp_b, str(target)])
        try:
            diff = run(["diff", "-rq", "/boot/efi", str(target)], check=False)
            if diff.returncode and self.a.act(f"copy the ESP's files to {esp_b}"):
                for old in target.iterdir():
                    if old.is_dir():
                        shutil.rmtree(old)
                    else:
                        old.unlink()
                run(["cp", "-r", "/boot/efi/.", f"{target}/"])
                run(["sync", "-f", str(target)])
        finally:
            run(["umount", str(target)])

    def boot_entries(self, a: Disk, b: Disk) -> None:
        """Both SSDs' ESPs in the UEFI boot order (removable-media path, systemd-boot)."""
        if not Path("/sys/firmware/efi").is_dir() or shutil.which("efibootmgr") is None:
            log("no UEFI variables here: the firmware finds both ESPs by their removable path")
            return
        listing = run(["efibootmgr"], check=False).stdout
        for disk, label in (
            (a, "xnat-fleet relay (boot SSD A)"),
            (b, "xnat-fleet relay (boot SSD B)"),
        ):
            if label in listing:
                continue
            if self.a.act(f"add {label} to the UEFI boot order"):
                run(["efibootmgr", "--quiet", "--create", "--disk", disk.path, "--part", "1",
                     "--label", label, "--loader", "\\EFI\\BOOT\\BOOTX64.EFI"],
                    check=False)  # fmt: skip

    def cache_array(self, boot_a: BlockDisk, boot_b: BlockDisk) -> None:
        parts = []
        for d in (boot_a, boot_b):
            part = partition_by_label(read_disk(d.name), CACHE_LABEL)
            if part is None:
                raise StorageError(f"{d.path}: the cache partition is missing")
            parts.append(part.path)
        path = array_path(CACHE_ARRAY)
        if not Path(path).exists():
            if self.a.act(f"make the cache mirror {path} of {', '.join(parts)}"):
                for p in parts:
                    self.stop_arrays_on(Path(p).name)  # a stale half from before a re-image
                    run(["wipefs", "--all", "--quiet", p])
                run(["mdadm", "--create", path, "--run", "--metadata=1.2", "--level=1",
                     "--raid-devices=2", "--homehost=any", f"--name={CACHE_ARRAY}",
                     "--bitmap=internal", *parts])  # fmt: skip
            return
        have = {f"/dev/{m}" for m in self.members(path)}
        for p in parts:
            if p not in have and self.a.act(f"add {p} to the cache mirror {path}"):
                self.stop_arrays_on(Path(p).name)  # a stale half from before a re-image
                run(["wipefs", "--all", "--quiet", p])
                run(["mdadm", path, "--add", p])

    # the data pool ----------------------------------------------------------------------------

    def pool(self, disks: list[BlockDisk], boot: set[str]) -> None:
        choice = choose_pool_disks(disks, boot, self.cfg)
        self.a.state["left_untouched"] = [
            {"disk": d.by_id or d.path, "why": why} for d, why in choice.skipped
            if "left untouched" in why
        ]  # fmt: skip
        for d, why in choice.skipped:
            if "left untouched" in why and not self.a.dry_run:
                alert(f"data disk {d.by_id or d.path} left untouched", f"{d.path}: {why}", self.cfg)
        if Path(array_path(POOL_ARRAY)).exists():
            return
        if len(choice.disks) < self.cfg.pool_disk_count:
            reasons = "; ".join(f"{d.by_id or d.path}: {why}" for d, why in choice.skipped)
            raise StorageError(
                f"the data pool needs {self.cfg.pool_disk_count} disks, {len(choice.disks)} can "
                f"be used ({reasons or 'no other disks'})"
            )
        if any(is_pool_member(d) for d in choice.disks):
            raise StorageError(
                "disks of an earlier pool are attached but the pool did not assemble: see "
                "`mdadm --examine` on them; nothing was changed"
            )
        size = min(d.size for d in choice.disks) - POOL_SLACK
        sectors = (size // SECTOR - 34 - MIB_SECTORS) // MIB_SECTORS * MIB_SECTORS
        parts = []
        for d in choice.disks:
            parts.append(self.pool_partition(d, sectors))
        level = "6" if self.cfg.pool_level == "raid6" else "10"
        names = ", ".join(d.by_id or d.path for d in choice.disks)
        if self.a.act(f"make the data pool {array_path(POOL_ARRAY)}: RAID{level} of {names}"):
            layout = ["--layout=n2"] if level == "10" else []
            run(["mdadm", "--create", array_path(POOL_ARRAY), "--run", "--metadata=1.2",
                 f"--level={level}", f"--raid-devices={len(parts)}", *layout, "--homehost=any",
                 f"--name={POOL_ARRAY}", "--bitmap=internal", *parts])  # fmt: skip

    def pool_partition(self, d: BlockDisk, sectors: int) -> str:
        if self.a.act(f"give {d.by_id or d.path} one pool partition ({sectors >> 11} MiB)"):
            run(["wipefs", "--all", "--quiet", d.path])
            run(["sfdisk", "--quiet", d.path],
                stdin=f'label: gpt\nstart={MIB_SECTORS}, size={sectors}, type={LINUX_RAID}, '
                      f'name="{POOL_LABEL}"\n')  # fmt: skip
            run(["udevadm", "settle"])
            part = read_disk(d.name).parts[0]
            run(["wipefs", "--all", "--quiet", part.path])
            return part.path
        return f"{d.path}1"

    def volume(self) -> None:
        """LVM on the pool; the data volume takes it all; the cache mirror attached writethrough."""
        vg, pool, cache = self.cfg.volume_group, array_path(POOL_ARRAY), array_path(CACHE_ARRAY)
        if self.a.dry_run and not Path(pool).exists():
            self.a.act(f"make volume group {vg} and its data volume, cached writethrough")
            return
        pvs = run(["pvs", "--noheadings", "-o", "pv_name,vg_name"], check=False).stdout
        known = {Path(os.path.realpath(line.split()[0])).name: (line.split()[1:] or [""])[0]
                 for line in pvs.splitlines() if line.split()}  # fmt: skip
        pool_dev = Path(os.path.realpath(pool)).name
        if run(["vgs", vg], check=False).returncode != 0:
            if known.get(pool_dev, "") not in ("", vg):
                raise StorageError(f"{pool} belongs to volume group {known[pool_dev]}: left alone")
            if self.a.act(f"make volume group {vg} on {pool}"):
                run(["pvcreate", "--yes", pool])
                run(["vgcreate", vg, pool])
        has_data = run(["lvs", f"{vg}/data"], check=False).returncode == 0
        if not has_data and self.a.act(f"make the data volume {vg}/data on all of {pool}"):
            run(["lvcreate", "--yes", "--wipesignatures", "y", "-n", "data",
                 "-l", "100%PVS", vg, pool])  # fmt: skip
            self.a.state["data_partition"] = "data"
            save_state(self.cfg, self.a.state)
        if not self.cfg.cache or not Path(cache).exists():
            return
        segtype = run(["lvs", "--noheadings", "-o", "segtype", f"{vg}/data"], check=False)
        if segtype.stdout.strip() == "cache":
            return
        cache_dev = Path(os.path.realpath(cache)).name
        if cache_dev not in known and self.a.act(f"add the cache mirror {cache} to {vg}"):
            run(["pvcreate", "--yes", cache])
            run(["vgextend", vg, cache])
        has_cache_lv = run(["lvs", f"{vg}/cache"], check=False).returncode == 0
        if not has_cache_lv and self.a.act(f"make the cache volume {vg}/cache on {cache}"):
            run(["lvcreate", "--yes", "-n", "cache", "-l", "100%PVS", vg, cache])
        if self.a.act(f"attach {vg}/cache to {vg}/data as a writethrough cache (lvmcache)"):
            run(["lvconvert", "--yes", "--type", "cache", "--cachevol", "cache",
                 "--cachemode", "writethrough", f"{vg}/data"])  # fmt: skip


def heal(cfg: Config, wait: float = 0.0) -> int:
    """A degraded data pool takes a blank data disk (a replacement) and rebuilds on it. WAIT:
    seconds to wait for the pool (md starts a degraded one ~30 s into the boot)."""
    pool = array_path(POOL_ARRAY)
    if cfg.layout != "pool" or not load_state(cfg).get("applied"):
        return 0
    deadline = time.monotonic() + wait
    while not Path(pool).exists() and time.monotonic() < deadline:
        time.sleep(2)
    if not Path(pool).exists():
        log(f"{pool} is not assembled: nothing to heal")
        return 0
    detail = md_detail(pool)
    members = PoolLayout.members(pool)
    want, have = int(detail.get("MD_DEVICES", "0")), len(members)
    if have >= want:
        return 0
    sizes = [int((SYS / "class/block" / m / "size").read_text()) for m in members]
    sectors = max(sizes) if sizes else 0
    if not sectors:
        raise StorageError(f"{pool}: no member left to size a replacement by")
    disks = list_disks()
    in_use = {PoolLayout.parent(m) for m in members}
    root = run(["findmnt", "-n", "-o", "SOURCE", "/"]).stdout.strip()
    boot = {PoolLayout.parent(m) for m in PoolLayout.members(root)}
    blank = [d for d in disks if d.name not in in_use | boot and not d.signatures and d.rotational
             and d.size >= (sectors + 34 + MIB_SECTORS) * SECTOR]  # fmt: skip
    applier = Applier(cfg, dry_run=False, recovery_key=None)
    layout = PoolLayout(applier)
    for d in blank[: want - have]:
        part = layout.pool_partition(d, sectors)
        alert(
            f"data pool degraded: rebuilding on {d.by_id or d.path}",
            f"{pool} had {have} of {want} disks; the blank disk {d.path} takes the missing place",
            cfg,
        )
        run(["mdadm", pool, "--add", part])
    return 0


# -- alerts -------------------------------------------------------------------------------


def consoles() -> Iterator[Path]:
    with contextlib.suppress(OSError):
        for name in Path("/sys/class/tty/console/active").read_text().split():
            yield Path("/dev") / name


def mail(subject: str, body: str, to: str) -> bool:
    """A mail through the local MTA (the smtp role's null client); False when there is none."""
    sendmail = shutil.which("sendmail") or "/usr/sbin/sendmail"
    if not Path(sendmail).exists():
        log("no sendmail: the mail could not be sent")
        return False
    host = os.uname().nodename
    message = f"To: {to}\nSubject: [{host}] {subject}\n\n{body}\n"
    proc = run([sendmail, "-t", "-oi"], stdin=message, check=False)
    if proc.returncode != 0:
        log(f"sendmail failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.returncode == 0


def alert(subject: str, body: str, cfg: Config) -> None:
    log(f"{subject}: {body}")
    for tty in consoles():
        with contextlib.suppress(OSError), tty.open("w") as out:
            out.write(f"\nxnat-fleet storage: {subject}\n{body}\n")
    mail(subject, body, cfg.mail_to)


# -- check-boot -------------------------------------------------------------------------------


def check_boot(cfg: Config) -> int:
    if cfg.layout == "none" or not load_state(cfg).get("applied"):
        log("the data storage is not laid out yet (the first boot does it)")
        return 0
    if os.path.ismount(cfg.data_mount):
        log(f"{cfg.data_mount} is mounted")
        return 0
    reasons = []
    if cfg.layout == "pool" and not Path(array_path(POOL_ARRAY)).exists():
        reasons.append(
            f"the data pool {array_path(POOL_ARRAY)} did not assemble: "
            f"{len(array_members(POOL_ARRAY))} of its {cfg.pool_disk_count} disks are attached"
        )
    if cfg.encrypt:
        unit = run(
            ["systemd-escape", "--template=systemd-cryptsetup@.service", cfg.mapper], check=False
        ).stdout.strip()
        show = run(["systemctl", "show", "-p", "ActiveState,Result", unit], check=False).stdout
        state = dict(line.split("=", 1) for line in show.split() if "=" in line)
        if not Path(cfg.data_device).exists():
            reasons.append(
                f"the encrypted volume {cfg.mapper} is not open ({unit}: "
                f"{state.get('ActiveState', '?')}, {state.get('Result', '?')}); with a TPM2 "
                "binding that means a different box, a changed firmware or a missing disk; "
                "the recovery passphrase is in the study's vault"
            )
    if not reasons:
        reasons.append(f"{cfg.data_device} did not mount on {cfg.data_mount}")
    alert(
        f"data storage missing: {cfg.data_mount} is not mounted, XNAT stays stopped",
        "\n".join(reasons),
        cfg,
    )
    return 1


# -- status -------------------------------------------------------------------------------


def space(mount: str, cfg: Config) -> dict[str, Any]:
    st = os.statvfs(mount)
    size = st.f_blocks * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    percent = round(100 * used / (used + avail), 1) if used + avail else 0.0
    level = "ok"
    if percent >= cfg.space_alarm_percent:
        level = "alarm"
    elif percent >= cfg.space_warn_percent:
        level = "warn"
    return {"mount": mount, "size_bytes": size, "used_bytes": used, "avail_bytes": avail,
            "used_percent": percent, "level": level}  # fmt: skip


def md_arrays(mdstat: str) -> list[dict[str, Any]]:
    """/proc/mdstat's arrays: name, level, members, and whether a member is missing."""
    arrays: list[dict[str, Any]] = []
    lines = mdstat.splitlines()
    for i, raw in enumerate(lines):
        words = raw.split()
        if len(words) < 4 or words[1] != ":" or not words[0].startswith("md"):
            continue
        state, rest = words[2], words[3:]
        level = rest[0] if rest and not rest[0].endswith("]") and "[" not in rest[0] else ""
        members = [w.split("[")[0] for w in rest if "[" in w]
        failed = [w.split("[")[0] for w in rest if w.endswith("(F)")]
        detail = lines[i + 1] if i + 1 < len(lines) else ""
        health = detail.split()[-1] if detail.strip().endswith("]") else ""
        progress = ""
        if i + 2 < len(lines) and ("recovery" in lines[i + 2] or "resync" in lines[i + 2]):
            progress = lines[i + 2].strip()
        arrays.append({"name": words[0], "state": state, "level": level, "members": members,
                       "failed": failed, "health": health,
                       "degraded": "_" in health or bool(failed), "rebuild": progress})  # fmt: skip
    return arrays


def smart() -> list[dict[str, Any]]:
    if shutil.which("smartctl") is None:
        return []
    scan = run(["smartctl", "--scan-open", "-j"], check=False)
    try:
        devices = json.loads(scan.stdout).get("devices", [])
    except json.JSONDecodeError:
        return []
    out = []
    for dev in devices:
        kind = dev.get("type", "auto")
        proc = run(["smartctl", "-H", "-j", "-d", kind, dev["name"]], check=False)
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            continue
        passed = data.get("smart_status", {}).get("passed")
        model, serial = data.get("model_name", ""), data.get("serial_number", "")
        out.append({"device": dev["name"], "passed": passed, "model": model, "serial": serial})
    return out


def status(cfg: Config) -> dict[str, Any]:
    applied = bool(load_state(cfg).get("applied"))
    mounts = ["/"]
    data_mounted = os.path.ismount(cfg.data_mount)
    if cfg.layout != "none" and data_mounted:
        mounts.append(cfg.data_mount)
    filesystems = [space(m, cfg) for m in mounts]
    try:
        arrays = md_arrays(Path("/proc/mdstat").read_text())
    except FileNotFoundError:
        arrays = []
    disks = smart()
    problems: list[str] = []
    warnings: list[str] = []
    if cfg.layout != "none" and applied and not data_mounted:
        problems.append(f"{cfg.data_mount} is not mounted")
    for fs in filesystems:
        text = f"{fs['mount']} is {fs['used_percent']}% full"
        if fs["level"] == "alarm":
            problems.append(f"{text} (alarm at {cfg.space_alarm_percent}%)")
        elif fs["level"] == "warn":
            warnings.append(f"{text} (warning at {cfg.space_warn_percent}%)")
    for a in arrays:
        if a["degraded"]:
            problems.append(f"array {a['name']} is degraded ({a['health']}, failed: "
                            f"{', '.join(a['failed']) or 'a member is missing'})")  # fmt: skip
    for d in disks:
        if d["passed"] is False:
            problems.append(f"SMART: {d['device']} ({d['model']} {d['serial']}) is failing")
    verdict = "fail" if problems else "warn" if warnings else "ok"
    return {
        "format": 1,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": os.uname().nodename,
        "layout": cfg.layout,
        "laid_out": applied,
        "data_mount": cfg.data_mount,
        "data_mounted": data_mounted,
        "encrypted": cfg.encrypt,
        "filesystems": filesystems,
        "arrays": arrays,
        "smart": disks,
        "verdict": verdict,
        "reasons": problems + warnings,
    }


def write_status(cfg: Config, report: dict[str, Any]) -> None:
    path = Path(cfg.status_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.chmod(0o644)
    tmp.replace(path)


# -- validation (the role's template tasks) -----------------------------------------------


def check_unit(name: str, candidate: Path) -> int:
    """systemd-analyze verify on CANDIDATE installed as NAME; warnings about it fail too."""
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        unit = Path(work) / name
        shutil.copyfile(candidate, unit)
        unit.chmod(0o644)
        proc = run(["systemd-analyze", "verify", "--man=no", str(unit)], check=False)
        said = proc.stderr.replace(f"{work}/", "")
        if proc.returncode != 0 or name in said:
            log(f"systemd-analyze rejected the unit candidate {candidate} ({name}):\n{said}")
            return 1
    return 0


MDADM_KEYWORDS = {"DEVICE", "ARRAY", "MAILADDR", "MAILFROM", "PROGRAM", "CREATE", "HOMEHOST",
                  "HOMECLUSTER", "AUTO", "POLICY", "PART-POLICY", "SYSFS", "MONITORDELAY",
                  "ENCRYPTION_NO_VERIFY", "PROBING"}  # fmt: skip


def check_mdadm_conf(candidate: Path) -> int:
    """mdadm.conf(5)'s keywords only, and a MAILADDR (the monitor mails nobody without one)."""
    words = [line.split() for line in candidate.read_text().splitlines()]
    keywords = [w[0] for w in words if w and not w[0].startswith("#") and not w[0][0].isspace()]
    unknown = sorted({k for k in keywords if k.upper() not in MDADM_KEYWORDS})
    if unknown:
        log(f"{candidate}: not mdadm.conf keywords: {', '.join(unknown)}")
        return 1
    if not any(w[:1] == ["MAILADDR"] and len(w) == 2 for w in words):
        log(f"{candidate}: no MAILADDR: md's monitor would mail nobody")
        return 1
    return 0


# -- command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xnat-fleet-storage", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_apply = sub.add_parser("apply", help="lay out the data storage (first boot)")
    p_apply.add_argument("--dry-run", action="store_true", help="say what would change")
    p_apply.add_argument(
        "--recovery-key-stdin", action="store_true",
        help="read the recovery passphrase from standard input instead of its file",
    )  # fmt: skip
    sub.add_parser("check-boot", help="fail (and say why) when the data is not mounted")
    p_asm = sub.add_parser("assemble", help="start this layout's incomplete arrays (at boot)")
    p_asm.add_argument("--wait", type=float, default=30.0, help="seconds to wait for all disks")
    p_heal = sub.add_parser("heal", help="rebuild a degraded data pool on a blank new disk")
    p_heal.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the pool")
    p_md = sub.add_parser("check-mdadm-conf", help="validate an mdadm.conf candidate")
    p_md.add_argument("candidate", type=Path)
    p_config = sub.add_parser("check-config", help="validate a configuration file")
    p_config.add_argument("candidate", type=Path)
    p_unit = sub.add_parser("check-unit", help="validate a systemd unit installed as NAME")
    p_unit.add_argument("name")
    p_unit.add_argument("candidate", type=Path)
    p_status = sub.add_parser("status", help="health to the status file")
    p_status.add_argument("--json", action="store_true", help="print the report")
    p_status.add_argument("--mail", action="store_true", help="mail the admin unless ok")
    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            Config.load(args.candidate)
            return 0
        if args.command == "check-unit":
            return check_unit(args.name, args.candidate)
        if args.command == "check-mdadm-conf":
            return check_mdadm_conf(args.candidate)
        cfg = Config.load()
        if args.command == "apply":
            key = sys.stdin.read().strip() if args.recovery_key_stdin else None
            applier = Applier(cfg, args.dry_run, key or None)
            applier.apply()
            print(json.dumps({"changed": bool(applier.actions), "actions": applier.actions}))
            return 0
        if args.command == "check-boot":
            return check_boot(cfg)
        if args.command == "heal":
            return heal(cfg, args.wait)
        if args.command == "assemble":
            if cfg.layout == "pool" and load_state(cfg).get("applied"):
                start_arrays(args.wait, cfg.volume_group)
            return 0
        report = status(cfg)
        write_status(cfg, report)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"{report['verdict']}: " + ("; ".join(report["reasons"]) or "all well"))
        if args.mail and report["verdict"] != "ok":
            mail(
                f"storage {report['verdict']}: " + "; ".join(report["reasons"]),
                json.dumps(report, indent=2),
                cfg.mail_to,
            )
        return 0
    except StorageError as exc:
        log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
