"""`slm-train`: tokenizer, data, model, eval, export and import commands (one typer app).

Each command lives in the module named after it (`train_tokenizer`, `train_data`,
`train_model`, `train_eval`, `train_export`, `train_import`), one per pipeline stage; this
module only assembles them, so `CliRunner().invoke(app, [...])` sees every command. None of
them imports torch (or transformers) before its body runs: `slm-train --help` and
`slm-train <command> --help` stay quick.
"""

from __future__ import annotations

import typer

from slm_tui.cli import (
    train_data,
    train_eval,
    train_export,
    train_import,
    train_model,
    train_tokenizer,
)
from slm_tui.cli.common import Group

app = typer.Typer(
    name="slm-train",
    cls=Group,
    help="Train a tokenizer, write token shards, train a model, evaluate, export and import "
    "checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("tokenizer")(train_tokenizer.tokenizer)
app.command("data")(train_data.data)
app.command("model")(train_model.model)
app.command("eval")(train_eval.evaluate)
app.command("export")(train_export.export)
app.command("import")(train_import.import_checkpoint)


def main() -> None:
    app()


if __name__ == "__main__":  # python -m slm_tui.cli.train (how slm-tui starts a run)
    main()
