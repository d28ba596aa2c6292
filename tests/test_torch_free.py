"""The modules promised torch-free stay so: each is imported alone in a fresh interpreter and
torch must not be loaded after it. The TUI, the checkpoint picker and cards, the server's
client, `slm-generate --server` and the metrics reader import them without paying for torch
(seconds and hundreds of MB).

The list is the import-linter contract in pyproject.toml (`make lint` checks the import graph
statically, module-level imports only); this is the proof in a real interpreter, where lazy
package exports and anything imported at run time count too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own TOML reader
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent

# What the rest of the project relies on being light (the contract may name more).
PROMISED = {
    "slm_tui.checkpoint.format",
    "slm_tui.checkpoint.records",
    "slm_tui.handle",
    "slm_tui.generation",
    "slm_tui.generation.settings",
    "slm_tui.generation.events",
    "slm_tui.generation.remote",
    "slm_tui.generation.prompts",
    "slm_tui.briefs",
    "slm_tui.briefing",
    "slm_tui.trainer.pace",
    "slm_tui.trainer.report",
    "slm_tui.tui.app",
}

# Imports `module` and prints whether torch was loaded; the first import of torch prints
# the stack that asked for it to stderr, so a failure names the culprit.
PROBE = """
import sys, traceback

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            stack = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith("<")]
            sys.stderr.write("torch imported from:\\n" + "".join(traceback.format_list(stack)))
        return None

sys.meta_path.insert(0, Watch())
import {module}
print("torch" in sys.modules)
"""


def contract_modules() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract["type"] == "forbidden" and contract["forbidden_modules"] == ["torch"]:
            return list(contract["source_modules"])
    raise AssertionError("pyproject.toml has no import-linter contract forbidding torch")


TORCH_FREE = contract_modules()


def loads_torch(module: str) -> tuple[bool, str]:
    code = PROBE.format(module=module)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == "True", out.stderr


def test_the_contract_names_every_promised_module():
    assert not PROMISED - set(TORCH_FREE), sorted(PROMISED - set(TORCH_FREE))


@pytest.mark.parametrize("module", TORCH_FREE)
def test_importing_the_module_does_not_load_torch(module):
    loaded, stderr = loads_torch(module)
    assert not loaded, stderr


def test_the_probe_sees_torch_when_a_module_loads_it():
    # The engine needs torch: the probe must say so (and name who imported it), or the
    # tests above would pass whatever the modules import.
    loaded, stderr = loads_torch("slm_tui.generation.engine")
    assert loaded
    assert "torch imported from" in stderr and "slm_tui/generation/engine.py" in stderr
