"""``xnat-fleet lab``: an inventory's hosts as local systemd containers."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from xnat_fleet import lab as lab_lib
from xnat_fleet.cli.options import inventory_options, json_option, make_source
from xnat_fleet.model.fleet import Fleet
from xnat_fleet.model.loader import InventorySource, load_fleet


@click.group()
def lab() -> None:
    """Run the inventory's hosts as local containers (demo and trials)."""


@lab.command()
@inventory_options
def up(inventory: Path, vault_password_file: Path | None) -> None:
    """Start one systemd container per host and write the lab overlay inventory."""
    source = make_source(inventory, vault_password_file)
    fleet = load_fleet(source)
    hosts = lab_lib.up(fleet, source)
    Console(stderr=True).print(
        f"lab: {len(hosts)} containers on {lab_lib.NETWORK}; overlay {lab_lib.overlay_path(source)}"
    )


@lab.command()
@inventory_options
def down(inventory: Path, vault_password_file: Path | None) -> None:
    """Remove the lab containers, network and overlay."""
    source = make_source(inventory, vault_password_file)
    lab_lib.down(load_fleet(source), source)


@lab.command()
@inventory_options
@json_option
def status(inventory: Path, vault_password_file: Path | None, as_json: bool) -> None:
    """Show each lab container and how to reach it."""
    source = make_source(inventory, vault_password_file)
    print_status(load_fleet(source), source, as_json=as_json)


def print_status(fleet: Fleet, source: InventorySource, *, as_json: bool = False) -> None:
    states = lab_lib.status(fleet)
    key = lab_lib.lab_dir(source) / "id_ed25519"
    if key.is_relative_to(Path.cwd()):
        key = key.relative_to(Path.cwd())
    rows = [
        {
            "host": h.name,
            "kind": next(x.kind for x in fleet.hosts if x.name == h.name),
            "container": h.container,
            "address": h.address,
            "state": states[h.name],
            "shell": f"podman exec -it {h.container} bash",
            "ssh": f"ssh -i {key} {lab_lib.LAB_ADMIN}@{h.address}",
        }
        for h in lab_lib.lab_hosts(fleet)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"lab of study {fleet.study.id}")
    for column in ("host", "kind", "container", "address", "state"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["host"], r["kind"], r["container"], r["address"], r["state"])
    out = Console(highlight=False, soft_wrap=True)
    out.print(table)
    out.print(
        "[bold]stand-ins:[/bold] the lab runs the tests' stand-in web application and plugin jars "
        "in place of XNAT and its plugins (tests/fixtures; NOT XNAT), behind the real Tomcat, "
        "nginx, PostgreSQL and firewall roles."
    )
    out.print("reach a host with a shell in its container, or over SSH as the lab admin:")
    for r in rows:
        out.print(f"  {r['host']:<14} {r['shell']}")
        out.print(f"  {'':<14} {r['ssh']}")
