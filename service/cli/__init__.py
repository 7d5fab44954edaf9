"""`discovery`: the command line. Every command prints one readable line and exits non-zero on bad input.

`local` holds the commands that work on this machine, `remote` those that talk to a server, `targets`
what can be discovered; `common` what they share.
"""

from __future__ import annotations

from service.cli.local import app
from service.cli.remote import candidates_app, runs_app
from service.cli.targets import targets_app

app.add_typer(runs_app, name="runs")
app.add_typer(candidates_app, name="candidates")
app.add_typer(targets_app, name="targets")

__all__ = ["app"]
