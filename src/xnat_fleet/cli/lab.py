"""``xnat-fleet lab``: an inventory's hosts as local systemd containers."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xnat_fleet import lab as lab_lib
from xnat_fleet.cli.options import inventory_options, json_option, make_source
from xnat_fleet.model.fleet import Fleet
from xnat_fleet.model.loader import InventorySource, load_fleet, load_fleet_and_vars


@click.group()
def lab() -> None:
    """Run the inventory's hosts as local containers (demo and trials)."""


@lab.command()
@inventory_options
@click.option(
    "--connection",
    type=click.Choice(lab_lib.CONNECTIONS),
    default="ssh",
    show_default=True,
    help="How Ansible reaches the containers: SSH as the lab admin with checked host keys "
    "(as real hosts), or podman exec (for comparison).",
)
@click.option(
    "--no-apt-cache",
    is_flag=True,
    help="Let the containers download Debian packages directly, not through the machine's "
    "apt cache.",
)
def up(
    inventory: Path, vault_password_file: Path | None, connection: str, no_apt_cache: bool
) -> None:
    """Start one systemd container per host and write the lab overlay inventory."""
    source = make_source(inventory, vault_password_file)
    fleet, inv = load_fleet_and_vars(source)
    err = Console(stderr=True, highlight=False)
    legacy = lab_lib.legacy_containers()
    if legacy:
        err.print(
            "note: containers of an older lab without a lab id are still there "
            f"({', '.join(legacy)}); remove them with `podman rm -f {' '.join(legacy)}` "
            "and `podman network rm xf-lab`",
            soft_wrap=True,
        )
    lab_id = lab_lib.lab_id(source.directory)
    state = lab_lib.up(
        fleet,
        source,
        connection=connection,
        apt_cache=not no_apt_cache,
        sshd_ports=lab_lib.ssh_ports(fleet, inv),
        say=lambda text: err.print(f"lab {lab_id}: {escape(text)}", soft_wrap=True),
    )
    err.print(
        f"lab {state.lab_id}: {len(fleet.hosts)} containers on {state.network} ({state.subnet}), "
        f"connection {state.connection}, apt cache "
        f"{state.apt_proxy or 'not used'}; overlay {lab_lib.overlay_path(source)}",
        soft_wrap=True,
    )


@lab.command()
@inventory_options
def down(inventory: Path, vault_password_file: Path | None) -> None:
    """Remove this inventory's lab: its containers, network, stand-ins and overlay."""
    source = make_source(inventory, vault_password_file)
    removed = lab_lib.down(source)
    Console(stderr=True, highlight=False).print(
        f"lab {lab_lib.lab_id(source.directory)}: removed "
        + (", ".join(removed) if removed else "no containers"),
        soft_wrap=True,
    )


@lab.command()
@inventory_options
@json_option
def status(inventory: Path, vault_password_file: Path | None, as_json: bool) -> None:
    """Show the lab's id and each lab container and how to reach it."""
    source = make_source(inventory, vault_password_file)
    print_status(load_fleet(source), source, as_json=as_json)


def _shown(path: Path) -> Path:
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def ssh_command(state: lab_lib.LabState, host: str, directory: Path) -> str:
    port = state.ssh_ports.get(host, 22)
    return " ".join(
        [
            "ssh",
            *(["-p", str(port)] if port != 22 else []),
            "-i",
            shlex.quote(str(_shown(lab_lib.key_path(directory)))),
            "-o",
            shlex.quote(f"UserKnownHostsFile={_shown(lab_lib.known_hosts_path(directory))}"),
            "-o",
            "StrictHostKeyChecking=yes",
            f"{lab_lib.LAB_ADMIN}@{state.addresses[host]}",
        ]
    )


def print_status(fleet: Fleet, source: InventorySource, *, as_json: bool = False) -> None:
    lab_id, state, states = lab_lib.status(fleet, source)
    directory = lab_lib.lab_dir(source)
    rows: list[dict[str, Any]] = []
    for h in fleet.hosts:
        container = lab_lib.container_name(lab_id, h.name)
        known = state is not None and h.name in state.addresses
        rows.append(
            {
                "host": h.name,
                "kind": h.kind,
                "container": container,
                "address": state.addresses[h.name] if state and known else None,
                "state": states[h.name],
                "shell": f"podman exec -it {container} bash",
                "ssh": ssh_command(state, h.name, directory) if state and known else None,
            }
        )
    if as_json:
        summary = {
            "lab_id": lab_id,
            "inventory": str(source.directory.resolve()),
            "up": state is not None,
            "network": lab_lib.network_name(lab_id),
            "subnet": state.subnet if state else None,
            "connection": state.connection if state else None,
            "apt_proxy": state.apt_proxy if state else None,
            "xnat_standins": lab_lib.standin_urls(state.standin_ports) if state else {},
            "hosts": rows,
        }
        click.echo(json.dumps(summary, indent=2))
        return
    out = Console(highlight=False, soft_wrap=True)
    if state is None:
        out.print(
            f"lab {lab_id} of {source.directory} is not up (`xnat-fleet lab up -i {source.path}`)"
        )
    table = Table(title=f"lab {lab_id} of study {fleet.study.id}")
    for column in ("host", "kind", "container", "address", "state"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["host"], r["kind"], r["container"], r["address"] or "-", r["state"])
    out.print(table)
    if state is None:
        return
    out.print(
        f"network {state.network} ({state.subnet}); Ansible connects over "
        + (
            "SSH as the lab admin (sudo), host keys checked against "
            f"{_shown(lab_lib.known_hosts_path(directory))}"
            if state.connection == "ssh"
            else "podman exec (`lab up --connection podman`)"
        )
        + f"; apt cache: {state.apt_proxy or 'not used'}"
    )
    out.print(
        "[bold]stand-ins:[/bold] the lab runs the tests' stand-in web application and plugin jars "
        "in place of XNAT and its plugins (tests/fixtures; NOT XNAT), behind the real Tomcat, "
        "nginx, PostgreSQL and firewall roles; XNAT's REST API is the stand-in at "
        + ", ".join(f"{h} {u}" for h, u in lab_lib.standin_urls(state.standin_ports).items())
    )
    out.print("reach a host with a shell in its container, or over SSH as the lab admin:")
    for r in rows:
        out.print(f"  {r['host']:<14} {r['shell']}")
        if r["ssh"]:
            out.print(f"  {'':<14} {r['ssh']}")
