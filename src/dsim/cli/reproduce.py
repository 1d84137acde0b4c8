"""``dsim reproduce [NAME]``: recompute a published analysis from the results a plugin ships."""

from __future__ import annotations

from typing import Any, Optional

import typer

from . import app
from ._util import console, print_json


@app.command("reproduce")
def reproduce(
    name: Optional[str] = typer.Argument(
        None, help="The analysis to reproduce (without it: list them, e.g. cats-scans, juodelyte)."
    ),
    out: Optional[str] = typer.Option(
        None, "--out", "-o", help="Folder for the PNG figures (created). No figures without it."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON."),
) -> None:
    """Recompute a published analysis from the results shipped with dsim (or a plugin) and
    compare it with the paper's numbers: tables, a few lines, and figures with --out.

    Example: `dsim reproduce juodelyte --out figures/`; `dsim reproduce` lists what can be
    reproduced.
    """
    from dsim.evaluation.reproduce import reproduce as _reproduce
    from dsim.evaluation.reproduce import reproductions

    if name is None:
        reps = reproductions()
        if as_json:
            print_json(
                [{"name": r.name, "title": r.title, "description": r.description} for r in reps.values()]
            )
            return
        con = console()
        if not reps:
            con.print("no reproductions registered (are the published plugins disabled?)")
            return
        for r in reps.values():
            con.print(f"[bold]{r.name}[/bold]  {r.title}" + (f"\n  {r.description}" if r.description else ""))
        return
    report = _reproduce(name, out)
    if as_json:
        print_json(report)
        return
    render(report)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3f}"
    return str(v)


def render(report: dict[str, Any]) -> None:
    """Print a report's ``tables`` (``{"title", "columns", "rows"}``), ``lines`` and ``figures``."""
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 160)
    for tab in report.get("tables") or ():
        table = Table(title=escape(str(tab.get("title", ""))), title_justify="left")
        rows = tab.get("rows") or []
        for i, col in enumerate(tab.get("columns") or []):
            numeric = rows and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
            table.add_column(escape(str(col)), justify="right" if numeric else "left")
        for r in rows:
            table.add_row(*(escape(_cell(v)) for v in r))
        con.print(table)
    for line in report.get("lines") or ():
        con.print(escape(str(line)), highlight=False)
    for f in report.get("figures") or ():
        con.print(f"wrote {escape(str(f))}", highlight=False)
