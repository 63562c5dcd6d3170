"""The ``xnat-fleet`` command: thin click groups over the library."""

from __future__ import annotations

import logging
import sys
import tempfile
import traceback
from importlib.metadata import version
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from xnat_fleet.cli import artifacts, check, fleet, image, lab, provision, xnat
from xnat_fleet.errors import ExitCode, FleetError

DEBUG_LOG = Path(tempfile.gettempdir()) / "xnat-fleet-debug.log"
err_console = Console(stderr=True, highlight=False)


@click.group(
    context_settings={"auto_envvar_prefix": "XNAT_FLEET", "help_option_names": ["-h", "--help"]}
)
@click.version_option(version("xnat-fleet"), "--version", prog_name="xnat-fleet")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Provision and operate a multi-site XNAT study: one central XNAT and its DICOM relays."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


cli.add_command(artifacts.artifacts)
cli.add_command(check.check)
cli.add_command(provision.provision)
cli.add_command(lab.lab)
cli.add_command(image.image)
cli.add_command(fleet.fleet)
cli.add_command(xnat.xnat)
cli.add_command(xnat.xsync)


def main() -> None:
    """Entry point: expected errors are one red line, unexpected ones a traceback in a log."""
    try:
        # Without standalone mode click returns the code of an Exit instead of exiting.
        rc = cli.main(standalone_mode=False)
    except FleetError as exc:
        for line in str(exc).splitlines():
            err_console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
        sys.exit(int(exc.exit_code))
    except click.exceptions.Abort:
        err_console.print("[red]aborted[/red]")
        sys.exit(int(ExitCode.ERROR))
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception:
        DEBUG_LOG.write_text(traceback.format_exc())
        traceback.print_exc()
        err_console.print(f"[red]unexpected error[/red]; traceback written to {DEBUG_LOG}")
        sys.exit(int(ExitCode.UNEXPECTED))
    sys.exit(rc if isinstance(rc, int) else int(ExitCode.OK))
