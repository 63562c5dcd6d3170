"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from xnat_fleet.model.loader import InventorySource

F = TypeVar("F", bound=Callable[..., Any])


def inventory_options(func: F) -> F:
    """``-i INVENTORY`` and ``--vault-password-file``; the command receives ``source``."""
    func = click.option(
        "--vault-password-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Vault password file or script (default: the inventory's xnat-fleet.yml).",
    )(func)
    func = click.option(
        "-i",
        "--inventory",
        required=True,
        type=click.Path(exists=True, path_type=Path),
        help="Inventory directory (with hosts.yml) or inventory file.",
    )(func)
    return func


def make_source(inventory: Path, vault_password_file: Path | None) -> InventorySource:
    return InventorySource(path=inventory, vault_password_file=vault_password_file)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
