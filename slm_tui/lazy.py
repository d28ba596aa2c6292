"""Packages that load their heavy parts on first use (PEP 562 module `__getattr__`).

`generation` and `trainer` export names whose modules import torch; with `lazy_exports`
importing the package itself stays light (the TUI's widgets, `slm-train --help`), and
`from slm_tui.generation import generate` still works, loading the engine then.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: name -> the submodule that defines it,
    imported when the name is first asked for."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
