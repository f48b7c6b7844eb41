"""Install each board's MicroPython stubs into its own directory, .venv/stubs/<board>.

The boards' stub packages all provide `machine`, `bluetooth`, `time`..., so they cannot share site-packages.
The requirements are the `stubs-<board>` extras of pyproject.toml.
"""

import subprocess
import sys
import tomllib
from pathlib import Path

root = Path(__file__).resolve().parent.parent
extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
for name, reqs in extras.items():
    if not name.startswith("stubs-"):
        continue
    target = Path(sys.prefix) / "stubs" / name.removeprefix("stubs-")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--target", str(target), *reqs],
                   check=True)
    print(f"stubs for {name.removeprefix('stubs-')}: {target}")
