# When the stack's link acts while the firmware waits, against tests/host/test_radio.py's scripted bridge:
#
#   micropython link_timing_check.py PORT
#
# A notification queued before a long sleep must leave at its connection event, during the sleep (not when the
# sleep ends); a disconnection the probe asks for must not be reported before the connection event that carries
# it (not in the bytecodes right after gap_disconnect), and reaches a firmware that spins without sleeping
# within about a connection interval. Prints one JSON object.
import json
import sys
import time

import bluetooth
import vclock
import vradio

_host = vclock._host_time

events = []


def irq(event, data):
    if event in (1, 2):
        events.append((event, _host.ticks_ms()))


def main():
    vradio.connect(int(sys.argv[1]), pace=1)
    ble = bluetooth.BLE()
    ble.irq(irq)
    ble.active(True)
    svc = (bluetooth.UUID(0x180A), ((bluetooth.UUID(0x2A00), bluetooth.FLAG_NOTIFY),
                                    (bluetooth.UUID(0x2A01), bluetooth.FLAG_WRITE)))
    ((h, _),) = ble.gatts_register_services((svc,))
    ble.gap_advertise(100000, b"\x02\x01\x06")
    while not events:
        time.sleep_ms(1)
    conn = 1
    time.sleep_ms(50)
    t0 = _host.ticks_ms()
    ble.gatts_notify(conn, h, b"n")
    time.sleep_ms(300)
    slept = _host.ticks_diff(_host.ticks_ms(), t0)
    ble.gap_disconnect(conn)
    t1 = _host.ticks_ms()
    while _host.ticks_diff(_host.ticks_ms(), t1) < 15:  # bytecodes, no sleep, half an interval: the link is up
        pass
    spun = len(events)
    t1 = _host.ticks_ms()
    while len(events) < 2 and _host.ticks_diff(_host.ticks_ms(), t1) < 2000:  # still no sleep: real time passes
        pass
    spun_ms = _host.ticks_diff(_host.ticks_ms(), t1)
    print(json.dumps({"t0": t0, "slept": slept, "after_spin": spun, "disconnected": len(events) == 2,
                      "spun_ms": spun_ms}))


main()
