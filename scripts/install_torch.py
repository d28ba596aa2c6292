"""Install PyTorch into the current interpreter before the rest of the dependencies.

Why: a bare `torch` requirement resolves to the newest CUDA build (several GB of CUDA
wheels) even on a machine with no GPU. On such a machine we install a CPU build first;
the project's own `torch>=2.4` requirement is then already satisfied, so pip adds nothing.
Nothing is pinned: the CPU build is whatever version pip can see.

Order of attempts on a machine without an NVIDIA GPU:
  1. a CPU wheel on pip's configured find-links (found with `pip download --no-index`),
  2. PyTorch's CPU wheel index,
  3. nothing: the regular install then resolves `torch` as usual.
With an NVIDIA GPU (nvidia-smi works) this script does nothing.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def _pip(*args: str) -> bool:
    cmd = [sys.executable, "-m", "pip", "install", "-q", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode == 0


def _has_nvidia_gpu() -> bool:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    return subprocess.run([exe, "-L"], capture_output=True).returncode == 0


def main() -> int:
    if importlib.util.find_spec("torch") is not None:
        print("torch already installed; leaving it as it is")
        return 0
    if _has_nvidia_gpu():
        print("NVIDIA GPU found: the default (CUDA) torch build will be installed")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        # Only the find-links are searched (--no-index); torch's own dependencies then come
        # from the regular index when the wheel file is installed.
        found = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-index",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                tmp,
                "torch",
            ],
            capture_output=True,
        )
        wheels = sorted(Path(tmp).glob("torch-*.whl"))
        if found.returncode == 0 and wheels and "+cpu" in wheels[0].name and _pip(str(wheels[0])):
            print(f"installed {wheels[0].name} from pip's find-links")
            return 0
    if _pip(
        "--retries",
        "0",
        "--timeout",
        "15",
        "--index-url",
        "https://download.pytorch.org/whl/cpu",
        "torch",
    ):
        print("installed the CPU build of torch from PyTorch's CPU index")
        return 0
    print("no CPU build of torch found; the regular install will choose one")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
