# What the virtual probe's bluetooth module does as each board's stack, checked against a scripted stand-in for
# the radio bridge (tests/host/test_radio.py): what it raises, how it queues, when IRQs arrive.
#
#   micropython stack_check.py PORT BOARD
#
# Prints one JSON object per check. The stand-in answers gap_advertise with a connection, gatts_write(...,
# send_update=True) with two remote writes to the written characteristic, and gap_disconnect with a
# disconnection.
import gc
import json
import sys
import time

import vclock
import vradio

_host = vclock._host_time  # waits for the bridge are bounded in real time: virtual time runs unpaced here

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_IRQ_GATTS_READ_REQUEST = 4
_IRQ_GET_SECRET = 29
_IRQ_SET_SECRET = 30


def out(name, **fields):
    fields["check"] = name
    print(json.dumps(fields))


def raised(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except Exception as e:
        return [type(e).__name__, e.args[0] if e.args else None]
    return None


class Probe:
    def __init__(self):
        self.conn = None
        self.writes = []
        self.secrets = []
        self.disconnected = None
        self.ble = None

    def irq(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            self.conn = data[0]
        elif event == _IRQ_CENTRAL_DISCONNECT:
            self.disconnected = [data[0], data[1], bytes(data[2]).hex()]
            self.conn = None
        elif event == _IRQ_GATTS_WRITE:
            self.writes.append(self.ble.gatts_read(data[1]).decode())
        elif event == _IRQ_GATTS_READ_REQUEST:
            return 3  # ATT Read Not Permitted
        elif event == _IRQ_GET_SECRET:
            self.secrets.append(["get", data[0], data[1], None if data[2] is None else bytes(data[2]).decode()])
            return None
        elif event == _IRQ_SET_SECRET:
            self.secrets.append(["set", data[0], bytes(data[1]).decode(), len(data[2])])
            return True
        return None


def main():
    vradio.use_board(sys.argv[2])
    vradio.connect(int(sys.argv[1]))
    import bluetooth

    p = Probe()
    ble = p.ble = bluetooth.BLE()
    ble.irq(p.irq)  # before active(True), as MicroPython's docs ask for NimBLE
    ble.active(True)
    out("active", secrets=p.secrets)

    out("config", bond=raised(ble.config, bond=True), le_secure=raised(ble.config, le_secure=True),
        mitm=raised(ble.config, mitm=False), io=raised(ble.config, io=3), rxbuf=raised(ble.config, "rxbuf"),
        gap_name=ble.config("gap_name").decode(), mtu=ble.config("mtu"), mtu_600=raised(ble.config, mtu=600),
        gap_pair=hasattr(ble, "gap_pair"),
        gap_passkey=hasattr(ble, "gap_passkey"), class_gap_pair=hasattr(bluetooth.BLE, "gap_pair"),
        is_ble=isinstance(ble, bluetooth.BLE), gap_pair_error=raised(getattr, ble, "gap_pair"))

    svc = (bluetooth.UUID("301b0001-5a5e-487c-b7c0-b53a1d892a59"), (
        (bluetooth.UUID("301b0002-5a5e-487c-b7c0-b53a1d892a59"), bluetooth.FLAG_NOTIFY),
        (bluetooth.UUID("301b0003-5a5e-487c-b7c0-b53a1d892a59"), bluetooth.FLAG_WRITE),
    ))
    ((h_notify, h_write),) = ble.gatts_register_services((svc,))
    out("types", notify_none=raised(ble.gatts_notify, None, h_notify, b"x"),
        notify_handle_str=raised(ble.gatts_notify, 0, "12", b"x"),
        notify_int_data=raised(ble.gatts_notify, 0, h_notify, 5),
        write_str=raised(ble.gatts_write, h_notify, "text"), read_none=raised(ble.gatts_read, None),
        advertise_float=raised(ble.gap_advertise, 100000.0), uuid_list=raised(bluetooth.UUID, [1, 2]),
        disconnect_none=raised(ble.gap_disconnect, None), handles=[h_notify, h_write])

    ble.gap_advertise(100000, b"\x02\x01\x06")
    # A loop that never sleeps and calls nothing: the connection's IRQ still arrives, between two bytecodes.
    n = 0
    while p.conn is None and n < 100000000:
        n += 1
    out("busy_loop", connected=p.conn is not None)
    conn = p.conn

    out("unknown_conn", notify=raised(ble.gatts_notify, conn + 5, h_notify, b"x"),
        disconnect=ble.gap_disconnect(conn + 5), exchange_mtu=raised(ble.gattc_exchange_mtu, conn + 5))
    ble.gattc_exchange_mtu(conn)

    gc.collect()
    free0 = gc.mem_free()
    sent, error = 0, None
    for i in range(60):
        try:
            ble.gatts_notify(conn, h_notify, bytes((i,)) * 200)
        except OSError as e:
            error = e.args[0]
            break
        sent += 1
    gc.collect()  # what is left allocated is what the stack holds
    free1 = gc.mem_free()
    waiting = ble.pending() if hasattr(ble, "pending") else 0
    out("congestion", sent=sent, error=error, heap_fell=free0 - free1, waiting=waiting)

    ble.gatts_write(h_notify, b"W", True)  # the stand-in answers with two writes to h_write, back to back
    t0 = _host.ticks_ms()
    while len(p.writes) < 2 and _host.ticks_diff(_host.ticks_ms(), t0) < 5000:
        time.sleep_ms(1)
    out("writes", seen=p.writes)

    time.sleep_ms(3000)  # the queue drains at the connection events
    waiting = ble.pending() if hasattr(ble, "pending") else 0
    ble.gap_disconnect(conn)
    t0 = _host.ticks_ms()
    while p.disconnected is None and _host.ticks_diff(_host.ticks_ms(), t0) < 5000:
        time.sleep_ms(1)
    out("disconnected", data=p.disconnected, waiting_before=waiting)
    time.sleep_ms(100)
    out("done")


main()
