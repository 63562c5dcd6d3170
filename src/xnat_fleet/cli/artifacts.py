"""``xnat-fleet artifacts``: fetch and verify the pinned artifacts in the local store."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from xnat_fleet import artifacts as store_lib
from xnat_fleet.cli.options import inventory_options, json_option, make_source
from xnat_fleet.errors import ExitCode
from xnat_fleet.model.loader import load_fleet

store_option = click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Artifact store directory (default: ${store_lib.STORE_ENV}, the inventory's "
    "xnat-fleet.yml artifact_store, or ~/.cache/xnat-fleet/artifacts).",
)


@click.group()
def artifacts() -> None:
    """Pinned files no distribution ships (XNAT WAR, plugins, Tomcat, JDK)."""


@artifacts.command()
@inventory_options
@store_option
def fetch(inventory: Path, vault_password_file: Path | None, store: Path | None) -> None:
    """Download every pinned artifact into the store and verify its sha256 (resumable)."""
    source = make_source(inventory, vault_password_file)
    directory = store_lib.store_dir(source, store)
    wanted = store_lib.pins(load_fleet(source))
    err = Console(stderr=True, highlight=False)
    results = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=err, transient=True,
    ) as bar:  # fmt: skip
        for pin in wanted:
            task = bar.add_task(pin.filename, total=None)

            def update(_: store_lib.Pin, done: int, total: int | None, task: TaskID = task) -> None:
                bar.update(task, completed=done, total=total)

            results.append(store_lib.fetch(directory, pin, update))
            bar.remove_task(task)
    _report(directory, results, as_json=False)


@artifacts.command()
@inventory_options
@store_option
@json_option
def verify(
    inventory: Path, vault_password_file: Path | None, store: Path | None, as_json: bool
) -> None:
    """Check that the store holds every pinned artifact with its pinned sha256."""
    source = make_source(inventory, vault_password_file)
    directory = store_lib.store_dir(source, store)
    _report(
        directory, store_lib.verify(directory, store_lib.pins(load_fleet(source))), as_json=as_json
    )


def _report(directory: Path, results: list[store_lib.Status], *, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "store": str(directory),
                    "artifacts": [
                        {
                            "key": s.pin.key,
                            "file": s.pin.filename,
                            "version": s.pin.version,
                            "sha256": s.pin.sha256,
                            "state": s.state,
                            "hosts": list(s.pin.hosts),
                        }
                        for s in results
                    ],
                },
                indent=2,
            )
        )
    else:
        out = Console(highlight=False, soft_wrap=True)
        for s in results:
            mark = "[green]✓[/green]" if s.ok else "[red]✗[/red]"
            out.print(f"{mark} {s.pin.key:<22} {s.pin.filename:<45} {s.state}")
            if not s.ok:
                out.print(f"    {s.explain(directory)}")
        out.print(f"store: {directory}")
    if not all(s.ok for s in results):
        raise click.exceptions.Exit(int(ExitCode.ERROR))
