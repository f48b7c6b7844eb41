# Checks of the virtual probe's bluetooth module against a scripted stand-in for the radio bridge (see
# tests/host/test_radio.py): the stack's transmit queue on the virtual clock, attribute buffers, errors.
#
#   micropython shim_check.py PORT
#
# Prints one JSON object per check. The stand-in answers gap_advertise with a connection (interval 30 ms),
# gatts_write(..., send_update=True) with two remote writes to the appended characteristic, and gap_disconnect
# with a disconnection.
import json
import sys
import time

import bluetooth
import vradio

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3

events = []  # type: list


def irq(event, data):
    events.append((event, tuple(bytes(d) if isinstance(d, memoryview) else d for d in data)))


def out(name, **fields):
    fields["check"] = name
    print(json.dumps(fields))


def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return e.args[0]
    return 0


def burst(ble, conn, handle, n):
    sent = 0
    for i in range(n):
        try:
            ble.gatts_notify(conn, handle, bytes((i,)) * 30)
        except OSError as e:
            return sent, e.args[0]
        sent += 1
    return sent, 0


def main():
    vradio.connect(int(sys.argv[1]))
    ble = bluetooth.BLE()
    out("inactive", notify=errno_of(ble.gatts_notify, 0, 1, b"x"), mac=errno_of(ble.config, "mac"))
    ble.active(True)
    ble.irq(irq)

    u16 = bluetooth.UUID(0x180A)
    u128 = bluetooth.UUID("6E400001-B5A3-F393-E0A9-E50E24DCCA9E")
    out("uuid", r16=repr(u16), r128=repr(u128), b128=bytes(u128).hex(), eq=u128 == bluetooth.UUID(bytes(u128)),
        hash=hash(u16) == hash(bluetooth.UUID(0x180A)), ne=u16 != u128)

    svc = (bluetooth.UUID("301b0001-5a5e-487c-b7c0-b53a1d892a59"), (
        (bluetooth.UUID("301b0002-5a5e-487c-b7c0-b53a1d892a59"), bluetooth.FLAG_NOTIFY),
        (bluetooth.UUID("301b0003-5a5e-487c-b7c0-b53a1d892a59"), bluetooth.FLAG_WRITE,
         ((bluetooth.UUID(0x2901), bluetooth.FLAG_READ),)),
    ))
    ((h_notify, h_write, h_desc),) = ble.gatts_register_services((svc,))
    out("handles", handles=[h_notify, h_write, h_desc])

    n = ble.gatts_write(h_notify, b"z" * 30)
    out("local_write", returned=n, read=ble.gatts_read(h_notify).hex(), unknown=errno_of(ble.gatts_write, 999, b"x"))

    ble.gap_advertise(100000, b"\x02\x01\x06")
    out("busy", register=errno_of(ble.gatts_register_services, (svc,)))
    while not events:
        time.sleep_ms(1)
    conn = events[0][1][0]
    out("connected", event=events[0][0], conn=conn, addr=events[0][1][2].hex())

    t0 = time.ticks_us()
    first, err1 = burst(ble, conn, h_notify, 20)
    time.sleep_us(30000)  # one connection interval: one connection event
    second, err2 = burst(ble, conn, h_notify, 20)
    time.sleep_us(1000000)
    third, err3 = burst(ble, conn, h_notify, 20)
    out("queue", first=first, err1=err1, second=second, err2=err2, third=third, err3=err3,
        t=time.ticks_diff(time.ticks_us(), t0))

    ble.gatts_set_buffer(h_write, 10, True)
    del events[:]
    ble.gatts_write(h_notify, b"W", True)  # the stand-in answers with two writes to h_write
    while len(events) < 2:
        time.sleep_ms(1)
    out("append", events=[e[0] for e in events], read1=ble.gatts_read(h_write).hex(),
        read2=ble.gatts_read(h_write).hex())

    time.sleep_us(1000000)  # let the queue drain before the link goes
    del events[:]
    out("disconnect", returned=ble.gap_disconnect(conn))
    while not events:
        time.sleep_ms(1)
    out("disconnected", event=events[0][0], notify=errno_of(ble.gatts_notify, conn, h_notify, b"x"),
        again=ble.gap_disconnect(conn))
    time.sleep_us(100000)
    out("done")


main()
