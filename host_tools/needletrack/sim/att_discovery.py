"""GATT discovery as MicroPython's bindings carry it out, one ATT request after another (Bumble's ATT PDUs).

The radio bridge runs these for the virtual probe's GATT client (``gattc_discover_*``) and the multi_bluetooth
central (``tools/bumble_central.py``) for its own: each procedure yields its results as they come and ends on
Attribute Not Found (a success) or at the range's end. Another ATT Error Response raises :class:`AttError` with
its code; a link that goes down raises whatever ``request`` raises. What a stack reports then is the caller's.

``request`` sends one request PDU on the connection and returns the response PDU. UUIDs are their bytes as they
travel (little-endian).
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bumble import att
from bumble.gatt import GATT_CHARACTERISTIC_ATTRIBUTE_TYPE, GATT_PRIMARY_SERVICE_ATTRIBUTE_TYPE

Request = Callable[[att.ATT_PDU], Awaitable[Any]]
LAST_HANDLE = 0xFFFF


class AttError(Exception):
    """A procedure ended by an ATT Error Response other than Attribute Not Found."""

    def __init__(self, code: int) -> None:
        super().__init__(f"ATT error 0x{code:02x}")
        self.code = code


def _ended(r: Any) -> bool:
    # An Error Response ends the procedure: Attribute Not Found as a success, any other as an AttError.
    if r.op_code != att.Opcode.ATT_ERROR_RESPONSE:
        return False
    if r.error_code != att.ErrorCode.ATTRIBUTE_NOT_FOUND:
        raise AttError(int(r.error_code))
    return True


async def services(request: Request, uuid: bytes | None = None) -> AsyncIterator[tuple[int, int, bytes]]:
    """(start, end, uuid) of each primary service: NimBLE ble_gattc_disc_all_svcs / ble_gattc_disc_svc_by_uuid,
    BTstack gatt_client_discover_primary_services(_by_uuid16/128): Read By Group Type, or Find By Type Value with
    the UUID, from handle 1."""
    start = 1
    while start <= LAST_HANDLE:
        if uuid is None:
            r = await request(att.ATT_Read_By_Group_Type_Request(
                starting_handle=start, ending_handle=LAST_HANDLE,
                attribute_group_type=GATT_PRIMARY_SERVICE_ATTRIBUTE_TYPE))
            if _ended(r):
                return
            found = [(s, e, bytes(v)) for s, e, v in r.attributes]
        else:
            r = await request(att.ATT_Find_By_Type_Value_Request(
                starting_handle=start, ending_handle=LAST_HANDLE,
                attribute_type=GATT_PRIMARY_SERVICE_ATTRIBUTE_TYPE, attribute_value=uuid))
            if _ended(r):
                return
            found = [(s, e, uuid) for s, e in r.handles_information]
        for item in found:
            yield item
        last = max((e for _, e, _ in found), default=LAST_HANDLE)
        if last >= LAST_HANDLE:
            return
        start = last + 1


async def characteristics(request: Request, start: int, end: int,
                          uuid: bytes | None = None) -> AsyncIterator[tuple[int, int, int, bytes]]:
    """(end handle, value handle, properties, uuid) of each characteristic declared in [start, end]: Read By
    Type. A result's end handle is the next declaration less one, or the range's end, so each is given when the
    next is known (NimBLE's binding holds a result back so; BTstack's characteristic_end_found); the last one
    also when the procedure fails. A UUID filters the results, not the requests."""
    held: tuple[int, int, bytes] | None = None
    try:
        while start <= end:
            r = await request(att.ATT_Read_By_Type_Request(
                starting_handle=start, ending_handle=end, attribute_type=GATT_CHARACTERISTIC_ATTRIBUTE_TYPE))
            if _ended(r):
                break
            last = start
            for declaration, value in r.attributes:
                if held is not None:
                    yield (declaration - 1, *held)
                    held = None
                properties, value_handle = struct.unpack_from("<BH", value)
                u = bytes(value[3:])
                if uuid is None or u == uuid:
                    held = (value_handle, properties, u)
                last = declaration
            if last >= end:
                break
            start = last + 1
    except Exception:
        if held is not None:
            yield (end, *held)
        raise
    if held is not None:
        yield (end, *held)


async def descriptors(request: Request, start: int, end: int) -> AsyncIterator[tuple[int, bytes]]:
    """(handle, uuid) of every attribute after a characteristic's value handle `start` up to `end`: Find
    Information (NimBLE ble_gattc_disc_all_dscs, BTstack gatt_client_discover_characteristic_descriptors)."""
    start += 1
    while start <= end:
        r = await request(att.ATT_Find_Information_Request(starting_handle=start, ending_handle=end))
        if _ended(r) or not r.information:
            return
        last = start
        for handle, u in r.information:
            yield handle, bytes(u)
            last = handle
        if last >= end:
            return
        start = last + 1
