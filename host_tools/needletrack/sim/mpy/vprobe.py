# The virtual probe: boots the unchanged firmware on the MicroPython unix port with emulated chips.
#
#   micropython vprobe.py SESSION_JSON
#
# SESSION_JSON (written by needletrack.sim.runner) names the sensor data files, the device's flash directory,
# the session length, the clock mode and the fault schedule. The flash directory holds the firmware exactly
# as flashed onto a board; it is mounted at "/" and the firmware's main.py runs from it as on power-up.
# The session ends (SystemExit from the board clock) when the virtual time reaches its duration.
import json
import sys

import vclock
import vboard
import machine  # noqa: F401 - the emulated module, loaded before the flash filesystem hides this directory
import time  # noqa: F401 - likewise
import flashfs
from feed import HallSource, ImuSource
from lsm6dsox_emu import LSM6DSOXEmu
from tmag5273_emu import TMAG5273Emu

BUS = 0
SENSORS = {"imu": 0x6A, "hall_a": 0x35, "hall_b": 0x22}


class Schedule:
    # Faults and the end of the session, fired from the board clock so they happen at exact virtual times.
    def __init__(self, session, devices, sources):
        self.end_us = session["duration_us"]
        self.devices = devices
        self.sources = sources
        events = []
        for t0, t1, kind, sensor in session.get("faults", []):
            events.append((t0, 1, kind, sensor))
            events.append((t1, 0, kind, sensor))
        events.sort()
        self.events = events
        self.i = 0

    def clock(self):
        now = vclock.now_us()
        while self.i < len(self.events) and self.events[self.i][0] <= now:
            self._apply(*self.events[self.i][1:])
            self.i += 1
        if now >= self.end_us:
            raise SystemExit(0)
        return now

    def _apply(self, on, kind, sensor):
        addr = SENSORS[sensor]
        bus = vboard.bus(BUS)
        if kind == "unplug":
            if on:
                vboard.detach(BUS, addr)
            else:
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
        print("# fault %s %s %s" % (kind, sensor, "on" if on else "off"))


def provision(session):
    # What a factory or a clinician's setup would have stored on the device, through the firmware's own store.
    import store
    cfg = store.default_config()
    cfg.update(session.get("config", {}))
    store.save_config(cfg)
    cal = session.get("calibration")
    if cal is not None:
        import depth
        fitted, _ = depth.fit_calibration(store.default_calibration(), cal["jig_um"], cal["angles"])
        store.save_calibration(fitted)


def main(path):
    with open(path) as f:
        session = json.load(f)
    vboard.reset()
    vclock.reset(0)
    sources = {"imu": ImuSource(session["imu"]), "hall_a": HallSource(session["hall_a"]),
               "hall_b": HallSource(session["hall_b"])}
    devices = {
        "imu": LSM6DSOXEmu(SENSORS["imu"], sources["imu"], clock_ppm=session.get("imu_clock_ppm", 0)),
        "hall_a": TMAG5273Emu("A1", source=sources["hall_a"]),
        "hall_b": TMAG5273Emu("B1", source=sources["hall_b"]),
    }
    for name, dev in devices.items():
        vboard.attach(BUS, dev, SENSORS[name])
    schedule = Schedule(session, devices, sources)
    vboard.board.clock = schedule.clock
    flashfs.mount_root(session["flash"])
    sys.path[:] = ["", "/lib"]
    with open("/board", "w") as f:
        f.write(session.get("board", "xiao_esp32s3"))
    provision(session)
    if session.get("realtime"):
        vclock.set_realtime(True)
    try:
        import main as firmware_main  # noqa: F401 - runs the firmware, as main.py does on power-up
    except SystemExit:
        pass
    print("# session end at %d us" % vclock.now_us())


main(sys.argv[1])
