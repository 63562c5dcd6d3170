"""``xnat-fleet image``: the relay image pipeline (docs/images.md)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from xnat_fleet.cli.options import inventory_options, json_option, make_source
from xnat_fleet.errors import ExitCode, FleetError
from xnat_fleet.image import audit as audit_lib
from xnat_fleet.image import build as build_lib
from xnat_fleet.image import recipe as recipe_lib
from xnat_fleet.model.loader import InventorySource, load_inventory
from xnat_fleet.runner import inventory_secrets


@click.group()
def image() -> None:
    """Golden relay images: build, audit."""


class RichReporter(build_lib.Reporter):
    """Stage, elapsed time and (where the size is known) a bar on stderr; a line per stage."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TaskID,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[stage]:<9}[/bold]"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}", markup=False),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None

    def start(self, stage: str, total: int | None = None) -> None:
        if self.task is None:
            self.progress.start()
        else:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(stage, total=total, stage=stage, detail="")

    def detail(self, text: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, detail=text[:70])

    def advance(self, amount: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, advance=amount)

    def done(self, stage: str, seconds: float, note: str) -> None:
        self.progress.console.print(
            f"[green]✓[/green] {stage:<9} {seconds:7.1f} s  {escape(note)}", soft_wrap=True
        )

    def stop(self) -> None:
        self.progress.stop()


@image.command()
@inventory_options
@click.option(
    "--profile",
    required=True,
    type=click.Choice(recipe_lib.available()),
    help="Hardware profile (relay_images/<profile>.yml).",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the image is published (default: build/images).",
)
@click.option("--qcow2", is_flag=True, help="Also write a qcow2 (for VM users).")
@click.option(
    "--standins",
    is_flag=True,
    help="Use the tests' stand-in artifacts instead of the pinned XNAT (demos and tests only; "
    "the manifest says so).",
)
@click.option(
    "--image-version", help="IMAGE_VERSION to stamp (default: the UTC time, YYYYMMDD.HHMMSS)."
)
@click.option("--no-apt-cache", is_flag=True, help="Do not start or use the machine's apt cache.")
@json_option
def build(
    inventory: Path,
    vault_password_file: Path | None,
    profile: str,
    output: Path | None,
    qcow2: bool,
    standins: bool,
    image_version: str | None,
    no_apt_cache: bool,
    as_json: bool,
) -> None:
    """Build, audit and publish the golden relay image of PROFILE for INVENTORY's study.

    Stages: check, base (mmdebstrap, cached), artifacts, provision (playbooks/image.yml on the
    base root as a systemd container, cached by its inputs), unpack, seal, assemble, package,
    audit, publish.
    Progress goes to stderr; a build whose audit finds anything publishes nothing.
    """
    source = make_source(inventory, vault_password_file)
    err = Console(stderr=True, highlight=False)
    reporter = RichReporter(err)
    try:
        result = build_lib.build(
            source, profile, output=output, qcow2=qcow2, standins=standins,
            version=image_version, reporter=reporter, apt_cache=not no_apt_cache,
        )  # fmt: skip
    finally:
        reporter.stop()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "image_id": result.image_id,
                    "image_version": result.image_version,
                    "directory": str(result.directory),
                    "stages_seconds": result.stages,
                    "notes": result.notes,
                    "manifest": result.manifest,
                },
                indent=2,
            )
        )
        return
    out = Console(highlight=False, soft_wrap=True)
    m = result.manifest
    mib = 1 << 20
    out.print(
        f"[green]✓[/green] {result.image_id} {result.image_version} (profile {result.profile}, "
        f"XNAT {m['xnat_version']}) in {escape(str(result.directory))}"
    )
    out.print(
        f"  {m['size_bytes'] / mib:.0f} MiB image, {m['mapped_bytes'] / mib:.0f} MiB mapped; "
        f"total {sum(result.stages.values()):.0f} s; XNAT artifacts: {m['xnat_artifacts']}"
    )
    for name, digest in sorted(result.files.items()):
        out.print(f"  {digest[:16]}  {name}")


@image.command()
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-i",
    "--inventory",
    type=click.Path(exists=True, path_type=Path),
    help="Inventory whose vault values must not be in the image (with its vault password).",
)
@click.option(
    "--vault-password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Vault password file or script (default: the inventory's xnat-fleet.yml).",
)
@click.option(
    "--provisioning-key",
    "provisioning_keys",
    multiple=True,
    help="An OpenSSH public key line that must not be authorised in the image (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit(
    target: Path,
    inventory: Path | None,
    vault_password_file: Path | None,
    provisioning_keys: tuple[str, ...],
    as_json: bool,
) -> None:
    """List what must not ship in TARGET (a raw disk image or a root tree); fail on any.

    Read-only and without root: a disk image is read through its GPT, its file systems copied
    out (debugfs, mtools) into a temporary directory.
    """
    secrets: set[str] = set()
    if inventory is not None:
        source = InventorySource(path=inventory, vault_password_file=vault_password_file)
        inv = load_inventory(source)
        secrets = inventory_secrets(inv.hostvars, source.vault_password())
    if target.is_dir():
        findings = audit_lib.scan_tree(target, secrets, provisioning_keys)
    else:
        findings = audit_lib.scan_image(target, secrets, provisioning_keys)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "target": str(target),
                    "vault_values_checked": len(secrets),
                    "findings": [
                        {"path": f.path, "rule": f.rule, "detail": f.detail} for f in findings
                    ],
                },
                indent=2,
            )
        )
    else:
        out = Console(highlight=False, soft_wrap=True)
        for f in findings:
            out.print(f"[red]✗[/red] {escape(f.line())}")
        verdict = (
            "[green]clean[/green]" if not findings else f"[red]{len(findings)} finding(s)[/red]"
        )
        out.print(
            f"audit of {escape(str(target))}: {verdict} ({len(secrets)} vault values checked)"
        )
    if findings:
        raise click.exceptions.Exit(int(ExitCode.ERROR))


def _manifest_path(target: Path) -> Path:
    if target.is_file():
        return target
    found = sorted(target.glob("*.manifest.json"))
    if len(found) != 1:
        raise FleetError(f"{target}: expected one *.manifest.json in it, found {len(found)}")
    return found[0]


@image.command(name="clone")
@inventory_options
@click.argument("relays", nargs=-1)
@click.option(
    "--image",
    "golden",
    type=click.Path(exists=True, path_type=Path),
    help="Golden image directory (default: build/images/<study>-relay-<profile>-latest).",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the clones go (default: build/clones).",
)
@json_option
def clone_command(
    inventory: Path,
    vault_password_file: Path | None,
    relays: tuple[str, ...],
    golden: Path | None,
    output: Path | None,
    as_json: bool,
) -> None:
    """Clone the golden image once per RELAY (default: every relay) and personalise each clone
    offline: host name, network, SSH host keys, TLS key and certificate, and every file the
    relay's roles render from its own inventory and secrets.

    Each clone is a qcow2 file backed by the golden raw image (only its changes take space),
    with its block map and manifest; `image write` puts it on a disk. Needs root.
    """
    from xnat_fleet.image import clone as clone_lib

    source = make_source(inventory, vault_password_file)
    err = Console(stderr=True, highlight=False)
    started = time.monotonic()
    with err.status("personalising", spinner="dots") as status:

        def on_progress(p: Any) -> None:
            if p.kind == "task":
                status.update(f"personalising: {escape(p.task)[:70]}")

        results = clone_lib.clone(
            source, list(relays), image=golden, build_dir=build_lib.default_build_dir(),
            output=output, on_progress=on_progress, log=lambda m: err.print(escape(m)),
        )  # fmt: skip
    total = time.monotonic() - started
    if as_json:
        click.echo(
            json.dumps(
                {
                    "seconds": round(total, 1),
                    "clones": [
                        {"relay": r.relay, "directory": str(r.directory), "disk": str(r.disk),
                         "seconds": r.seconds, "delta_bytes": r.delta_bytes,
                         "manifest": r.manifest}
                        for r in results
                    ],
                },
                indent=2,
            )
        )  # fmt: skip
        return
    out = Console(highlight=False, soft_wrap=True)
    for r in results:
        m = r.manifest
        out.print(
            f"[green]✓[/green] {r.relay} ({m['fqdn']}, site {m['site']}): {escape(str(r.disk))}, "
            f"{r.delta_bytes / 1024:.0f} KiB over {m['golden']['image_id']} "
            f"{m['golden']['image_version']}"
        )
        for kind, fp in m["ssh_host_key_fingerprints"].items():
            out.print(f"  ssh {kind:<8} {fp}")
        out.print(f"  tls sha256   {m['tls_certificate_sha256']}")
    each = total / max(len(results), 1)
    out.print(f"{len(results)} clone(s) in {total:.1f} s ({each:.1f} s per relay)")


@image.command()
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@json_option
def show(target: Path, as_json: bool) -> None:
    """Print the manifest of a published image (its directory, or its manifest.json)."""
    path = _manifest_path(target)
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FleetError(f"{path}: not a readable manifest ({exc})") from None
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    out = Console(highlight=False, soft_wrap=True)
    mib = 1 << 20
    out.print(
        f"[bold]{escape(str(m.get('image_id')))}[/bold] {escape(str(m.get('image_version')))}"
    )
    rows = [
        ("profile", m.get("profile")),
        ("study", m.get("study")),
        ("XNAT", m.get("xnat_version")),
        ("XNAT artifacts", m.get("xnat_artifacts")),
        ("git revision", m.get("git_revision")),
        ("packages", f"{m.get('packages')} (sha256 {str(m.get('packages_sha256'))[:16]})"),
        (
            "size",
            f"{m.get('size_bytes', 0) / mib:.0f} MiB, {m.get('mapped_bytes', 0) / mib:.0f} MiB"
            " mapped",
        ),
        ("build inputs", f"{len(m.get('inputs', {}))} hashed"),
    ]
    for label, value in rows:
        out.print(f"  {label:<15} {escape(str(value))}")
    for name, digest in sorted(m.get("files", {}).items()):
        out.print(f"  {digest}  {escape(name)}")
    out.print(f"  (check the files with: cd {escape(str(path.parent))} && sha256sum -c SHA256SUMS)")


def _byte_progress(console: Console) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description:<8}[/bold]"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _image_and_map(image: Path, bmap_file: Path | None) -> tuple[Path, Any]:
    from xnat_fleet.image import bmap as bmap_lib
    from xnat_fleet.image import write as write_lib

    raw = write_lib.find_image(image)
    source = bmap_file or write_lib.find_bmap(raw)
    try:
        return raw, bmap_lib.read(source)
    except (bmap_lib.BmapError, OSError) as exc:
        raise FleetError(f"{source}: {exc}") from None


_bmap_option = click.option(
    "--bmap",
    "bmap_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Block map (default: the .bmap next to the image; bmaptool's own maps work too).",
)
_device_option = click.option(
    "--device",
    required=True,
    type=click.Path(path_type=Path),
    help="Target: a block device (/dev/disk/by-id/...) or a file standing in for a disk.",
)


def _clone_of(path: Path) -> Path | None:
    """The clone directory PATH names (a clone directory or its qcow2), else None."""
    directory = path if path.is_dir() else path.parent
    return directory if any(directory.glob("*.clone.json")) else None


def _open_image(image_path: Path, bmap_file: Path | None) -> tuple[bool, Path, dict[str, Any], Any]:
    """What write and verify read: (a clone?, its qcow2 or the raw image, its manifest, the
    block map: its own, or --bmap). A raw image without a manifest has an empty one."""
    from xnat_fleet.image import bmap as bmap_lib
    from xnat_fleet.image import clone as clone_lib

    clone_dir = _clone_of(image_path)
    if clone_dir is not None:
        qcow2, manifest = clone_lib.open_clone(clone_dir)
        return True, qcow2, manifest, bmap_lib.read(bmap_file or qcow2.with_suffix(".bmap"))
    raw, block_map = _image_and_map(image_path, bmap_file)
    found = sorted(raw.parent.glob("*.manifest.json"))
    return False, raw, json.loads(found[0].read_text()) if found else {}, block_map


def _device_identity(device: Path) -> tuple[str | None, str | None]:
    """Model and serial of a block device (lsblk), None for a file."""
    from xnat_fleet.image import files
    from xnat_fleet.image.write import WriteError

    if not device.is_block_device():
        return None, None
    proc = files.run(
        "lsblk", "-dno", "MODEL,SERIAL", "--json", str(device), error=WriteError, check=False
    )
    try:
        dev = json.loads(proc.stdout)["blockdevices"][0]
    except (ValueError, KeyError, IndexError):
        return None, None
    return (dev.get("model") or None), (dev.get("serial") or None)


@image.command()
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, path_type=Path))
@_device_option
@_bmap_option
@click.option("--force", is_flag=True, help="Overwrite a target that holds data.")
@click.option(
    "--allow-standins",
    is_flag=True,
    help="Write an image built with the tests' stand-ins for XNAT (demos and tests only).",
)
@click.option(
    "-i",
    "--inventory",
    type=click.Path(exists=True, path_type=Path),
    help="Study inventory whose registry records a written clone (default: the clone's own).",
)
@json_option
def write(
    image_path: Path,
    device: Path,
    bmap_file: Path | None,
    force: bool,
    allow_standins: bool,
    inventory: Path | None,
    as_json: bool,
) -> None:
    """Write IMAGE (a raw image, a published image directory or a clone from `image clone`) to
    a disk by its block map, then read every mapped range back and compare it with the map.

    Refuses a target in use, one smaller than the image, and one holding a partition table or
    a file system unless --force; wipes old signatures (a backup GPT at the end included).
    A clone that verifies is recorded in the study's registry (relay-registry.yml).
    """
    from contextlib import ExitStack

    from xnat_fleet.image import disk as disk_lib
    from xnat_fleet.image import registry as registry_lib
    from xnat_fleet.image import write as write_lib

    is_clone, source, manifest, block_map = _open_image(image_path, bmap_file)
    if "stand-in" in str(manifest.get("xnat_artifacts", "")) and not allow_standins:
        raise FleetError(
            f"{image_path}: built with the tests' stand-ins, NOT XNAT: such a disk must not "
            "be shipped (--allow-standins writes it anyway, for demos and tests)"
        )
    err = Console(stderr=True, highlight=False)
    with ExitStack() as stack:
        raw = stack.enter_context(disk_lib.exported(source)) if is_clone else source
        with _byte_progress(err) as bar:
            w = bar.add_task("write", total=block_map.mapped_bytes)
            v = bar.add_task("verify", total=block_map.mapped_bytes, start=False)

            def on_verify(n: int) -> None:
                if not bar.tasks[v].started:
                    bar.start_task(v)
                bar.update(v, advance=n)

            result = write_lib.write(
                raw, block_map, device, force=force,
                on_write=lambda n: bar.update(w, advance=n), on_verify=on_verify,
            )  # fmt: skip
    record = None
    if is_clone and not result.bad_ranges:
        directory = (inventory if inventory is not None else Path(manifest["inventory"])).resolve()
        if directory.is_file():
            directory = directory.parent
        model, serial = _device_identity(device)
        record = registry_lib.new_record(
            relay=manifest["relay"],
            site=manifest.get("site"),
            manifest=manifest,
            image_sha256=str(manifest["disk_sha256"]),
            host_keys=[registry_lib.HostKey(**k) for k in manifest["ssh_host_keys"]],
            device=registry_lib.Device(path=str(device), model=model, serial=serial),
            tls_certificate_sha256=manifest.get("tls_certificate_sha256"),
        )
        registry_lib.append(registry_lib.path_for(directory), record)
    _report(result.bad_ranges, block_map, device, as_json, written=result, record=record)


@image.command()
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, path_type=Path))
@_device_option
@_bmap_option
@json_option
def verify(image_path: Path, device: Path, bmap_file: Path | None, as_json: bool) -> None:
    """Read every mapped range of IMAGE's block map (an image, its directory or a clone) back
    from DEVICE and compare it."""
    from xnat_fleet.image import write as write_lib

    _is_clone, _source, _manifest, block_map = _open_image(image_path, bmap_file)
    if not device.exists():
        raise FleetError(f"{device}: no such device or file")
    err = Console(stderr=True, highlight=False)
    started = time.monotonic()
    with _byte_progress(err) as bar:
        v = bar.add_task("verify", total=block_map.mapped_bytes)
        bad = write_lib.verify(block_map, device, lambda n: bar.update(v, advance=n))
    _report(bad, block_map, device, as_json, verify_seconds=time.monotonic() - started)


def _report(
    bad: list[Any],
    block_map: Any,
    device: Path,
    as_json: bool,
    written: Any = None,
    verify_seconds: float | None = None,
    record: Any = None,
) -> None:
    seconds = written.verify_seconds if written is not None else (verify_seconds or 0.0)
    doc: dict[str, Any] = {
        "device": str(device),
        "image_bytes": block_map.image_size,
        "mapped_bytes": block_map.mapped_bytes,
        "verify_seconds": round(seconds, 2),
        "bad_ranges": [
            {
                "first_block": r.first,
                "last_block": r.last,
                "bytes": list(r.byte_span(block_map.block_size, block_map.image_size)),
            }
            for r in bad
        ],
        "verified": not bad,
    }
    if written is not None:
        doc |= {
            "bytes_written": written.bytes_written,
            "write_seconds": round(written.write_seconds, 2),
            "bytes_per_second": round(written.throughput),
            "wiped_signatures": written.wiped,
        }
    if record is not None:
        doc["registry_record"] = record.model_dump(mode="json", exclude_none=True)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        out = Console(highlight=False, soft_wrap=True)
        mib = 1 << 20
        if written is not None:
            total = written.write_seconds + written.verify_seconds
            out.print(
                f"wrote {written.bytes_written / mib:.0f} MiB of a {block_map.image_size / mib:.0f}"
                f" MiB image to {escape(str(device))} in {written.write_seconds:.1f} s, read back"
                f" alongside, done {written.verify_seconds:.1f} s after the last write"
                f" ({written.bytes_written / mib / total:.0f} MiB/s overall)"
                if total
                else f"wrote {written.bytes_written} bytes to {escape(str(device))}"
            )
            if written.wiped:
                out.print(f"wiped: {escape(', '.join(written.wiped))}")
        for r in bad:
            start, length = r.byte_span(block_map.block_size, block_map.image_size)
            out.print(
                f"[red]✗[/red] blocks {r.first}-{r.last} (bytes {start}-{start + length - 1}) "
                "differ from the bmap"
            )
        verdict = "[green]verified[/green]" if not bad else f"[red]{len(bad)} range(s) differ[/red]"
        out.print(
            f"{escape(str(device))}: {verdict}: {len(block_map.ranges)} mapped ranges, "
            f"{block_map.mapped_bytes / mib:.0f} MiB read back"
            + (f" in {seconds:.1f} s" if written is None else "")
        )
        if record is not None:
            out.print(
                f"registered: {record.relay} (site {record.site}) on {escape(record.device.path)}"
                f" [{escape(str(record.device.model or 'file'))}"
                f" {escape(str(record.device.serial or ''))}]"
            )
    if bad:
        raise click.exceptions.Exit(int(ExitCode.ERROR))


@image.command()
@click.argument("disk", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--memory", default=3072, show_default=True, help="Guest memory in MiB.")
@click.option("--timeout", default=600, show_default=True, help="Seconds to reach a login prompt.")
@click.option(
    "--tpm/--no-tpm", default=True, show_default=True,
    help="Give the guest a TPM2 (swtpm; a NUC clone binds its data volume to it).",
)  # fmt: skip
def boot(disk: Path, memory: int, timeout: int, tpm: bool) -> None:
    """Boot a written disk (a file) under QEMU through UEFI to its login prompt, then power it
    off: a smoke test of a disk before it ships. Fails on a failed unit or a console prompt.
    The boot changes the disk (a clone's first boot runs). The guest has a TPM2 (swtpm) whose
    state lives next to the disk (DISK.tpm/): the same box at every boot of that disk."""
    from xnat_fleet.image import clone as clone_lib
    from xnat_fleet.image import disk as disk_lib
    from xnat_fleet.image import qemu

    # A clone's first boot (it has no machine id yet) is awaited to its end on the console.
    # The root is looked at through a read-only mount, not copied out.
    part = disk_lib.partition(disk, clone_lib.ROOT_PARTITION)
    scratch = Path(tempfile.mkdtemp(prefix="xnat-fleet-boot-"))
    try:
        with disk_lib.mounted(disk, part, scratch / "root") as root:
            first = (root / "etc/machine-id").read_text().strip() == "uninitialized"
            personalised = (root / "data/xnat/home/config/xnat-conf.properties").is_file()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ready = qemu.FIRST_BOOT_DONE if first and personalised else None
    err = Console(stderr=True, highlight=False)
    with err.status(f"booting {escape(disk.name)} (QEMU, TCG, no network)", spinner="dots"):
        result = qemu.boot(
            disk, disk.parent, timeout=timeout, memory_mib=memory, ready=ready,
            tpm=disk.parent / f"{disk.name}.tpm" if tpm else None,
        )  # fmt: skip
    login = next(
        (line for line in result.console.splitlines() if " login:" in line), "login prompt"
    )
    out = Console(highlight=False, soft_wrap=True)
    out.print(
        f"[green]✓[/green] {escape(disk.name)}: {escape(login.strip())} after "
        f"{result.seconds_to_login:.0f} s, powered off in {result.shutdown_seconds:.0f} s"
    )


@image.command()
@inventory_options
@json_option
def registry(inventory: Path, vault_password_file: Path | None, as_json: bool) -> None:
    """List the registry of written relay disks next to INVENTORY (relay-registry.yml)."""
    from xnat_fleet.image import registry as registry_lib

    source = make_source(inventory, vault_password_file)
    path = registry_lib.path_for(source.directory)
    reg = registry_lib.load(path)
    current = {id(r) for r in reg.current().values()}
    if as_json:
        click.echo(
            json.dumps(
                {
                    "file": str(path),
                    "disks": [
                        {
                            **r.model_dump(mode="json", exclude_none=True),
                            "current": id(r) in current,
                            "fingerprints": [k.fingerprint for k in r.ssh_host_keys],
                        }
                        for r in reg.disks
                    ],
                },
                indent=2,
            )
        )
        return
    out = Console(highlight=False, soft_wrap=True)
    if not reg.disks:
        out.print(f"{escape(str(path))}: no disk written yet")
        return
    for r in reg.disks:
        mark = "[green]current[/green]" if id(r) in current else "replaced"
        device = " ".join(x for x in (r.device.model, r.device.serial) if x) or r.device.path
        out.print(
            f"{escape(r.relay)} ({escape(r.site or '-')}): {escape(r.image_id)} "
            f"{escape(r.image_version)}, XNAT {escape(r.xnat_version)}, on {escape(device)}, "
            f"{escape(r.written_at)} by {escape(r.operator)} [{mark}]"
        )
        for k in r.ssh_host_keys:
            out.print(f"    {k.type} {k.fingerprint}")
