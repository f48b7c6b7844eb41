# A peripheral that uses the central's GATT server through its own connection (the GATT client role), for
# tests/host/test_gatt_client.py: runs on the unix port with the virtual probe's bluetooth/vradio modules against
# the radio bridge, whose stack is the board's.
#
#   micropython gatt_client_peripheral.py PORT SERVICE_UUID [CHAR_UUID]
#
# Advertises, waits for the central, then: discovers all services, the service SERVICE_UUID alone, its
# characteristics (asking for a second characteristic discovery while the first runs), the first
# characteristic's descriptors; reads it and the second (not readable) one; writes the first with response
# ("with"), without response longer than the MTU allows, and without ("without"); then waits for a notification
# and an indication from the central.
# With CHAR_UUID: reads that characteristic, which the central never answers, and reports what the handler hears
# once the central has dropped the link. Prints one JSON object per step; errors as [errno] or [exception name].
import json
import sys
import time

import bluetooth
import vclock
import vradio

_host = vclock._host_time  # waits are bounded in real time

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTC_SERVICE_RESULT = 9
_IRQ_GATTC_SERVICE_DONE = 10
_IRQ_GATTC_CHARACTERISTIC_RESULT = 11
_IRQ_GATTC_CHARACTERISTIC_DONE = 12
_IRQ_GATTC_DESCRIPTOR_RESULT = 13
_IRQ_GATTC_DESCRIPTOR_DONE = 14
_IRQ_GATTC_READ_RESULT = 15
_IRQ_GATTC_READ_DONE = 16
_IRQ_GATTC_WRITE_DONE = 17
_IRQ_GATTC_NOTIFY = 18
_IRQ_GATTC_INDICATE = 19

events = []


def irq(event, data):
    # Copy what the stack lends: memoryviews become hex, UUIDs their repr. Only connections and the GATT
    # client's events are kept (NimBLE's active(True) asks for secrets: none here).
    if event > _IRQ_GATTC_INDICATE or (_IRQ_CENTRAL_DISCONNECT < event < _IRQ_GATTC_SERVICE_RESULT):
        return None
    out = [event]
    for x in data:
        if isinstance(x, memoryview):
            out.append(bytes(x).hex())
        elif isinstance(x, bluetooth.UUID):
            out.append(repr(x))
        else:
            out.append(x)
    events.append(out)


def emit(step, **fields):
    fields["step"] = step
    print(json.dumps(fields))


def error_of(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return [e.args[0]]
    except Exception as e:
        return [type(e).__name__]
    return None


def wait(done_event, timeout_ms=5000):
    # Everything the handler heard up to and including done_event (events delivered between bytecodes/sleeps).
    t0 = _host.ticks_ms()
    while _host.ticks_diff(_host.ticks_ms(), t0) < timeout_ms:
        for i in range(len(events)):
            if events[i][0] == done_event:
                got = events[:i + 1]
                del events[:i + 1]
                return got
        time.sleep_ms(2)
    raise OSError(110)


def cut(ble, char):
    # A read the central never answers: the link goes first.
    conn = wait(_IRQ_CENTRAL_CONNECT, 10000)[-1][1]
    ble.gattc_discover_characteristics(conn, 1, 0xFFFF, char)
    handle = wait(_IRQ_GATTC_CHARACTERISTIC_DONE)[0][3]
    ble.gattc_read(conn, handle)
    got = wait(_IRQ_CENTRAL_DISCONNECT)
    t0 = _host.ticks_ms()
    while _host.ticks_diff(_host.ticks_ms(), t0) < 300:
        time.sleep_ms(5)
    emit("cut", events=[e[:2] if e[0] == _IRQ_CENTRAL_DISCONNECT else e for e in got + events])
    emit("done")


def main():
    port, service = int(sys.argv[1]), bluetooth.UUID(sys.argv[2])
    vradio.connect(port, pace=1)
    ble = bluetooth.BLE()
    ble.irq(irq)
    ble.active(True)
    emit("types", services=error_of(ble.gattc_discover_services, 0, "not a UUID"),
         chars=error_of(ble.gattc_discover_characteristics, None, 1, 2),
         write=error_of(ble.gattc_write, 0, 1, 5))
    ble.gap_advertise(20000, b"\x02\x01\x06")
    emit("advertising")
    if len(sys.argv) > 3:
        return cut(ble, bluetooth.UUID(sys.argv[3]))
    conn = wait(_IRQ_CENTRAL_CONNECT, 10000)[-1][1]
    emit("unknown_conn", read=error_of(ble.gattc_read, conn + 1, 1),
         services=error_of(ble.gattc_discover_services, conn + 1))

    ble.gattc_discover_services(conn)
    got = wait(_IRQ_GATTC_SERVICE_DONE)
    emit("services", results=[e[1:] for e in got[:-1]], done=got[-1][1:])

    ble.gattc_discover_services(conn, service)
    got = wait(_IRQ_GATTC_SERVICE_DONE)
    emit("service_by_uuid", results=[e[1:] for e in got[:-1]], done=got[-1][1:])
    start, end = got[0][2], got[0][3]

    ble.gattc_discover_characteristics(conn, start, end)
    busy = error_of(ble.gattc_discover_characteristics, conn, start, end)
    got = wait(_IRQ_GATTC_CHARACTERISTIC_DONE)
    emit("characteristics", results=[e[1:] for e in got[:-1]], done=got[-1][1:], busy=busy)
    chars = [e[1:] for e in got[:-1]]
    first_end, first = chars[0][1], chars[0][2]
    second = chars[1][2]

    ble.gattc_discover_descriptors(conn, first, first_end)
    got = wait(_IRQ_GATTC_DESCRIPTOR_DONE)
    emit("descriptors", results=[e[1:] for e in got[:-1]], done=got[-1][1:])

    ble.gattc_read(conn, first)
    got = wait(_IRQ_GATTC_READ_DONE)
    emit("read", events=got)
    ble.gattc_read(conn, second)
    got = wait(_IRQ_GATTC_READ_DONE)
    emit("read_refused", events=got)

    ble.gattc_write(conn, first, b"with", 1)
    got = wait(_IRQ_GATTC_WRITE_DONE)
    long = error_of(ble.gattc_write, conn, first, b"x" * 30)  # ATT_MTU is 23
    ble.gattc_write(conn, first, "without")
    emit("written", events=got, bad_mode=error_of(ble.gattc_write, conn, first, b"x", 2), long=long)

    got = wait(_IRQ_GATTC_INDICATE)
    emit("received", events=got)
    ble.active(False)
    emit("done")


main()
