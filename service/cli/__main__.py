"""`python -m service.cli`: the same as the `discovery` command."""

from service.cli import app

app()
