"""``xnat-fleet image clone``: one personalised disk per relay from a golden image, offline.

For each relay (docs/images.md, "Clone"):

1. **check**: the golden image's profile is the relay's ``fleet_hardware``, its XNAT version is
   the central host's, its study is the inventory's; no two relays share a secret.
2. **personalise**: the golden root partition is mounted read-only and an overlay file system
   is put on it; a container (no init system, no network) runs on the overlay and
   ``playbooks/personalise.yml`` converges the relay's identity tasks in it: the roles' own
   tasks (tag ``fleet_identity``) with the relay's inventory, validating each file, reloading
   nothing (``xnat_fleet_offline``). Then its host name, network, SSH host keys (made here, on
   the controller) and XNAT gate are written into the overlay.
3. **collect**: everything the overlay's upper layer holds must be a path of the profile's
   ``identity`` list (``relay_images/<profile>.yml``); anything else is refused, so the list
   stays the exact description of what makes a relay itself.
4. **disk**: a qcow2 file backed by the golden raw image gets those files (the overlay's
   upper layer) through a FUSE export and a loop mount; it holds only the clusters they
   changed. Its block map is the golden one with the changed ranges hashed again.

The clone directory holds ``<relay>.qcow2``, ``<relay>.bmap`` and ``<relay>.clone.json`` (its
manifest: the golden image, the identity written, the SSH host key fingerprints and the TLS
certificate fingerprint). ``xnat-fleet image write`` writes it and records the disk in the
registry. Needs root (mounts, loop devices, podman).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from xnat_fleet import container_ssh
from xnat_fleet import lab as lab_lib
from xnat_fleet.errors import FleetError
from xnat_fleet.image import bmap as bmap_lib
from xnat_fleet.image import disk as disk_lib
from xnat_fleet.image import files, provision
from xnat_fleet.image import recipe as recipe_lib
from xnat_fleet.image.assemble import templates
from xnat_fleet.image.build import relay_plugins
from xnat_fleet.image.package import sha256_file
from xnat_fleet.image.registry import HostKey
from xnat_fleet.model.fleet import Fleet, Host
from xnat_fleet.model.loader import InventorySource, LoadedInventory, load_fleet_and_vars
from xnat_fleet.runner import Progress, inventory_secrets, run_playbook

FORMAT = 1
LABEL = "xnat-fleet.clone"
ROOT_PARTITION = "root"
TAG = "fleet_identity"
# The base role's host key types (roles/base/vars: __base_sshd_host_keys): a clone has exactly
# these, so the role finds nothing to create.
HOST_KEYS = (("ed25519", None), ("rsa", "4096"))
# Secrets that must differ between relays (docs/images.md "Clone": no two clones share one).
PER_RELAY_SECRETS = (
    "vault_xnat_db_password",
    "vault_xnat_admin_password",
    "vault_xnat_service_password",
    "vault_storage_recovery_passphrase",
)
# What the personalisation container leaves that is not the relay's: the mount points podman
# makes, Ansible's scratch space and Python's byte code. Never copied into a clone.
# (Paths inside the relay's tree, not this machine's: hence the S108 waiver.)
SCRATCH = (
    "/run", "/run/*", "/tmp", "/tmp/*", "/var/tmp/*",  # noqa: S108
    "/dev", "/dev/*", "/proc", "/sys",
    "/root/.ansible", "/root/.ansible/*", "/root/.cache", "/root/.cache/*",
    "*/__pycache__", "*/__pycache__/*", "/etc/mtab",
)  # fmt: skip
# The personalisation container's PID 1 is `sleep`, which ignores SIGTERM: nothing in it needs a
# clean stop, so it is killed at once.
STOP_TIMEOUT = 0
# A personalisation takes seconds; one that hangs (a stuck connection) is stopped, not waited on.
RUN_TIMEOUT = 600


class CloneError(FleetError):
    """A relay cannot be cloned from this image, or its personalisation failed."""


@dataclass(frozen=True)
class Golden:
    """A published golden image (its directory from ``image build``)."""

    directory: Path
    manifest: dict[str, Any]
    raw: Path
    bmap: Path

    @property
    def image_id(self) -> str:
        return str(self.manifest["image_id"])

    @property
    def version(self) -> str:
        return str(self.manifest["image_version"])

    @property
    def standins(self) -> bool:
        return "stand-in" in str(self.manifest.get("xnat_artifacts", ""))


@dataclass
class Change:
    path: str  # in the relay's tree
    kind: str  # "file" | "symlink" | "dir" | "delete"


@dataclass
class CloneResult:
    relay: str
    directory: Path
    disk: Path
    bmap: Path
    manifest: dict[str, Any]
    seconds: float
    delta_bytes: int  # what the qcow2 file takes on disk


def _manifest(path: Path, suffix: str, what: str) -> tuple[Path, Path, dict[str, Any]]:
    """PATH's directory (PATH or a file in it), its one ``*SUFFIX`` file and that file read."""
    directory = path.resolve()
    if directory.is_file():
        directory = directory.parent
    found = sorted(directory.glob(f"*{suffix}"))
    if len(found) != 1:
        raise CloneError(f"{path}: not {what} (no single *{suffix})")
    return directory, found[0], json.loads(found[0].read_text())


def open_golden(path: Path) -> Golden:
    """The golden image at PATH: a published directory (or its ``-latest`` link) or its raw."""
    directory, found, manifest = _manifest(path, ".manifest.json", "a golden image directory")
    stem = found.name.removesuffix(".manifest.json")
    raw, block_map = directory / f"{stem}.raw", directory / f"{stem}.bmap"
    for needed in (raw, block_map):
        if not needed.is_file():
            raise CloneError(
                f"{path}: {needed.name} is missing (a clone is backed by the raw image)"
            )
    return Golden(directory, manifest, raw, block_map)


def default_golden(fleet: Fleet, profile: str, images: Path) -> Path:
    return images / f"{fleet.study.id.lower()}-relay-{profile}-latest"


def _host(fleet: Fleet, name: str) -> Host:
    for h in fleet.relays:
        if h.name == name:
            return h
    known = ", ".join(h.name for h in fleet.relays)
    raise CloneError(f"{name}: not a relay of this inventory (relays: {known})")


def check(fleet: Fleet, inv: LoadedInventory, golden: Golden, relays: Sequence[str]) -> list[str]:
    """Every reason these relays cannot be cloned from GOLDEN (empty: they can)."""
    problems = []
    m = golden.manifest
    central = fleet.central.config.fleet_xnat.version
    if str(m.get("study")) != fleet.study.id:
        problems.append(
            f"{golden.directory.name}: an image of study {m.get('study')}, not {fleet.study.id}"
        )
    if str(m.get("xnat_version")) != central:
        problems.append(
            f"{golden.directory.name}: XNAT {m.get('xnat_version')}, but the central host "
            f"{fleet.central.name} runs {central} (fleet_xnat.version): build a new image"
        )
    for name in relays:
        c = _host(fleet, name).config
        if c.fleet_hardware != m.get("profile"):
            problems.append(
                f"{name}: fleet_hardware is {c.fleet_hardware}, the image "
                f"{golden.directory.name} is for {m.get('profile')}"
            )
        if not c.fleet_network.dns:
            problems.append(
                f"{name}: fleet_network.dns: a clone needs its resolvers (the image has no "
                "resolver daemon that would take them from DHCP)"
            )
    # The study's group_vars the image's roles ran with must be the inventory's now: a clone
    # renders only its identity, so a study-wide change needs a new image.
    built = {k: v for k, v in dict(m.get("inputs", {})).items() if k.startswith("inventory/")}
    now = provision.study_inputs(inv.source.directory)
    for name in sorted(set(built) | set(now)):
        if built.get(name) != now.get(name):
            what = "is new" if name not in built else "is gone" if name not in now else "changed"
            problems.append(
                f"{name.removeprefix('inventory/')} {what} since {golden.directory.name} was "
                "built (its roles ran with the study's group_vars then): build a new image"
            )
    # Every secret a relay has, compared with every other relay's (not only those cloned now).
    seen: dict[tuple[str, str], str] = {}
    for h in fleet.relays:
        for var in PER_RELAY_SECRETS:
            value = inv.hostvars.get(h.name, {}).get(var)
            if not value:
                continue
            other = seen.setdefault((var, str(value)), h.name)
            if other != h.name and (h.name in relays or other in relays):
                problems.append(
                    f"{h.name}: {var} is the same as {other}'s: every relay needs its own "
                    f"(host_vars/{h.name}/vault.yml, vault-encrypted)"
                )
    return problems


def _matches(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def identity_patterns(recipe: recipe_lib.Recipe) -> list[str]:
    return [p for item in recipe.identity for p in item.paths]


def _same_file(p: Path, st: os.stat_result, below: Path) -> bool:
    try:
        bst = below.lstat()
    except FileNotFoundError:
        return False
    same_meta = (st.st_mode, st.st_uid, st.st_gid, st.st_size) == (
        bst.st_mode, bst.st_uid, bst.st_gid, bst.st_size,
    )  # fmt: skip
    return same_meta and stat.S_ISREG(bst.st_mode) and p.read_bytes() == below.read_bytes()


def changes(upper: Path, lower: Path, allowed: Sequence[str]) -> tuple[list[Change], list[str]]:
    """What the overlay's UPPER layer changed over LOWER: (changes to copy, paths not allowed).

    A directory only copied up (it exists below and holds changes) is not itself a change; a
    new directory is. Whiteouts (character devices 0:0) are deletions."""
    found: list[Change] = []
    refused: list[str] = []
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in sorted(dirnames) + sorted(filenames):
            p = Path(dirpath) / name
            rel = "/" + str(p.relative_to(upper))
            if _matches(rel, SCRATCH):
                if name in dirnames:
                    dirnames.remove(name)
                continue
            st = p.lstat()
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                kind = "delete"
            elif stat.S_ISDIR(st.st_mode):
                if (lower / rel.lstrip("/")).is_dir() and not _matches(rel, allowed):
                    continue  # copied up because something below it changed
                kind = "dir"
            elif stat.S_ISLNK(st.st_mode):
                kind = "symlink"
            elif stat.S_ISREG(st.st_mode):
                if _same_file(p, st, lower / rel.lstrip("/")):
                    continue  # opened for writing, nothing changed (nginx -t and its logs)
                kind = "file"
            else:
                refused.append(f"{rel} (special file)")
                continue
            if _matches(rel, allowed):
                found.append(Change(rel, kind))
            else:
                refused.append(rel)
    return found, refused


def _podman(*args: str) -> str:
    return container_ssh.podman_checked(*args, error=CloneError).stdout


@contextmanager
def overlay(lower: Path, work: Path) -> Iterator[tuple[Path, Path]]:
    """An overlay over LOWER in WORK: (merged, upper)."""
    if work.exists():
        shutil.rmtree(work)
    upper, scratch, merged = work / "upper", work / "work", work / "merged"
    for d in (upper, scratch, merged):
        d.mkdir(parents=True)
    files.run(
        "mount", "-t", "overlay", "overlay", "-o",
        f"lowerdir={lower},upperdir={upper},workdir={scratch}", str(merged), error=CloneError,
    )  # fmt: skip
    try:
        yield merged, upper
    finally:
        files.run("umount", str(merged), error=CloneError, check=False)


@contextmanager
def _container(name: str, root: Path, hostname: str) -> Iterator[str]:
    """A container on ROOT with no init system and no network, for Ansible's podman connection."""
    container_ssh.podman("rm", "-f", "--ignore", name)
    _podman(
        "run", "-d", "--name", name, "--hostname", hostname, "--network", "none",
        "--no-hosts", "--tmpfs", "/tmp", "--tmpfs", "/run",  # noqa: S108
        # the firewall role validates its ruleset with nft -c in the container's own namespace
        "--cap-add", "NET_ADMIN", "--label", f"{LABEL}=1",
        "--rootfs", str(root), "sleep", "infinity",
    )  # fmt: skip
    try:
        yield name
    finally:
        container_ssh.podman("rm", "-f", "-t", str(STOP_TIMEOUT), "--ignore", name)


def _render(template: str, **context: Any) -> str:
    return templates().get_template(f"image/clone/{template}").render(**context)


def _write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_symlink() or p.exists():
        p.unlink()
    p.write_text(text)
    os.chown(p, 0, 0)
    p.chmod(mode)


def host_keys(root: Path, comment: str) -> list[HostKey]:
    """New SSH host keys in ROOT's /etc/ssh (made here on the controller); their public halves."""
    ssh_dir = root / "etc" / "ssh"
    keys = []
    for kind, bits in HOST_KEYS:
        path = ssh_dir / f"ssh_host_{kind}_key"
        for p in (path, path.with_name(path.name + ".pub")):
            p.unlink(missing_ok=True)
        argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)]
        if bits:
            argv[4:4] = ["-b", bits]
        files.run(*argv, error=CloneError)
        os.chown(path, 0, 0)
        path.chmod(0o600)
        keys.append(HostKey.from_public_line(path.with_name(path.name + ".pub").read_text()))
    return keys


def _personal_files(merged: Path, host: Host, inv: LoadedInventory) -> list[int]:
    """Host name, network and XNAT gate of HOST, written into MERGED; the gate's ports."""
    c = host.config
    fqdn = c.fleet_fqdn or host.name
    short = fqdn.split(".", 1)[0]
    context = {"relay": host.name, "fqdn": fqdn, "short": short, "network": c.fleet_network}
    _write(merged, "/etc/hostname", short + "\n")
    _write(merged, "/etc/hosts", _render("hosts.j2", **context))
    network = _render("10-relay.network.j2", **context)
    _write(merged, "/etc/systemd/network/10-relay.network", network)
    _write(merged, "/etc/resolv.conf", _render("resolv.conf.j2", **context))
    wanted = inv.playbook_vars(host.name, ["firewall_https_ports", "firewall_dicom_ports"])
    ports = sorted({int(p) for v in wanted.values() for p in v})
    if not ports:
        raise CloneError(f"{host.name}: firewall_https_ports and firewall_dicom_ports are empty")
    gate = merged / "etc" / "xnat-fleet"
    gate.mkdir(exist_ok=True)
    gate.chmod(0o755)
    rules = _render("xnat-gate.nft.j2", ports=ports, **context)
    _write(merged, "/etc/xnat-fleet/xnat-gate.nft", rules)
    return ports


def _apply(changes_: Sequence[Change], upper: Path, root: Path) -> None:
    """Copy the CHANGES from the overlay's UPPER layer into the clone's mounted ROOT."""
    for ch in changes_:
        if ch.kind == "delete":
            target = root / ch.path.lstrip("/")
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    entries = [ch.path.lstrip("/") for ch in changes_ if ch.kind != "delete"]
    if not entries:
        return
    # tar keeps owners (numeric: the image's ids), modes, times and symlinks as they are
    tar = files.require("tar", CloneError)
    pack = subprocess.Popen(  # noqa: S603 (argv, no shell)
        [tar, "-C", str(upper), "--no-recursion", "--numeric-owner", "-cf", "-", "--", *entries],
        stdout=subprocess.PIPE,
    )
    unpack = subprocess.run(  # noqa: S603
        [tar, "-C", str(root), "--numeric-owner", "-xpf", "-"],
        stdin=pack.stdout, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if pack.stdout is not None:
        pack.stdout.close()
    if pack.wait() != 0 or unpack.returncode != 0:
        raise CloneError(f"copying the identity into the clone failed: {unpack.stderr.strip()}")


def _tls_fingerprint(root: Path) -> str | None:
    cert = root / "etc/ssl/xnat-fleet/proxy.crt"
    if not cert.is_file():
        return None
    text = cert.read_text()
    body = text.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
    return hashlib.sha256(base64.b64decode("".join(body.split()))).hexdigest()


def standins_store(build_dir: Path) -> Path:
    return build_dir / "standins" / "store"


def standin_host_vars(fleet: Fleet, build_dir: Path) -> dict[str, Any]:
    """The role inputs of an image built with ``--standins`` in BUILD_DIR (its stand-ins,
    staged again when missing): what a clone of it, or a converge checking one, runs with."""
    manifest = lab_lib.stage_standins(fleet, build_dir / "standins")
    return lab_lib.standin_inputs(relay_plugins(fleet), standins_store(build_dir), manifest)


def connection_overlay(
    path: Path, containers: Mapping[str, str], host_vars: Mapping[str, Any]
) -> Path:
    hosts = {
        name: {
            "ansible_connection": "podman",
            "ansible_host": container,
            "ansible_python_interpreter": "/usr/bin/python3",
            **host_vars,
        }
        for name, container in containers.items()
    }
    path.write_text(
        "# Written by `xnat-fleet image clone`: each relay reached in its personalisation\n"
        "# container (src/xnat_fleet/image/clone.py). Rewritten by every clone.\n"
        + yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=True)
    )
    return path


def clone(
    source: InventorySource,
    relays: Sequence[str],
    *,
    image: Path | None = None,
    build_dir: Path,
    output: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> list[CloneResult]:
    """Clone and personalise RELAYS (all relays of the image's profile when empty)."""
    started = time.monotonic()
    fleet, inv = load_fleet_and_vars(source)
    names = list(relays) or [h.name for h in fleet.relays]
    if image is None:
        # each profile's relays from that profile's latest image, one profile after the other
        by_profile: dict[str, list[str]] = {}
        for n in names:
            by_profile.setdefault(_host(fleet, n).config.fleet_hardware, []).append(n)
        if len(by_profile) > 1:
            return [
                r
                for profile, group in sorted(by_profile.items())
                for r in clone(
                    source, group, image=default_golden(fleet, profile, build_dir / "images"),
                    build_dir=build_dir, output=output, on_progress=on_progress, log=log,
                )
            ]  # fmt: skip
        image = default_golden(fleet, next(iter(by_profile)), build_dir / "images")
    if not image.exists():
        raise CloneError(f"{image}: no golden image there (xnat-fleet image build makes it)")
    golden = open_golden(image)
    problems = check(fleet, inv, golden, names)
    if problems:
        raise CloneError("\n".join(problems))
    recipe = recipe_lib.load(str(golden.manifest["profile"]))
    allowed = identity_patterns(recipe)
    hosts = {n: _host(fleet, n) for n in names}
    work = build_dir / "clone-work"
    output = output or build_dir / "clones"
    store = standins_store(build_dir)
    # The image's roles ran with the tests' stand-in artifacts: so do the clone's.
    host_vars = standin_host_vars(fleet, build_dir) if golden.standins else {}
    root_part = disk_lib.partition(golden.raw, ROOT_PARTITION)
    secrets = sorted(inventory_secrets(inv.hostvars, source.vault_password()))
    results = []
    with ExitStack() as stack:
        lower = stack.enter_context(disk_lib.mounted(golden.raw, root_part, work / "golden-root"))
        overlays = {n: stack.enter_context(overlay(lower, work / n)) for n in names}
        containers = {
            n: stack.enter_context(
                _container(f"xf-clone-{n}-{os.getpid()}", overlays[n][0], hosts[n].name)
            )
            for n in names
        }
        log(f"personalising {', '.join(names)} from {golden.directory.name}")
        # The SSH host keys (RSA 4096 takes seconds) are made while Ansible runs: no role task
        # touches them in a personalisation (the base role is not run).
        keygen = stack.enter_context(ThreadPoolExecutor(max_workers=2))
        keys_of = {
            n: keygen.submit(host_keys, overlays[n][0], f"root@{hosts[n].config.fleet_fqdn or n}")
            for n in names
        }
        overlay_file = connection_overlay(work / "connection.yml", containers, host_vars)
        run_source = InventorySource(
            path=source.path,
            vault_password_file=source.vault_password(),
            overlays=[*source.overlays, overlay_file],
        )
        os.environ.setdefault("CONTAINERS_CONF", container_ssh.containers_conf())
        result = run_playbook(
            "personalise.yml",
            run_source,
            limit=",".join(names),
            tags=TAG,
            artifact_store=store,
            on_progress=on_progress,
            secrets=secrets,
            extravars={"xnat_fleet_inventory_dir": str(source.directory.resolve())},
            timeout=RUN_TIMEOUT,
        )
        if result.status == "timeout":
            raise CloneError(
                f"personalisation did not finish in {RUN_TIMEOUT} s (stopped); run the clone again"
            )
        if not result.success:
            detail = "; ".join(result.failures[:5]) or "\n".join(result.output[-10:])
            raise CloneError(f"personalisation failed: {detail}")
        personalised = time.monotonic()
        for n in names:
            t0 = time.monotonic()
            merged, upper = overlays[n]
            ports = _personal_files(merged, hosts[n], inv)
            keys = keys_of[n].result()
            found, refused = changes(upper, lower, allowed)
            if refused:
                raise CloneError(
                    f"{n}: personalisation wrote paths the identity list of "
                    f"relay_images/{recipe.profile}.yml does not name: " + ", ".join(refused[:20])
                )
            results.append(
                _make_disk(
                    golden, root_part, hosts[n], found, upper, keys, ports, output,
                    share=(personalised - started) / len(names), t0=t0,
                    inventory=source.directory.resolve(),
                )
            )  # fmt: skip
            log(f"{n}: {results[-1].disk} ({results[-1].delta_bytes >> 10} KiB)")
    return results


def _make_disk(
    golden: Golden,
    part: disk_lib.Partition,
    host: Host,
    found: Sequence[Change],
    upper: Path,
    keys: Sequence[HostKey],
    ports: Sequence[int],
    output: Path,
    *,
    share: float,
    t0: float,
    inventory: Path,
) -> CloneResult:
    name = host.name
    directory = output / f"{name}-{golden.version}"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    disk = directory / f"{name}.qcow2"
    disk_lib.create_overlay(disk, golden.raw)
    with disk_lib.exported(disk, writable=True) as raw:
        with disk_lib.mounted(raw, part, directory / ".mnt", read_only=False) as root:
            _apply(found, upper, root)
            fingerprint = _tls_fingerprint(root)
            machine_id = (root / "etc/machine-id").read_text().strip()
        (directory / ".mnt").rmdir()
        block_map = bmap_lib.derive(bmap_lib.read(golden.bmap), disk_lib.overlay_extents(disk), raw)
    bmap_path = directory / f"{name}.bmap"
    bmap_lib.write(block_map, bmap_path)
    c = host.config
    manifest = {
        "format": FORMAT,
        "relay": name,
        "site": c.fleet_site.id if c.fleet_site else None,
        "fqdn": c.fleet_fqdn or name,
        "profile": golden.manifest["profile"],
        "study": golden.manifest["study"],
        "inventory": str(inventory),
        "xnat_version": golden.manifest["xnat_version"],
        "xnat_artifacts": golden.manifest.get("xnat_artifacts"),
        "golden": {
            "image_id": golden.image_id,
            "image_version": golden.version,
            "directory": str(golden.directory),
            "raw": str(golden.raw),
            "raw_sha256": golden.manifest.get("files", {}).get(golden.raw.name),
        },
        # what the registry records when the clone is written (xnat-fleet image write)
        "image_id": f"{golden.image_id}-{name}",
        "image_version": golden.version,
        "ssh_host_keys": [k.model_dump() for k in keys],
        "ssh_host_key_fingerprints": {k.type: k.fingerprint for k in keys},
        "tls_certificate_sha256": fingerprint,
        "xnat_gate_ports": list(ports),
        "machine_id": machine_id,  # "uninitialized": the relay makes its own at first boot
        "identity": sorted(f"{ch.kind} {ch.path}" for ch in found),
        "size_bytes": block_map.image_size,
        "mapped_bytes": block_map.mapped_bytes,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    delta = disk_lib.allocated_bytes(disk)
    seconds = round(share + time.monotonic() - t0, 1)
    manifest["delta_bytes"] = delta
    # what the registry records as the written image's checksum: this clone's disk file
    manifest["disk_sha256"] = sha256_file(disk)
    manifest["seconds"] = seconds
    (directory / f"{name}.clone.json").write_text(json.dumps(manifest, indent=2) + "\n")
    latest = output / f"{name}-latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(directory.name)
    return CloneResult(name, directory, disk, bmap_path, manifest, seconds, delta)


def open_clone(path: Path) -> tuple[Path, dict[str, Any]]:
    """A clone directory (or its qcow2): (the qcow2, its manifest)."""
    directory, _found, manifest = _manifest(path, ".clone.json", "a clone directory")
    disk = directory / f"{manifest['relay']}.qcow2"
    if not disk.is_file():
        raise CloneError(f"{path}: {disk.name} is missing")
    return disk, manifest
