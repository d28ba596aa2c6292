"""What machine a benchmark ran on, for its table title and JSON (figures differ by CPU)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model ("Intel(R) Xeon(R) Processor", "AMD EPYC 9R14 ..."), or the arch."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
