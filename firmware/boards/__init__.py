# Board pin maps, one module per board. select() picks the module for the board this runs on.
#
# A file named `board` at the filesystem root, holding a board module's name, overrides detection: it is how a
# custom carrier board or the virtual probe declares its pin map.
import sys

_DETECT = (
    ("ESP32S3", "xiao_esp32s3"),
    ("Pico W", "pico_w"),
)


def name():
    try:
        with open("/board") as f:
            forced = f.read().strip()
        if forced:
            return forced
    except OSError:
        pass
    machine = sys.implementation._machine
    for needle, board in _DETECT:
        if needle in machine:
            return board
    raise OSError("no pin map for this board (%s); write its name to /board" % machine)


def select():
    n = name()
    return __import__("boards." + n, None, None, (n,))
