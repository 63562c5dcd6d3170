"""``xnat-fleet provision``: validate, then run playbooks/site.yml with per-host progress."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xnat_fleet import artifacts
from xnat_fleet import lab as lab_lib
from xnat_fleet.cli.lab import print_status
from xnat_fleet.cli.options import inventory_options, json_option, make_source
from xnat_fleet.errors import ExitCode
from xnat_fleet.model.loader import load_fleet_and_vars
from xnat_fleet.runner import Progress, RunResult, inventory_secrets, run_playbook

STYLE = {"changed": "yellow", "failed": "red", "unreachable": "red"}


@click.command()
@inventory_options
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@click.option("--check", is_flag=True, help="Dry run: report what would change.")
@click.option("--diff", is_flag=True, help="Show file differences.")
@click.option("--lab", is_flag=True, help="Target the lab containers (`xnat-fleet lab up`).")
@click.option(
    "--playbook", default="site.yml", show_default=True, help="Playbook under playbooks/."
)
@json_option
def provision(
    inventory: Path,
    vault_password_file: Path | None,
    limit: str | None,
    check: bool,
    diff: bool,
    lab: bool,
    playbook: str,
    as_json: bool,
) -> None:
    """Validate INVENTORY, then provision its hosts with the roles."""
    source = make_source(inventory, vault_password_file)
    err = Console(stderr=True, highlight=False)
    if lab:
        # The overlay carries the connection `lab up` recorded (SSH, or podman exec).
        state = lab_lib.require(source)
        source.overlays.append(lab_lib.overlay_path(source))
        if state is not None:
            err.print(
                f"lab {state.lab_id}: connection {state.connection}, "
                f"apt cache {state.apt_proxy or 'not used'}",
                soft_wrap=True,
            )
    fleet, inv = load_fleet_and_vars(source)  # nothing runs unless the inventory is valid
    if lab:
        store = lab_lib.lab_dir(source) / "store"  # stand-ins; the validation play checks them
    else:
        store = artifacts.store_dir(source)
        artifacts.require(store, artifacts.pins(fleet))  # before any host is touched
    with err.status("starting") as spinner:

        def show(p: Progress) -> None:
            if p.kind == "task":
                spinner.update(f"[bold]{escape(p.task)}[/bold]")
            elif p.kind in STYLE:
                detail = f": {p.message}" if p.message else ""
                err.print(
                    f"[{STYLE[p.kind]}]{p.kind:>11}[/] {escape(p.host)}: {escape(p.task + detail)}",
                    soft_wrap=True,
                )

        result = run_playbook(
            playbook,
            source,
            limit=limit,
            check=check,
            diff=diff,
            artifact_store=store,
            on_progress=show,
            secrets=inventory_secrets(inv.hostvars, source.vault_password()),
        )
    if result.failed_early:
        # No task ran, so there is no host to summarise: the output says why.
        report_early_failure(result, playbook, as_json=as_json)
        raise click.exceptions.Exit(int(ExitCode.RUN_FAILED))
    report(result, as_json=as_json)
    if lab and not as_json:
        print_status(fleet, source)
    if not result.success:
        raise click.exceptions.Exit(int(ExitCode.RUN_FAILED))


def report_early_failure(result: RunResult, playbook: str, *, as_json: bool) -> None:
    line = (
        f"{playbook} failed before its first task (ansible-runner status {result.status}, "
        f"rc {result.rc}): {result.cause}"
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "status": result.status,
                    "rc": result.rc,
                    "hosts": {},
                    "failures": [],
                    "error": line,
                    "output": result.output,
                },
                indent=2,
            )
        )
        return
    err = Console(stderr=True, highlight=False)
    if result.output:
        err.print("ansible-playbook output (last lines, secrets scrubbed):")
        for text in result.output:
            err.print(f"  {escape(text)}", soft_wrap=True)
    err.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)


def report(result: RunResult, *, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "status": result.status,
                    "rc": result.rc,
                    "hosts": {h: vars(s) for h, s in sorted(result.hosts.items())},
                    "failures": result.failures,
                },
                indent=2,
            )
        )
        return
    table = Table(title=f"provision: {result.status}")
    for column in ("host", "ok", "changed", "failed", "unreachable", "skipped"):
        table.add_column(column, justify="left" if column == "host" else "right")
    for host, s in sorted(result.hosts.items()):
        table.add_row(
            host, str(s.ok), str(s.changed), str(s.failed), str(s.unreachable), str(s.skipped)
        )
    Console().print(table)
    for line in result.failures:
        Console(stderr=True).print(f"[red]failed:[/red] {escape(line)}", soft_wrap=True)
