"""``xnat-fleet image``: the relay image pipeline (docs/images.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from xnat_fleet.errors import ExitCode
from xnat_fleet.image import audit as audit_lib
from xnat_fleet.model.loader import InventorySource, load_inventory
from xnat_fleet.runner import inventory_secrets


@click.group()
def image() -> None:
    """Golden relay images: build, audit."""


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
