"""Exit codes and the errors the CLI reports as one line."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the ``xnat-fleet`` command."""

    OK = 0
    ERROR = 1  # an expected error (bad option, missing file, tool not installed)
    USAGE = 2  # click's own code for a usage error
    INVALID = 3  # the inventory failed validation; nothing was touched
    RUN_FAILED = 4  # a playbook ran and at least one host failed or was unreachable
    DRIFT = 5  # `xnat plan --detailed-exitcode`: XNAT differs from the inventory
    UNEXPECTED = 70  # a bug: traceback written to the debug log


class FleetError(Exception):
    """An expected error: the CLI prints its message as one red line."""

    exit_code: ExitCode = ExitCode.ERROR


class InventoryError(FleetError):
    """The inventory cannot be read at all (missing file, wrong vault password, bad YAML)."""

    exit_code = ExitCode.INVALID


class InventorySyntaxError(InventoryError):
    """YAML files of the inventory do not parse: one ``FILE:LINE:COLUMN: problem`` each."""

    def __init__(self, errors: list[str], summary: str) -> None:
        super().__init__("\n".join([*errors, summary]))
        self.errors = errors
