"""The ``dsim`` command line: a thin shell over the Python API (:mod:`dsim`).

Each command group lives in its own module under ``dsim.cli`` and registers itself on ``app``;
the modules are listed in ``COMMAND_MODULES``. Plugins add theirs through the
``dsim_register_commands`` hook, called only when the command line needs them. Errors a user can act on (:class:`dsim.DsimError`)
print one line ``error: ...`` and exit 2, without a traceback (``DSIM_DEBUG=1`` shows it).
"""

from __future__ import annotations

import importlib
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

#: dsim's own commands and groups; what follows them on ``app`` the plugins added
_OWN = (len(app.registered_commands), len(app.registered_groups))
_added_for: tuple = ()


def add_plugin_commands() -> None:
    """Let the plugins add their commands to ``app`` (``dsim_register_commands``): once per set
    of registered plugins (a plugin registered in-process since adds its own)."""
    global _added_for
    from dsim.kernel.plugins import get_plugin_manager

    pm = get_plugin_manager()
    key = (id(pm), tuple(sorted(str(name) for name, _p in pm.list_name_plugin())))
    if key == _added_for:
        return
    del app.registered_commands[_OWN[0] :], app.registered_groups[_OWN[1] :]
    _added_for = key
    pm.hook.dsim_register_commands(app=app)


def _needs_plugin_commands(args: list[str]) -> bool:
    """Whether ``args`` may name or list a plugin's command: the overview (``dsim``, ``dsim
    --help``) or a command dsim does not have itself. ``dsim --version`` and dsim's own commands
    do not load the plugins to ask."""
    first = next((a for a in args if not a.startswith("-")), None)
    if first is None:
        return "--version" not in args
    own = {c.name or c.callback.__name__ for c in app.registered_commands[: _OWN[0]]}
    own |= {g.name for g in app.registered_groups[: _OWN[1]]}
    return first not in own


def _overview(args: list[str]) -> bool:
    """``dsim`` or ``dsim --help``: the list of commands, nothing run."""
    return all(a.startswith("-") for a in args)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turning dsim errors into one-line messages."""
    from dsim.kernel.environment import env_flag
    from dsim.kernel.errors import DsimError, one_line

    try:
        args = sys.argv[1:] if argv is None else list(argv)
        if _needs_plugin_commands(args):
            from dsim.kernel.plugins import add_builtin_commands

            if not (_overview(args) and add_builtin_commands(app)):
                add_plugin_commands()
        rc = app(args=argv, prog_name="dsim", standalone_mode=False)
        if isinstance(rc, int) and rc:  # a command's typer.Exit(code): click returns the code
            return rc
    except DsimError as exc:
        if env_flag("DSIM_DEBUG"):
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

        # typer >= 0.26 carries its own click (typer._click): its usage errors are TyperExceptions
        usage = (click.exceptions.ClickException, getattr(typer, "TyperException", click.ClickException))
        if isinstance(exc, usage) and hasattr(exc, "show"):
            exc.show()
            return exc.exit_code
        if env_flag("DSIM_DEBUG"):
            raise
        print(
            f"error: {one_line(exc)} (DSIM_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
