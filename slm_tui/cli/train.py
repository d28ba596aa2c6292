"""`slm-train`: tokenizer, data, model and eval commands (one typer app).

The command bodies live beside this file, one module per pipeline stage; this module only
assembles them, so `CliRunner().invoke(app, [...])` sees every command.
"""

from __future__ import annotations

import typer

from slm_tui.cli import train_data, train_export, train_model
from slm_tui.cli.common import Group

app = typer.Typer(
    name="slm-train",
    cls=Group,
    help="Train a tokenizer, write token shards, train a model, evaluate a checkpoint.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("tokenizer")(train_data.tokenizer)
app.command("data")(train_data.data)
app.command("model")(train_model.model)
app.command("eval")(train_model.evaluate)
app.command("export")(train_export.export)


def main() -> None:
    app()
