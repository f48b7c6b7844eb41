# The watchdog is always fed by someone: the keeper timer at the REPL, the sampling loop while it runs.
import time
import vboard
import vclock
import machine  # noqa: F401 - the virtual board's
import watchdog
from mptest import eq


def _fresh():
    vboard.reset()
    vclock.reset(0)
    vboard.board.clock = vclock.now_us
    watchdog._state.wdt = None
    watchdog._state.keeper = None


def _idle(seconds):
    # Time passes with nobody feeding by hand; the board catches up as on any machine call.
    for _ in range(int(seconds * 10)):
        time.sleep_ms(100)
        vboard.board.sync()


def test_the_keeper_holds_the_board_up_at_the_repl():
    _fresh()
    watchdog.keep_alive(0)
    _idle(10)
    eq(vboard.board.wdt_expired, False)


def test_after_take_over_a_hung_loop_resets_the_board():
    _fresh()
    watchdog.keep_alive(0)
    wdt = watchdog.take_over()
    _idle(1)
    eq(vboard.board.wdt_expired, False)  # fed at take-over, 2 s timeout
    _idle(1.5)
    eq(vboard.board.wdt_expired, True)
    del wdt


def test_a_feeding_loop_keeps_it_up_and_handing_back_restarts_the_keeper():
    _fresh()
    watchdog.keep_alive(0)
    wdt = watchdog.take_over()
    for _ in range(50):
        time.sleep_ms(100)
        wdt.feed()
    eq(vboard.board.wdt_expired, False)
    watchdog.keep_alive(0)  # Ctrl-C: back to the REPL
    _idle(5)
    eq(vboard.board.wdt_expired, False)
