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
image's own data tree copied in. The tool only uses Debian 12's util-linux, cryptsetup,
systemd and e2fsprogs; it never touches a partition it did not create unless it is its own
volume.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
    unlock: str = "tpm2"  # tpm2 | none (tang: the Supermicro profile, storage issue)
    tpm2_pcrs: str = "7"
    recovery_key_file: str = "/etc/xnat-fleet/storage/recovery.key"
    # Copied from the image over an existing data file system made from an older image.
    refresh: list[str] = field(default_factory=lambda: ["xnat/home/config", "xnat/home/plugins"])
    space_warn_percent: int = 80
    space_alarm_percent: int = 90
    status_file: str = "/var/lib/xnat-fleet/storage-status.json"
    state_file: str = "/var/lib/xnat-fleet/storage-state.json"
    mail_to: str = "root"

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
        if cfg.layout not in ("single", "none"):
            raise StorageError(f"{path}: layout {cfg.layout!r} is not one of single, none")
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
        return f"/dev/disk/by-partlabel/{self.data_label}"


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
        options = ["luks", "discard", "headless=true", "nofail", "x-systemd.device-timeout=30s"]
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
        options = "defaults,nofail,x-systemd.device-timeout=30s"
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
        cfg = Config.load()
        if args.command == "apply":
            key = sys.stdin.read().strip() if args.recovery_key_stdin else None
            applier = Applier(cfg, args.dry_run, key or None)
            applier.apply()
            print(json.dumps({"changed": bool(applier.actions), "actions": applier.actions}))
            return 0
        if args.command == "check-boot":
            return check_boot(cfg)
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
