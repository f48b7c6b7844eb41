# The virtual probe: boots the unchanged firmware on the MicroPython unix port with emulated chips.
#
#   micropython vprobe.py SESSION_JSON                          run the session to its end
#   micropython -i vprobe.py SESSION_JSON --console BOOT_JSON   one boot of the serial console's device
#
# SESSION_JSON (written by needletrack.sim.runner) names the sensor data files and the IMU rate they were written
# at ("imu_odr_mhz", the chip ODR the configured output rate needs), the device's flash directory, the session
# length, the clock mode, the fault schedule and the device clock at power-on ("clock_start_us", 0 unless a
# test wants the 30-bit tick to wrap soon). The flash directory holds the firmware exactly as flashed onto a
# board; it is mounted at "/" and the firmware's main.py runs from it as on power-up.
#
# Faults ("faults": [start us, end us, kind, sensor(, stray field [x, y, z] nT)], scenario time):
#   unplug       the chip leaves the bus; plugged back, it powers on unconfigured
#   i2c_errors   every transaction to it fails with EIO
#   stuck        its data stop changing (the source holds)
#   saturate     the Hall field beyond every range of the chip
#   brownout     its supply dips: it neither answers nor converts, then runs its power-on reset where it sits
#                (TMAG5273: registers at defaults, POR flag set; LSM6DSOX: powered down, FIFO off); a dip of
#                zero length is a reset that no bus transaction sees
#   stray_field  a field added to what the Hall sensor measures (a magnet or steel near the probe)
#
# Run mode ends the session (SystemExit from the board clock) when the virtual time reaches its duration.
# Scenario time is device time less clock_start_us.
#
# Console mode (needletrack.sim.console) is a device on a serial line: it never ends by itself, its clock is
# real time, and the scenario repeats (sensor feeds and faults restart every duration_us of scenario time
# while the device clock runs on), so the device keeps showing motion for as long as it is up. BOOT_JSON says
# how this boot starts:
#   boot        "main": boot.py then main.py, as on power-up or a soft reboot from the friendly REPL;
#               "raw": boot.py only, as after a soft reboot from the raw REPL
#   cause       machine.reset_cause() for this boot
#   uptime_us   time since power-on at this boot: 0 after power-up or a hard reset, running on across soft
#               reboots; the device clock reads clock_start_us + uptime_us
#   world_us    scenario time at this boot (the world goes on while the device reboots)
#   provision   write the scenario's configuration and calibration first (a factory-fresh flash)
#   state       a host file where a hard reset (machine.reset(), the watchdog) leaves "reset <cause>"
# The process ends at every reset; the console starts the next boot. With -i, MicroPython's REPL takes over
# when main.py returns (Ctrl-C). Private escape sequences on stdout, which the console strips, tell it when
# the board is up (input may reach the firmware), when the REPL is about to start, and when this boot is over.
import gc
import json
import sys

import vclock
import vboard
import machine  # noqa: F401 - the emulated module, loaded before the flash filesystem hides this directory
import time  # noqa: F401 - likewise
import flashfs
from feed import IMU_ODR_MHZ, HallSource, ImuSource
from lsm6dsox_emu import LSM6DSOXEmu
from tmag5273_emu import TMAG5273Emu

BUS = 0
SENSORS = {"imu": 0x6A, "hall_a": 0x35, "hall_b": 0x22}
MARK_BOOTED = "\x1b]vprobe;booted\x07"
MARK_REPL = "\x1b]vprobe;repl\x07"
MARK_EXIT = "\x1b]vprobe;exit\x07"


vprobe_load = [None]

_OFF = 0
_ON = 1
_PULSE = 2  # a zero-length brownout: off and on again at one instant


class Schedule:
    # Faults and the end of the session, fired from the board clock so they happen at exact virtual times.
    # Scenario time is device time less start_us. With loop, the schedule follows scenario time (device time +
    # offset_us) modulo the duration instead, and never ends the session.
    def __init__(self, session, devices, sources, loop=False, offset_us=0, start_us=0):
        self.end_us = session["duration_us"]
        self.devices = devices
        self.sources = sources
        self.loop = loop and self.end_us > 0
        self.offset_us = offset_us
        self.start_us = start_us
        self.cycle = -1
        events = []
        for fault in session.get("faults", []):
            t0, t1, kind, sensor = fault[0], fault[1], fault[2], fault[3]
            arg = fault[4] if len(fault) > 4 else None
            if kind == "brownout" and t1 <= t0:
                events.append((t0, _PULSE, kind, sensor, arg))
                continue
            events.append((t0, _ON, kind, sensor, arg))
            events.append((t1, _OFF, kind, sensor, arg))
        events.sort(key=lambda e: (e[0], e[1]))
        self.events = events
        self.i = 0

    def clock(self):
        now = vclock.now_us()
        if self.loop:
            world = now + self.offset_us
            cycle = world // self.end_us
            if cycle != self.cycle:
                if self.cycle >= 0:
                    self._fire_until(world)  # what is left of the cycle that ended: faults switch off
                self.cycle = cycle
                self.i = 0
            self._fire_until(world - cycle * self.end_us)
            return now
        self._fire_until(now - self.start_us)
        if now - self.start_us >= self.end_us:
            raise SystemExit(0)
        return now

    def _fire_until(self, t):
        while self.i < len(self.events) and self.events[self.i][0] <= t:
            self._apply(*self.events[self.i][1:])
            self.i += 1

    def _apply(self, on, kind, sensor, arg):
        addr = SENSORS[sensor]
        bus = vboard.bus(BUS)
        if kind == "unplug" or kind == "brownout":
            # Unpowered, the chip neither answers nor converts; powered again, it starts from its reset state.
            if on != _OFF:
                vboard.detach(BUS, addr)
            if on != _ON:
                vboard.attach(BUS, self.devices[sensor], addr)
        elif kind == "i2c_errors":
            if on:
                bus.inject_error(addr, 5, -1)  # EIO on every transaction
            else:
                bus.clear_errors(addr)
        elif kind == "stuck":
            self.sources[sensor].hold = on
        elif kind == "saturate":
            self.sources[sensor].saturate = on
        elif kind == "stray_field":
            stray = self.devices[sensor].stray
            for i in range(3):
                stray[i] = arg[i] if on else 0
        print("# fault %s %s %s" % (kind, sensor, ("off", "on", "pulse")[on]))


class Shifted:
    # A sensor feed seen at scenario time when the device clock started at start_us rather than 0.
    def __init__(self, source, start_us):
        self.source = source
        self.start_us = start_us

    def __call__(self, t_us, out):
        self.source(t_us - self.start_us, out)


class Looped:
    # A sensor feed seen through scenario time that repeats: the emulators ask at device time t_us.
    def __init__(self, source, period_us, offset_us):
        self.source = source
        self.period_us = period_us
        self.offset_us = offset_us

    def __call__(self, t_us, out):
        self.source((t_us + self.offset_us) % self.period_us, out)


def provision(session):
    # What a factory or a clinician's setup would have stored on the device, through the firmware's own store
    # (in the slot /nt_app names, when the firmware was deployed as `needletrack flash` deploys it).
    try:
        with open("/nt_app") as f:
            slot = "/" + f.read().strip()
    except OSError:
        slot = None
    if slot is None:
        _provision(session)
        return
    before = list(sys.modules)
    sys.path.insert(0, slot)
    try:
        _provision(session)
    finally:
        sys.path.remove(slot)
        for name in list(sys.modules):  # boot.py decides again where the firmware is
            if name not in before:
                del sys.modules[name]


def _provision(session):
    try:
        import store
    except ImportError:  # another firmware (--firmware) that keeps no NeedleTrack store: nothing to provision
        print("# provision: the firmware has no store module; nothing stored")
        return
    cfg = store.default_config()
    cfg.update(session.get("config", {}))
    store.save_config(cfg)
    cal = session.get("calibration")
    if cal is not None:
        import depth
        fitted, _ = depth.fit_calibration(store.default_calibration(), cal["jig_um"], cal["angles"])
        store.save_calibration(fitted)


def build_board(session, start_us=0, loop=False, offset_us=0):
    # The emulated chips on the board's bus, fed by the scenario; board time follows vclock from start_us.
    # Run mode: scenario time is board time less start_us. Loop (console) mode: board time plus offset_us,
    # modulo the duration.
    vboard.reset()
    vboard.board.now_us = start_us
    prof = session.get("board_profile")
    if prof:
        # The board's port where the firmware can tell it apart (sim/boards.py)
        b = vboard.board
        b.i2c = [prof["i2c_src_hz"], prof["i2c_max_hz"], 1 if prof["i2c_reports_actual"] else 0]
        b.bus(BUS).nack_errno = prof["i2c_nack_errno"]
        b.timer_ids = tuple(prof["timer_ids"])
        b.adc_pins = tuple(prof["adc_pins"])
        import machine as emulated
        emulated.ADC = emulated.ADC_RP2 if prof.get("adc_api") == "rp2" else emulated.ADC_ESP32
    vclock.reset(start_us)
    imu = ImuSource(session["imu"], session.get("imu_odr_mhz", IMU_ODR_MHZ))
    sources = {"imu": imu, "hall_a": HallSource(session["hall_a"]),
               "hall_b": HallSource(session["hall_b"])}
    feeds = sources
    if loop and session["duration_us"] > 0:
        feeds = {name: Looped(src, session["duration_us"], offset_us) for name, src in sources.items()}
    elif not loop and start_us:
        feeds = {name: Shifted(src, start_us) for name, src in sources.items()}
    devices = {
        "imu": LSM6DSOXEmu(SENSORS["imu"], feeds["imu"], clock_ppm=session.get("imu_clock_ppm", 0)),
        "hall_a": TMAG5273Emu("A1", source=feeds["hall_a"]),
        "hall_b": TMAG5273Emu("B1", source=feeds["hall_b"]),
    }
    for name, dev in devices.items():
        vboard.attach(BUS, dev, SENSORS[name])
    schedule = Schedule(session, devices, sources, loop, offset_us, 0 if loop else start_us)
    vboard.board.clock = schedule.clock
    return schedule


def connect_radio(session):
    # The emulated `bluetooth` module; with a bridge in the session, its radio reaches a real BLE host stack.
    # Both before the flash filesystem hides this directory from imports. The board decides the stack (BTstack on
    # the Pico W, NimBLE on the ESP32-S3), with a bridge or without.
    import bluetooth  # noqa: F401
    import vradio
    vradio.use_board(session.get("board", "xiao_esp32s3"))
    radio = session.get("radio")
    if radio:
        vradio.connect(radio["port"], pace=radio.get("pace"))


class Load:
    # The board's CPU model and what the probe measures of the firmware's load (the "device_load" report).
    # Set up before the flash filesystem hides the host's files (the kernel and its RP2040 figures).
    def __init__(self, session):
        self.prof = session.get("board_profile") or {}
        self.heap_factor = self.prof.get("heap_64bit_factor", 1.0)
        self.tracker = None
        self.ratios = {}
        self.heap_min = -1
        self.ballast = None
        self.start_us = 0
        if session.get("cpu", "ideal") == "board" and self.prof:
            import cpuscale
            path = __file__.rsplit("/", 1)[0] + "/kernel-rp2040.json"
            self.mcu = cpuscale.rp2040_figures(path)  # read while the host's files are still there
            self.tracker = cpuscale.Tracker(self.mcu, self.prof["cpu_vs_rp2040"])

    def start(self):
        # Power-on: the firmware's own time starts here. With the board's costs charged the heap is the board's:
        # what the emulation itself holds beyond that is set aside, so the firmware meets MemoryError where the
        # board would. "--cpu ideal" keeps the emulation's heap as it was.
        target = int(self.prof.get("heap_free_bytes", 0) * self.heap_factor) if self.tracker is not None else 0
        gc.collect()
        free = gc.mem_free()
        if target:
            if free > target + 4096:
                self.ballast = bytearray(free - target - 2048)
            elif free < target:
                print("# heap: %d B free for the firmware, less than the board's %d B" % (free, target))
        self.heap_min = gc.mem_free()
        if self.tracker is not None:
            # Measured last, just before the firmware runs: this machine's speed changes from moment to moment.
            import cpuscale
            cpuscale.measure(self.mcu, 1)  # a first pass warms the machine up; its figures are not used
            self.ratios = cpuscale.measure(self.mcu)
            self.overhead_ns = cpuscale.call_overhead_ns()
            self.tracker.start(self.ratios[cpuscale.SCALE_PART], self.overhead_ns)
        self.start_us = vclock.now_us()
        if self.tracker is not None:
            vclock.on_poll(self.poll, 20000)

    def poll(self):
        free = gc.mem_free()
        if free < self.heap_min:
            self.heap_min = free
        if self.tracker is not None:
            self.tracker.poll()

    def report(self, imu):
        totals = vclock.cpu_totals([0, 0, 0, 0])
        elapsed = max(1, vclock.now_us() - self.start_us)
        produced = imu.words_in if imu is not None else 0
        processed = (imu.words_read / produced) if produced else 1.0
        busy = totals[1] / elapsed
        return {
            "board": self.prof.get("name", "unknown"),
            "cpu": "board" if self.tracker is not None else "ideal",
            "device_s": elapsed / 1e6,
            # CPU seconds per second of sensor data the firmware processed: what it needs to keep up (over 1:
            # it cannot, and busy stays under 1 while samples are lost)
            "cpu_fraction": busy / processed if processed else 0,
            "cpu_busy_fraction": busy,
            "bus_fraction": totals[2] / elapsed,
            "flash_s": totals[3] / 1e6,
            "host_compute_s": totals[0] / 1e9,
            "scale": totals[1] * 1000 / totals[0] if totals[0] > 0 else 0,
            "kernel_ratios": self.ratios,
            "call_overhead_ns": getattr(self, "overhead_ns", 0),
            "fifo_overruns": imu.overruns if imu is not None else 0,
            "imu_samples_lost": (imu.words_lost if imu is not None else 0) // 2,
            "imu_samples_processed_fraction": processed,
            "heap_free_min_bytes": int(self.heap_min / self.heap_factor),
        }


def mount_flash(session):
    connect_radio(session)
    fs = flashfs.mount_root(session["flash"])
    prof = session.get("board_profile")
    if prof and session.get("cpu", "ideal") == "board":
        fs.timing(prof["flash_program_us"], prof["flash_erase_us"])
    sys.path[:] = ["", "/lib"]
    with open("/board", "w") as f:
        f.write(session.get("board", "xiao_esp32s3"))


def main(path):
    with open(path) as f:
        session = json.load(f)
    schedule = build_board(session, session.get("clock_start_us", 0))
    load = Load(session)
    mount_flash(session)
    provision(session)
    if session.get("realtime"):
        vclock.set_realtime(True)
    load.start()
    try:
        import main as firmware_main  # noqa: F401 - runs the firmware, as main.py does on power-up
    except SystemExit:
        pass
    vclock.cpu_stop()
    print("# session end at %d us" % vclock.now_us())
    print("# device_load " + json.dumps(load.report(schedule.devices["imu"])))


def halt():
    # End this boot from the script. A SystemExit would not: with -i the unix port goes on into the REPL, and
    # it has no os._exit. The console ends the process when it reads MARK_EXIT, after the output before it.
    sys.stdout.write(MARK_EXIT)
    while True:
        try:
            vclock._host_time.sleep_ms(1000)
        except KeyboardInterrupt:
            pass


def console(path, boot_path, repl_globals):
    with open(path) as f:
        session = json.load(f)
    with open(boot_path) as f:
        boot = json.load(f)
    state = open(boot["state"], "w")  # opened before the flash filesystem hides the host's paths
    board = vboard.board

    def note_reset():
        state.write("reset %d\n" % board.reset_cause)
        state.flush()

    def watchdog_bites():
        note_reset()
        raise SystemExit(board.reset_cause)

    # The device clock at power-on is clock_start_us (0 on a board), and runs on across soft reboots.
    clock_us = session.get("clock_start_us", 0) + boot["uptime_us"]
    build_board(session, clock_us, True, boot["world_us"] - clock_us)
    load = Load(session)
    board.reset_cause = boot["cause"]
    board.on_reset = note_reset
    board.on_wdt = watchdog_bites
    vclock.set_realtime(True)  # a console is interactive
    # Where device time 0 falls on the host's monotonic clock (the unix port's ticks_us is CLOCK_MONOTONIC, as
    # CPython's time.monotonic): the ground truth a benchmark checks the host's clock mapping against.
    state.write("epoch_us %d\n" % vclock._state[2])
    state.flush()
    mount_flash(session)
    if boot["provision"]:
        provision(session)
    load.start()
    vprobe_load[0] = load  # kept alive with its heap ballast while the REPL runs
    # boot.py and main.py run in the globals the REPL will use, as on a board; this script's names go first.
    g = repl_globals
    for name in list(g):
        if name != "__name__":
            del g[name]
    sys.stdout.write(MARK_BOOTED)
    scripts = ("boot.py", "main.py") if boot["boot"] == "main" else ("boot.py",)
    for name in scripts:
        try:
            with open(name) as f:
                src = f.read()
        except OSError:
            continue
        try:
            exec(compile(src, name, "exec"), g)
        except SystemExit:
            halt()  # a soft reboot, or a reset: the console starts the next boot
        except BaseException as e:  # as on a board: the traceback, then the REPL (even if main.py is next)
            sys.print_exception(e)
            break
    sys.stdout.write(MARK_REPL)


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[2] == "--console":
        # This file again, as the module `vprobe`: its functions keep their globals when the console empties
        # the script's globals for the REPL.
        import vprobe

        try:
            vprobe.console(sys.argv[1], sys.argv[3], globals())
        except Exception as e:  # the board did not come up
            sys.print_exception(e)
            vprobe.halt()
    else:
        main(sys.argv[1])
