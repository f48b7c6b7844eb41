# ruff: noqa: F821 - `multitest` (and BDADDR, set by instance0) are given to each instance by the runner.
# A two-instance BLE test in MicroPython's multitest format, for tests/host/test_multi_bluetooth.py: instance0
# advertises and serves one characteristic; instance1 connects, discovers it, reads it, writes it, disconnects.
# Waits sleep between polls, so it runs on any `bluetooth` that delivers events at least during sleeps.
import time

import bluetooth
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
_IRQ_GATTC_CHARACTERISTIC_RESULT = const(11)
_IRQ_GATTC_CHARACTERISTIC_DONE = const(12)
_IRQ_GATTC_READ_RESULT = const(15)
_IRQ_GATTC_READ_DONE = const(16)
_IRQ_GATTC_WRITE_DONE = const(17)

SERVICE_UUID = bluetooth.UUID("301b7e57-0000-4000-8000-00000000a001")
CHAR_UUID = bluetooth.UUID("301b7e57-0000-4000-8000-00000000a002")
SERVICE = (SERVICE_UUID, ((CHAR_UUID, bluetooth.FLAG_READ | bluetooth.FLAG_WRITE),))

events = {}


def irq(event, data):
    if event == _IRQ_CENTRAL_CONNECT:
        print("central connected")
        events[event] = data[0]
    elif event == _IRQ_CENTRAL_DISCONNECT:
        print("central disconnected")
    elif event == _IRQ_GATTS_WRITE:
        print("written", ble.gatts_read(data[1]))
    elif event == _IRQ_PERIPHERAL_CONNECT:
        print("connected")
        events[event] = data[0]
    elif event == _IRQ_PERIPHERAL_DISCONNECT:
        print("disconnected")
    elif event == _IRQ_GATTC_CHARACTERISTIC_RESULT:
        if data[-1] == CHAR_UUID:
            print("characteristic", data[-1])
            events[event] = data[2]
        return
    elif event == _IRQ_GATTC_READ_RESULT:
        print("read", bytes(data[-1]))
    elif event == _IRQ_GATTC_READ_DONE:
        print("read done", data[-1])
    elif event == _IRQ_GATTC_WRITE_DONE:
        print("write done", data[-1])
    if event not in events:
        events[event] = None


def wait_for(event, timeout_ms=5000):
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < timeout_ms:
        if event in events:
            return events.pop(event)
        time.sleep_ms(10)
    raise ValueError(f"timeout waiting for event {event}")


def instance0():
    multitest.globals(BDADDR=ble.config("mac"))
    ((handle,),) = ble.gatts_register_services((SERVICE,))
    ble.gap_advertise(20_000, b"\x02\x01\x06")
    print("advertising")
    multitest.next()
    ble.gatts_write(handle, "hello")
    multitest.broadcast("served")
    try:
        wait_for(_IRQ_CENTRAL_CONNECT)
        wait_for(_IRQ_GATTS_WRITE)
        wait_for(_IRQ_CENTRAL_DISCONNECT)
        multitest.output_metric("instance0 done")
    finally:
        ble.active(0)


def instance1():
    multitest.next()
    multitest.wait("served")
    try:
        ble.gap_connect(*BDADDR)
        conn = wait_for(_IRQ_PERIPHERAL_CONNECT)
        ble.gattc_discover_characteristics(conn, 1, 65535)
        wait_for(_IRQ_GATTC_CHARACTERISTIC_DONE)
        value_handle = events.pop(_IRQ_GATTC_CHARACTERISTIC_RESULT)
        ble.gattc_read(conn, value_handle)
        wait_for(_IRQ_GATTC_READ_DONE)
        ble.gattc_write(conn, value_handle, b"world", 1)
        wait_for(_IRQ_GATTC_WRITE_DONE)
        print("gap_disconnect", ble.gap_disconnect(conn))
        wait_for(_IRQ_PERIPHERAL_DISCONNECT)
    finally:
        ble.active(0)


ble = bluetooth.BLE()
ble.active(1)
ble.irq(irq)
