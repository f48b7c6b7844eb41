# The hardware watchdog, and who feeds it.
#
# Once started, the watchdog cannot be stopped (ESP32, RP2040), and it survives a soft reset. The sampling loop
# feeds it, so a hung loop resets the board. When the loop is not running (an engineer pressed Ctrl-C at the
# REPL, or mpremote soft-reset the board into its raw REPL to flash it, so main.py never started) a timer feeds
# it instead, or the board would reset under the engineer's hands. boot.py starts that keeper at every boot; the
# device takes over when its loop starts and hands back when it stops.
import machine
from micropython import const

TIMEOUT_MS = const(2000)
_KEEPER_PERIOD_MS = const(500)

class _State:
    wdt: "machine.WDT | None" = None
    keeper: "machine.Timer | None" = None


_state = _State()


def _wdt():
    wdt = _state.wdt
    if wdt is None:
        wdt = _state.wdt = machine.WDT(timeout=TIMEOUT_MS)
    return wdt


def keep_alive(timer_id):
    """Start the watchdog if it is not running, and feed it from a timer until take_over()."""
    wdt = _wdt()
    if _state.keeper is None:
        _state.keeper = machine.Timer(timer_id, mode=machine.Timer.PERIODIC, period=_KEEPER_PERIOD_MS,
                                      callback=lambda t: wdt.feed())
    return wdt


def take_over():
    """Stop the keeper and return the watchdog: from now on the caller must feed it."""
    wdt = _wdt()
    if _state.keeper is not None:
        _state.keeper.deinit()
        _state.keeper = None
    wdt.feed()
    return wdt
