"""Audit of a golden image or its root tree: everything that must not ship, as findings.

Read-only and without root. A tree is scanned in place; a raw disk image is read through its GPT
(``sfdisk --json``) and each file system is copied out of the image without mounting it: ext4
with ``debugfs -R rdump`` (e2fsprogs), the ESP with ``mcopy`` (mtools), into a temporary
directory that is removed afterwards.

Findings (each names the path in the image and the rule):

- ``private-key``: a PEM or OpenSSH private key in any file, except a file exactly as a Debian
  package installed it (its md5 in ``/var/lib/dpkg/info``: a library's built-in test key);
- ``vault-value``: any value of the inventory's vault (``vault_*`` variables) in any file;
- ``machine-id``: ``/etc/machine-id`` other than ``uninitialized``, or dbus's own copy;
- ``ssh-host-key``: any ``/etc/ssh/ssh_host_*`` file;
- ``shell-history``: a shell, Python, less or vim history of any user;
- ``provisioning-key``: an ``authorized_keys`` line holding a key the caller names (the build's
  own) or any key in root's ``authorized_keys``;
- ``dhcp-lease``: leases of dhclient, systemd-networkd or NetworkManager;
- ``random-seed`` and ``credential-secret``: systemd's per-machine seed and credential key;
- ``log``: a non-empty file under ``/var/log``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xnat_fleet.errors import FleetError
from xnat_fleet.image import files

# A whole PEM block (OpenSSH's format is one too): the BEGIN line, optional headers
# (Proc-Type, DEK-Info), a base64 body and the matching END line. A binary that only holds the
# marker strings (ssh, libcrypto) is not a key.
PRIVATE_KEY = re.compile(
    rb"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----\r?\n"
    rb"(?:[A-Za-z-]+: [^\r\n]*\r?\n)*\r?\n?"
    rb"(?:[A-Za-z0-9+/=]{4,}\r?\n)+"
    rb"-----END \1PRIVATE KEY-----"
)
_CHUNK = 1 << 20
_OVERLAP = 1 << 16  # more than the largest PEM key, so none is split unseen
MIN_SECRET_LENGTH = 6  # shorter vault values (a port, "yes") would match everywhere

HISTORY_FILES = (
    ".bash_history",
    ".zsh_history",
    ".sh_history",
    ".history",
    ".python_history",
    ".lesshst",
    ".viminfo",
    ".mysql_history",
    ".psql_history",
)
LEASE_GLOBS = (
    "/var/lib/dhcp/*",
    "/var/lib/dhclient/*",
    "/var/lib/systemd/network/*",
    "/var/lib/NetworkManager/*lease*",
    "/run/systemd/netif/leases/*",
)


class AuditError(FleetError):
    """The image cannot be read (not a GPT disk, a tool missing)."""


@dataclass(frozen=True, order=True)
class Finding:
    path: str  # as seen inside the image, e.g. /etc/ssh/ssh_host_ed25519_key
    rule: str
    detail: str

    def line(self) -> str:
        return f"{self.path}: {self.rule}: {self.detail}"


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    """(path in the image, build-machine path) of every regular file, symlinks not followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                yield "/" + str(p.relative_to(root)), p


def _contents(path: Path) -> Iterator[bytes]:
    """The file in chunks that overlap, so a match across a chunk border is not missed."""
    try:
        with path.open("rb") as f:
            tail = b""
            while chunk := f.read(_CHUNK):
                yield tail + chunk
                tail = chunk[-_OVERLAP:]
    except OSError:
        return


def _packaged(root: Path) -> dict[str, str]:
    """md5 of every file Debian's packages installed (``/var/lib/dpkg/info/*.md5sums``)."""
    sums: dict[str, str] = {}
    for listing in (root / "var" / "lib" / "dpkg" / "info").glob("*.md5sums"):
        for line in listing.read_text(errors="replace").splitlines():
            digest, _, name = line.partition("  ")
            if name:
                sums["/" + name.strip()] = digest.strip()
    return sums


def _unchanged_from_package(path: Path, rel: str, packaged: dict[str, str]) -> bool:
    want = packaged.get(rel)
    if want is None:
        return False
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == want


def scan_tree(
    root: Path,
    secrets: Iterable[str] = (),
    provisioning_keys: Iterable[str] = (),
) -> list[Finding]:
    """Every finding in the root tree at ``root``."""
    root = root.resolve()
    needles = sorted({s.encode() for s in secrets if len(s) >= MIN_SECRET_LENGTH})
    build_keys = {k.split()[1] for k in provisioning_keys if len(k.split()) >= 2}
    findings: set[Finding] = set()
    packaged = _packaged(root)

    for rel, p in _files(root):
        name = p.name
        for chunk in _contents(p):
            # A key inside a file exactly as a Debian package ships it (gnutls' self-test key)
            # is public; one the build made or copied is not.
            if PRIVATE_KEY.search(chunk) and not _unchanged_from_package(p, rel, packaged):
                findings.add(Finding(rel, "private-key", "a PEM or OpenSSH private key"))
            for n, needle in enumerate(needles):
                if needle in chunk:
                    findings.add(Finding(rel, "vault-value", f"holds vault value #{n + 1}"))
        if rel.startswith("/etc/ssh/ssh_host_"):
            findings.add(Finding(rel, "ssh-host-key", "host keys are made per relay"))
        if name in HISTORY_FILES:
            findings.add(Finding(rel, "shell-history", "history of a build session"))
        if any(fnmatch.fnmatch(rel, g) for g in LEASE_GLOBS):
            findings.add(Finding(rel, "dhcp-lease", "network state of the build"))
        if rel.startswith("/var/log/") and p.stat().st_size > 0:
            findings.add(Finding(rel, "log", f"{p.stat().st_size} bytes of build logs"))
        if rel in ("/var/lib/systemd/random-seed", "/var/lib/urandom/random-seed"):
            findings.add(Finding(rel, "random-seed", "relays must not share entropy"))
        if rel == "/var/lib/systemd/credential.secret":
            findings.add(Finding(rel, "credential-secret", "per-machine credential key"))
        if rel == "/var/lib/dbus/machine-id":
            findings.add(Finding(rel, "machine-id", "dbus's copy of a machine id"))
        if name == "authorized_keys":
            for line in p.read_text(errors="replace").splitlines():
                fields = line.split()
                blobs = [f for f in fields if f.startswith("AAAA")]
                if rel.startswith("/root/") and blobs:
                    findings.add(Finding(rel, "provisioning-key", "a key for root"))
                elif build_keys & set(blobs):
                    findings.add(Finding(rel, "provisioning-key", "the build's own key"))

    machine_id = root / "etc" / "machine-id"
    if machine_id.is_symlink() or not machine_id.is_file():
        findings.add(Finding("/etc/machine-id", "machine-id", "missing: must read uninitialized"))
    else:
        value = machine_id.read_text(errors="replace").strip()
        if value != "uninitialized":
            shown = "empty" if not value else "a machine id"
            findings.add(Finding("/etc/machine-id", "machine-id", f"{shown}, not uninitialized"))
    return sorted(findings)


# ---- reading a disk image without mounting it -------------------------------------------------


def _tool(name: str) -> str:
    return files.require(name, AuditError)


@dataclass(frozen=True)
class Part:
    number: int
    start: int  # bytes
    size: int
    type: str
    name: str


def partitions(image: Path) -> list[Part]:
    proc = subprocess.run(  # noqa: S603 (argv, no shell; the tool from PATH)
        [_tool("sfdisk"), "--json", str(image)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise AuditError(f"{image}: not a partitioned disk image: {proc.stderr.strip()}")
    table = json.loads(proc.stdout)["partitiontable"]
    if table.get("label") != "gpt":
        raise AuditError(f"{image}: the partition table is not GPT")
    sector = int(table.get("sectorsize", 512))
    out = []
    for n, p in enumerate(table.get("partitions", []), 1):
        out.append(
            Part(n, p["start"] * sector, p["size"] * sector, p["type"].upper(), p.get("name", ""))
        )
    return out


ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def extract(image: Path, into: Path) -> Path:
    """The image's file systems as a tree under ``into`` (the ESP at /boot/efi)."""
    tree = into / "tree"
    tree.mkdir(parents=True)
    parts = partitions(image)
    esp = [p for p in parts if p.type == ESP_TYPE]
    others = [p for p in parts if p.type != ESP_TYPE]
    for p in others:
        fs = into / f"part{p.number}.img"
        files.extract_range(image, p.start, p.size, fs)
        proc = subprocess.run(  # noqa: S603
            [_tool("debugfs"), "-R", f"rdump / {tree}", str(fs)],
            capture_output=True,
            text=True,
            check=False,
        )
        fs.unlink()
        if proc.returncode != 0 or not any(tree.iterdir()):
            raise AuditError(f"{image}: partition {p.number} is not a readable ext4 file system")
    for p in esp:
        fs = into / f"part{p.number}.img"
        files.extract_range(image, p.start, p.size, fs)
        dest = tree / "boot" / "efi"
        dest.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(  # noqa: S603
            [_tool("mcopy"), "-s", "-n", "-i", str(fs), "::/", str(dest)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
        )
        fs.unlink()
        if proc.returncode != 0:
            raise AuditError(f"{image}: the ESP cannot be read: {proc.stderr.strip()}")
    # rdump copies modes, so some directories may be unreadable: open them up. Never through a
    # symlink: one in the image may point anywhere on this machine (/run/lock, /etc).
    for dirpath, dirnames, _ in os.walk(tree):
        for d in dirnames:
            sub = Path(dirpath) / d
            if not sub.is_symlink():
                sub.chmod(0o755)
    return tree


def scan_image(
    image: Path, secrets: Iterable[str] = (), provisioning_keys: Iterable[str] = ()
) -> list[Finding]:
    with tempfile.TemporaryDirectory(prefix="xf-audit-") as tmp:
        tree = extract(image, Path(tmp))
        return scan_tree(tree, secrets, provisioning_keys)


class RootFs:
    """The root file system of a disk image, copied out once and read with debugfs (no mount)."""

    def __init__(self, image: Path, work: Path) -> None:
        roots = [p for p in partitions(image) if p.type != ESP_TYPE]
        if len(roots) > 1:  # a booted clone: the storage role's data partition follows the root
            roots = [p for p in roots if p.name == "root"]
        if len(roots) != 1:
            raise AuditError(f"{image}: expected one root partition besides the ESP")
        work.mkdir(parents=True, exist_ok=True)
        self.path = work / f"{image.name}.root"
        files.extract_range(image, roots[0].start, roots[0].size, self.path)

    def _debugfs(self, request: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(  # noqa: S603
            [_tool("debugfs"), "-R", request, str(self.path)], capture_output=True, check=False
        )

    def read(self, path: str) -> bytes | None:
        """The file at ``path`` in the image, or None when it does not exist."""
        listing = self._debugfs(f"stat {path}")
        if b"File not found" in listing.stderr or listing.returncode != 0:
            return None
        return self._debugfs(f"cat {path}").stdout

    def names(self, directory: str) -> list[str]:
        out = self._debugfs(f"ls -p {directory}").stdout.decode(errors="replace")
        names = [line.split("/")[5] for line in out.splitlines() if line.count("/") >= 6]
        return [n for n in names if n not in (".", "..")]

    def dump(self, directory: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        self._debugfs(f"rdump {directory} {dest}")
        return dest / Path(directory).name

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
