"""``xnat-fleet xnat plan|apply`` and ``xnat-fleet xsync status|rekey|unblock``."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from xnat_fleet import lab as lab_lib
from xnat_fleet.cli.options import inventory_options, json_option, make_source
from xnat_fleet.errors import ExitCode, FleetError
from xnat_fleet.model.loader import InventorySource
from xnat_fleet.xnat.changes import Change
from xnat_fleet.xnat.engine import Engine, HostPlan, open_study

F = TypeVar("F", bound=Callable[..., Any])
STYLE = {"create": "green", "update": "yellow", "delete": "red", "run": "cyan", "note": "magenta"}


def target_options(func: F) -> F:
    func = click.option(
        "--overlay",
        "overlays",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Inventory file layered over INVENTORY (like a second `ansible -i`); repeatable.",
    )(func)
    func = click.option(
        "--lab", is_flag=True, help="The lab's XNAT REST stand-ins (`xnat-fleet lab up`)."
    )(func)
    func = click.option(
        "--limit", "-l", help="Only these hosts (comma-separated inventory names)."
    )(func)
    return inventory_options(func)


def open_engine(
    inventory: Path,
    vault_password_file: Path | None,
    lab: bool,
    limit: str | None,
    prune: bool = False,
    overlays: tuple[Path, ...] = (),
) -> tuple[Engine, list[str]]:
    source = make_source(inventory, vault_password_file)
    source.overlays.extend(overlays)
    if lab:
        _add_lab_overlay(source)
    engine, names = open_study(source, prune=prune)  # names: central first
    if limit:
        wanted = [n.strip() for n in limit.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise FleetError(f"--limit: not hosts of {inventory}: {', '.join(unknown)}")
        names = [n for n in names if n in wanted]
    return engine, names


def _add_lab_overlay(source: InventorySource) -> None:
    overlay = lab_lib.overlay_path(source)
    if not overlay.is_file():
        raise FleetError(
            f"no lab for {source.path}: run `xnat-fleet lab up -i {source.path}` first"
        )
    source.overlays.append(overlay)


def _print_plan(out: Console, hp: HostPlan) -> None:
    plan = hp.plan
    label = f" [bold red]\\[{escape(', '.join(plan.labels))}][/bold red]" if plan.labels else ""
    head = f"[bold]{escape(plan.host)}[/bold] ({escape(plan.url)}){label}"
    if not plan.changes:
        out.print(f"{head}: [green]no changes[/green]")
        return
    drift = len(plan.drift)
    out.print(f"{head}: {drift} change(s), {len(plan.changes) - drift} note(s)")
    for change in plan.changes:
        style = STYLE[change.action]
        for i, line in enumerate(change.render().splitlines()):
            out.print(f"[{style}]{escape(line)}[/{style}]" if i == 0 else escape(line))


@click.group()
def xnat() -> None:
    """Configure what lives inside XNAT (site, users, projects, receivers, Xsync...) as code."""


@xnat.command()
@target_options
@click.option("--prune", is_flag=True, help="Also plan deletions of what the inventory dropped.")
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help=f"Exit {int(ExitCode.DRIFT)} when there are changes (drift), 0 when there are none.",
)
@json_option
def plan(
    inventory: Path,
    vault_password_file: Path | None,
    lab: bool,
    limit: str | None,
    overlays: tuple[Path, ...],
    prune: bool,
    detailed_exitcode: bool,
    as_json: bool,
) -> None:
    """Show what `apply` would change on each host (nothing is written)."""
    engine, names = open_engine(inventory, vault_password_file, lab, limit, prune, overlays)
    out = Console(highlight=False, soft_wrap=True)
    plans = []
    try:
        for name in names:
            hp = engine.plan(name)
            plans.append(hp)
            if not as_json:
                _print_plan(out, hp)
    finally:
        engine.close()
    if as_json:
        click.echo(json.dumps([hp.plan.to_dict() for hp in plans], indent=2, default=str))
    if detailed_exitcode and any(hp.plan.drift for hp in plans):
        raise click.exceptions.Exit(int(ExitCode.DRIFT))


@xnat.command()
@target_options
@click.option("--prune", is_flag=True, help="Also delete what the inventory no longer lists.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before applying.")
def apply(
    inventory: Path,
    vault_password_file: Path | None,
    lab: bool,
    limit: str | None,
    overlays: tuple[Path, ...],
    prune: bool,
    yes: bool,
) -> None:
    """Show the plan, ask, apply it host by host, read back, and print what changed."""
    engine, names = open_engine(inventory, vault_password_file, lab, limit, prune, overlays)
    out = Console(highlight=False, soft_wrap=True)
    try:
        for name in names:
            hp = engine.plan(name)
            _print_plan(out, hp)
            if not hp.plan.drift:
                continue
            if not yes and not click.confirm(f"Apply these changes to {name}?", default=False):
                out.print(f"{name}: skipped")
                continue

            def show(change: Change) -> None:
                out.print(
                    f"  [green]done[/green] {change.area}: {change.action} {escape(change.target)}"
                )

            done = engine.apply(hp, on_change=show)
            out.print(f"[bold]{escape(name)}[/bold]: {len(done)} change(s) applied and read back")
    finally:
        engine.close()


@click.group()
def xsync() -> None:
    """Xsync on the relays: pairing status, re-keying credentials, clearing stuck blocks."""


def _relays(engine: Engine, names: list[str]) -> list[str]:
    return [n for n in names if engine.desired[n].pairings]


def _ops(
    inventory: Path,
    vault_password_file: Path | None,
    lab: bool,
    limit: str | None,
    overlays: tuple[Path, ...],
) -> tuple[Engine, list[str]]:
    engine, names = open_engine(inventory, vault_password_file, lab, limit, False, overlays)
    relays = _relays(engine, names)
    if not relays:
        engine.close()
        raise FleetError("no relay with Xsync links (fleet_sync) among the selected hosts")
    return engine, relays


def _xsync_ops() -> Any:
    from xnat_fleet.xnat import xsync_ops  # imported when used: `xnat-fleet --help` stays fast

    return xsync_ops


@xsync.command()
@target_options
@json_option
def status(
    inventory: Path,
    vault_password_file: Path | None,
    lab: bool,
    limit: str | None,
    overlays: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Per relay project: central project, credentials check, last sync and its status."""
    engine, relays = _ops(inventory, vault_password_file, lab, limit, overlays)
    rows: list[dict[str, Any]] = []
    try:
        for name in relays:
            ctx = engine.context(name)
            for row in engine.guard(name, partial(_xsync_ops().status, ctx)):
                rows.append({"relay": name, **row})
    finally:
        engine.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    out = Console(highlight=False, soft_wrap=True)
    for row in rows:
        out.print(" ".join(f"{k}={escape(str(v))}" for k, v in row.items()))


@xsync.command()
@target_options
@click.option("--project", "projects", multiple=True, help="Only these relay projects.")
def rekey(
    inventory: Path,
    vault_password_file: Path | None,
    lab: bool,
    limit: str | None,
    overlays: tuple[Path, ...],
    projects: tuple[str, ...],
) -> None:
    """Issue fresh central alias tokens and save them on the relays (after shipping)."""
    engine, relays = _ops(inventory, vault_password_file, lab, limit, overlays)
    out = Console(highlight=False, soft_wrap=True)
    try:
        for name in relays:
            ctx = engine.context(name)
            for line in engine.guard(
                name, partial(_xsync_ops().rekey, ctx, list(projects) or None)
            ):
                out.print(f"{escape(name)}: {escape(engine.scrub(line))}")
    finally:
        engine.close()


@xsync.command()
@target_options
@click.argument("project")
def unblock(
    inventory: Path,
    vault_password_file: Path | None,
    lab: bool,
    limit: str | None,
    overlays: tuple[Path, ...],
    project: str,
) -> None:
    """Clear a stuck Xsync block on PROJECT of the selected relay(s)."""
    engine, relays = _ops(inventory, vault_password_file, lab, limit, overlays)
    out = Console(highlight=False, soft_wrap=True)
    try:
        for name in relays:
            if project not in {p.link.project for p in engine.desired[name].pairings}:
                continue
            ctx = engine.context(name)
            message = engine.guard(name, partial(_xsync_ops().unblock, ctx, project))
            out.print(f"{escape(name)}: {escape(engine.scrub(str(message)))}")
    finally:
        engine.close()
