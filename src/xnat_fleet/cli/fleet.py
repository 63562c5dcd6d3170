"""``xnat-fleet fleet``: operations on the shipped relays (docs/images.md, "Registry")."""

from __future__ import annotations

from pathlib import Path

import click

from xnat_fleet.cli.options import inventory_options, make_source
from xnat_fleet.image import registry as registry_lib
from xnat_fleet.model.loader import load_fleet_and_vars


@click.group()
def fleet() -> None:
    """The shipped relays: trusted host keys."""


@fleet.command("known-hosts")
@inventory_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the file here (default: standard output).",
)
def known_hosts(inventory: Path, vault_password_file: Path | None, output: Path | None) -> None:
    """An OpenSSH known_hosts file of every relay's registered host keys (the newest record per
    relay), for `ssh -o UserKnownHostsFile=FILE -o StrictHostKeyChecking=yes` and Ansible."""
    source = make_source(inventory, vault_password_file)
    fleet_model, inv = load_fleet_and_vars(source)
    registry = registry_lib.load(registry_lib.path_for(source.directory))
    addresses = {
        r.name: (str(inv.hostvars[r.name].get("ansible_host") or r.name), r.config.fleet_ssh_port)
        for r in fleet_model.relays
    }
    text = registry_lib.known_hosts(registry, addresses)
    missing = sorted(set(addresses) - set(registry.current()))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        output.chmod(0o644)
    if missing:
        click.echo(f"no registered disk (so no trusted key) for: {', '.join(missing)}", err=True)
