"""Links from a probe to the host: one interface (``base.Link``), one backend per transport.

    open_link("os")                          # the computer's Bluetooth adapter, through bleak
    open_link("tcp-client:127.0.0.1:PORT")   # a Bumble HCI transport: the virtual probe's radio, or
    open_link("usb:0")                       # a USB Bluetooth dongle driven by Bumble
    open_link("console:/dev/ttyACM0")        # a board on a USB cable: samples from its serial console
"""

from __future__ import annotations

from needletrack.link.base import Found, Link, LinkError, Notification, SecurityError

DEFAULT_TRANSPORT = "os"

__all__ = ["DEFAULT_TRANSPORT", "Found", "Link", "LinkError", "Notification", "SecurityError", "open_link"]


def open_link(transport: str = DEFAULT_TRANSPORT) -> Link:
    """The backend for a transport string; the backend's own module is imported only when chosen."""
    if transport in ("os", "bleak"):
        from needletrack.link.bleak_link import BleakLink

        return BleakLink()
    if transport.startswith("console:"):
        from needletrack.link.console_link import ConsoleLink

        return ConsoleLink(transport.removeprefix("console:"))
    from needletrack.link.bumble_link import BumbleLink

    return BumbleLink(transport.removeprefix("bumble:"))
