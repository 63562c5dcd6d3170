"""``xnat-fleet image build``: the golden relay image of one hardware profile, stage by stage.

check → base → artifacts → provision → unpack → seal → assemble → package → audit → publish
(docs/images.md). Everything happens under the build directory (``build/`` by default,
git-ignored): ``build/cache`` keeps the provisioned root tarball of the last converge per
profile, ``build/work/<profile>`` the tree and the unpublished image, and the published image
goes to ``<output>/<image id>-<version>/`` with ``<output>/<image id>-latest`` pointing at it.
The audit runs last, on the packaged raw image; if it finds anything, the unpublished files are
deleted and nothing is published.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xnat_fleet import aptcache
from xnat_fleet import artifacts as artifacts_lib
from xnat_fleet import lab as lab_lib
from xnat_fleet.errors import FleetError
from xnat_fleet.image import assemble, audit, base, bmap, package, provision, seal
from xnat_fleet.image import recipe as recipe_lib
from xnat_fleet.model.fleet import Fleet
from xnat_fleet.model.loader import InventorySource, load_fleet_and_vars
from xnat_fleet.paths import project_root
from xnat_fleet.runner import Progress, inventory_secrets

STANDIN_NOTE = "stand-ins (tests/fixtures: NOT XNAT; for demos and tests only)"


class AuditFailed(FleetError):
    """The built image holds something that must not ship: nothing was published."""

    def __init__(self, findings: list[audit.Finding]) -> None:
        lines = [f.line() for f in findings]
        summary = f"the audit found {len(findings)} problem(s); nothing was published"
        super().__init__("\n".join([*lines, summary]))
        self.findings = findings


class Reporter:
    """What a build tells its caller: stage starts and ends, details, byte progress."""

    def start(self, stage: str, total: int | None = None) -> None: ...
    def detail(self, text: str) -> None: ...
    def advance(self, amount: int) -> None: ...
    def done(self, stage: str, seconds: float, note: str) -> None: ...


@dataclass
class BuildResult:
    profile: str
    image_id: str
    image_version: str
    directory: Path
    manifest: dict[str, Any]
    files: dict[str, str]
    stages: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    relays: list[str] = field(default_factory=list)


def default_build_dir() -> Path:
    return project_root() / "build"


def git_revision(root: Path | None = None) -> str:
    """HEAD of the project's checkout, ``-dirty`` when the work tree has changes."""
    root = root or project_root()
    try:
        rev = subprocess.run(  # noqa: S603 (argv, no shell)
            ["git", "-C", str(root), "rev-parse", "HEAD"],  # noqa: S607
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(  # noqa: S603 (argv, no shell)
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def installed_packages(tree: Path) -> list[str]:
    """``name=version`` of every installed package of the tree (its dpkg status)."""
    status = seal.inside(tree, "/var/lib/dpkg/status")
    out = []
    for stanza in status.read_text(errors="replace").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            arch = fields.get("Architecture", "")
            out.append(f"{fields['Package']}:{arch}={fields.get('Version', '')}")
    return sorted(out)


def image_identity(fleet: Fleet, profile: str) -> str:
    return f"{fleet.study.id.lower()}-relay-{profile}"


def relay_plugins(fleet: Fleet) -> list[str]:
    """The plugins every relay runs; an image carries one set, so the relays must agree."""
    sets = {tuple(sorted(r.config.fleet_plugins)) for r in fleet.relays}
    if len(sets) > 1:
        listing = "; ".join(
            f"{r.name}: {', '.join(r.config.fleet_plugins) or 'none'}" for r in fleet.relays
        )
        raise FleetError(
            "fleet_plugins: the relays run different plugins, and one golden image carries one "
            f"set ({listing}); give every relay the same fleet_plugins (group_vars/relays)"
        )
    return list(sets.pop()) if sets else []


def build(
    source: InventorySource,
    profile: str,
    *,
    build_dir: Path | None = None,
    output: Path | None = None,
    qcow2: bool = False,
    standins: bool = False,
    version: str | None = None,
    reporter: Reporter | None = None,
    apt_cache: bool = True,
) -> BuildResult:
    """Build, audit and publish the golden image of PROFILE for the study of SOURCE."""
    rep = reporter or Reporter()
    build_dir = build_dir or default_build_dir()
    output = output or build_dir / "images"
    stages: dict[str, float] = {}
    notes: dict[str, str] = {}

    @contextmanager
    def stage(name: str, total: int | None = None) -> Iterator[None]:
        rep.start(name, total)
        started = time.monotonic()
        yield
        stages[name] = round(time.monotonic() - started, 1)
        rep.done(name, stages[name], notes.get(name, ""))

    with stage("check"):
        # Nothing is built for an invalid inventory (check's rules: the relays' XNAT version is
        # the central's, artifacts pinned, ...).
        fleet, inv = load_fleet_and_vars(source)
        r = recipe_lib.load(profile)
        plugins = relay_plugins(fleet)
        relays = [h.name for h in fleet.relays if h.config.fleet_hardware == profile]
        xnat_version = fleet.central.config.fleet_xnat.version
        secrets = sorted(inventory_secrets(inv.hostvars, source.vault_password()))
        notes["check"] = (
            f"study {fleet.study.id}, XNAT {xnat_version}, "
            f"{len(relays)} relay(s) of profile {profile}"
        )

    port = None
    proxy = None
    if apt_cache:
        url = aptcache.ensure()
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        proxy = f"http://127.0.0.1:{port}/"

    with stage("base"):
        tarball, reused = base.build(r, apt_proxy=proxy, log=rep.detail)
        base_key = base.key(r)
        notes["base"] = f"{'reused' if reused else 'built'} {tarball.name}"

    host_vars: dict[str, Any] = {}
    with stage("artifacts"):
        if standins:
            directory = build_dir / "standins"
            manifest = lab_lib.stage_standins(fleet, directory, apt_proxy=proxy)
            store = directory / "store"
            host_vars = lab_lib.standin_inputs(plugins, store, manifest)
            digests = {
                k: str(v["sha256"]) for k, v in manifest.items() if k == "web" or k in plugins
            }
            digests |= {k: str(manifest[k]["sha256"]) for k in ("tomcat", "jre")}
            notes["artifacts"] = f"stand-ins in {store} (NOT XNAT)"
        else:
            store = artifacts_lib.store_dir(source)
            relay_names = {x.name for x in fleet.relays}
            pins = [p for p in artifacts_lib.pins(fleet) if relay_names & set(p.hosts)]
            artifacts_lib.require(store, pins)  # before the container starts
            digests = {p.key: p.sha256 for p in pins}
            notes["artifacts"] = f"{len(pins)} pinned artifacts verified in {store}"

    work = build_dir / "work" / profile
    work.mkdir(parents=True, exist_ok=True)

    def progress(p: Progress) -> None:
        if p.kind == "task":
            rep.detail(p.task)

    with stage("provision"):
        prov = provision.provision(
            recipe=r, base_tarball=tarball, base_key=base_key, study=source,
            cache=build_dir / "cache", work=work, artifacts=digests, host_vars=host_vars,
            artifact_store=store, apt_port=port, secrets=secrets, on_progress=progress,
        )  # fmt: skip
        inputs = {**prov.inputs, f"relay_images/{r.profile}.yml": r.digest()}
        notes["provision"] = (
            f"reused {prov.tarball.name}" if prov.reused else f"converged ({prov.tarball.name})"
        )

    with stage("unpack", prov.tarball.stat().st_size):
        tree = base.unpack(prov.tarball, work / "root", rep.advance)

    image_id = image_identity(fleet, profile)
    image_version = version or datetime.now(UTC).strftime("%Y%m%d.%H%M%S")
    with stage("seal"):
        applied = seal.apply(tree, list(r.seal))
        seal.stamp_os_release(tree, image_id, image_version, xnat_version)
        notes["seal"] = f"{sum(len(a.paths) for a in applied)} paths removed, reset or written"

    out = work / "out"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    name = f"{image_id}-{image_version}"
    raw = out / f"{name}.raw"
    with stage("assemble"):
        disk = assemble.assemble(
            tree, r, raw, work / "assemble", image_id, image_version, rep.detail
        )
        notes["assemble"] = f"{disk.size >> 20} MiB, GPT {disk.disk_guid}"

    with stage("package"):
        block_map = bmap.create(raw)
        packages = installed_packages(tree)
        meta = package.manifest(
            image_id=image_id, image_version=image_version, profile=profile,
            study=fleet.study.id, xnat_version=xnat_version, revision=git_revision(),
            packages_digest=hashlib.sha256("\n".join(packages).encode()).hexdigest(),
            inputs=inputs, block_map=block_map,
        )  # fmt: skip
        meta["packages"] = len(packages)
        meta["xnat_artifacts"] = STANDIN_NOTE if standins else "pinned (fleet_artifacts)"
        meta["relays"] = relays
        shipped = package.package(raw, meta, qcow2=qcow2)
        zst_mib = shipped.zst.stat().st_size >> 20
        notes["package"] = f"mapped {block_map.mapped_bytes >> 20} MiB, zstd {zst_mib} MiB"

    with stage("audit"):
        findings = audit.scan_image(raw, secrets)
        if findings:
            shutil.rmtree(out, ignore_errors=True)
            raise AuditFailed(findings)
        notes["audit"] = f"clean ({len(secrets)} vault values checked)"

    with stage("publish"):
        output.mkdir(parents=True, exist_ok=True)
        final = output / name
        if final.exists():
            shutil.rmtree(final)
        try:
            out.rename(final)
        except OSError:  # another file system
            shutil.move(str(out), final)
        latest = output / f"{image_id}-latest"
        tmp = output / f".{image_id}-latest.new"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(final.name)
        tmp.replace(latest)
        notes["publish"] = str(final)

    doc = json.loads((final / f"{name}.manifest.json").read_text())
    return BuildResult(
        profile, image_id, image_version, final, doc, doc.get("files", {}), stages, notes, relays
    )
