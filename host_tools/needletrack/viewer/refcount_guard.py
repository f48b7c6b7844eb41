"""A guard against a PySide6 packaging fault that would otherwise stop the viewer within seconds on Python 3.11.

PySide6 6.12's wheels are built for the stable ABI of Python 3.12, where None, True and False are immortal and
a C function may return them without taking a reference. Installed on Python 3.11, which counts references
on them, every such return drops one: ``QLabel.setText`` takes a reference from None on each call, and some
of pyqtgraph's paths do the same to True or False. A few thousand calls later the count reaches zero and the
interpreter aborts ("Fatal Python error: none_dealloc"). The viewer makes thousands of such calls a minute.

:func:`protect` detects the fault (a void Qt call that lowers None's count) and, only then, raises the three
objects' counts by 2**60, which no run can use up: in effect, the immortality the wheels assume. It changes
nothing on Python 3.12+ or with a PySide6 that counts correctly. The window, the sound and the application call
it before their first Qt calls (the few made earlier are far from using up the count).
"""

from __future__ import annotations

import ctypes
import sys

MARGIN = 1 << 60
_protected = False


def leaks_none() -> bool:
    """Whether a void PySide6 call takes a reference from None."""
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(64):
        probe.setObjectName("probe")
    return sys.getrefcount(None) < before - 32


def protect() -> bool:
    """Apply the guard where it is needed (once per process). Returns whether it is in force."""
    global _protected
    if _protected:
        return True
    if sys.version_info >= (3, 12) or not leaks_none():
        return False
    for obj in (None, True, False):
        # ob_refcnt is the first field of every object on CPython: a Py_ssize_t at the object's address.
        ctypes.c_ssize_t.from_address(id(obj)).value += MARGIN
    _protected = True
    return True
