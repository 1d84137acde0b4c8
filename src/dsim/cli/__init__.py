"""The ``dsim`` command line: a thin shell over :mod:`dsim.api`.

Each command group lives in its own module under ``dsim.cli`` and registers itself on ``app``;
the modules are listed in ``COMMAND_MODULES``. Errors a user can act on (:class:`dsim.DsimError`)
print one line ``error: ...`` and exit 2, without a traceback (``DSIM_DEBUG=1`` shows it).
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(
    name="dsim",
    help=(
        "Which source dataset, or pretrained checkpoint, should your small medical-image dataset "
        "transfer from? `dsim rank --target chest` ranks candidate sources before you spend GPU "
        "hours; `dsim validate` checks the ranking with real fine-tuning."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

COMMAND_MODULES = [
    "dsim.cli.core",
    "dsim.cli.predictor",
    "dsim.cli.validate",
    "dsim.cli.results",
    "dsim.cli.reproduce",
    "dsim.cli.filters",
]


def _version(value: bool) -> None:
    if value:
        from dsim import __version__

        typer.echo(f"dsim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """dsim: rank transfer-learning sources for medical images."""


for _mod in COMMAND_MODULES:
    importlib.import_module(_mod)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turning dsim errors into one-line messages."""
    from dsim.errors import DsimError, one_line

    try:
        app(args=argv, prog_name="dsim", standalone_mode=False)
    except DsimError as exc:
        if os.environ.get("DSIM_DEBUG"):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(
            "interrupted: finished work is kept in the cache/results store; run again to resume",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # click usage errors and anything unexpected
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if os.environ.get("DSIM_DEBUG"):
            raise
        print(
            f"error: {one_line(exc)} (DSIM_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
