"""``xnat-fleet check``: validate an inventory without contacting any host."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from xnat_fleet.cli.options import inventory_options, json_option, make_source
from xnat_fleet.errors import ExitCode, InventoryError, InventorySyntaxError
from xnat_fleet.model.fleet import Problem
from xnat_fleet.model.loader import validate_inventory


@click.command()
@inventory_options
@json_option
def check(inventory: Path, vault_password_file: Path | None, as_json: bool) -> None:
    """Validate INVENTORY; list every problem, one line each (host: variable: problem)."""
    try:
        fleet, problems = validate_inventory(make_source(inventory, vault_password_file))
    except InventoryError as exc:
        if not as_json:
            raise
        # Unreadable (YAML syntax, vault): the same report, each line a problem of no host.
        lines = exc.errors if isinstance(exc, InventorySyntaxError) else str(exc).splitlines()
        problems = [Problem((), "", line) for line in lines]
        fleet = None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "valid": fleet is not None,
                    "problems": [
                        {"hosts": list(p.hosts), "variable": p.variable, "message": p.message}
                        for p in problems
                    ],
                    "hosts": [{"name": h.name, "kind": h.kind} for h in fleet.hosts]
                    if fleet
                    else [],
                },
                indent=2,
            )
        )
    else:
        out = Console(highlight=False, soft_wrap=True)
        for p in problems:
            out.print(f"[red]✗[/red] {p}")
        if fleet is not None:
            relays = ", ".join(r.name for r in fleet.relays)
            out.print(
                f"[green]✓[/green] {inventory}: study {fleet.study.id} is valid: central "
                f"{fleet.central.name}, {len(fleet.relays)} relays ({relays})"
            )
        else:
            out.print(f"{len(problems)} problem(s) in {inventory}; nothing was changed")
    if fleet is None:
        raise click.exceptions.Exit(int(ExitCode.INVALID))
