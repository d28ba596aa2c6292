"""slm-tui: train a tokenizer and a small transformer from scratch, then write stories with it."""

__version__ = "0.1.0"
