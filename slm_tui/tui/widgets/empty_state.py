"""Shown instead of the story when no checkpoint exists: the exact commands that make one."""

from __future__ import annotations

from pathlib import Path

from textual.content import Content
from textual.widgets import Static


def empty_state_content(checkpoints_dir: Path, scanning: bool = False) -> Content:
    if scanning:
        return Content.styled("Looking for checkpoints…", "$text-muted")
    cmd = "bold $text-accent"
    return Content.assemble(
        ("No checkpoint yet. ", "bold"),
        "Train a tiny model on a text file of stories (CPU, minutes):\n\n",
        ("  slm-train tokenizer --data-files stories.txt --output tokenizers/tiny\n", cmd),
        ("  slm-train model --config tiny --tokenizer tokenizers/tiny \\\n", cmd),
        ("      --data-files stories.txt\n\n", cmd),
        "or on TinyStories, downloaded from the Hugging Face hub:\n\n",
        ("  slm-train model --config tiny\n\n", cmd),
        (
            f"Watching {checkpoints_dir}/ — a checkpoint saved there opens by itself.\n",
            "$text-muted",
        ),
        ("Elsewhere:  slm-tui --checkpoints-dir DIR  or  slm-tui --checkpoint DIR", "$text-muted"),
    )


def problem_content(problem: str) -> Content:
    """What stands in the way of listing models (a server that cannot be reached)."""
    return Content.assemble(
        ("No model yet: ", "bold"),
        (problem, "$text-error"),
        ("\n\nAsking again every 2 seconds; the first model it lists opens by itself.",
         "$text-muted"),
    )  # fmt: skip


class EmptyState(Static):
    def __init__(self, checkpoints_dir: Path, **kwargs) -> None:
        super().__init__(
            empty_state_content(checkpoints_dir, scanning=True), markup=False, **kwargs
        )
        self.checkpoints_dir = checkpoints_dir
        self.problem: str | None = None

    def set_scanning(self, scanning: bool) -> None:
        if self.problem is not None and not scanning:
            self.update(problem_content(self.problem))
            return
        self.update(empty_state_content(self.checkpoints_dir, scanning))

    def set_problem(self, problem: str | None) -> None:
        self.problem = problem
        if problem is not None:
            self.update(problem_content(problem))
