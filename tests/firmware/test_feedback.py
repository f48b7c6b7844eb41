# The LED and the motor follow the device's state.
import time
import vboard
import vclock
import machine  # noqa: F401 - the virtual board's
import packet
from feedback import AMBER, BLUE, GREEN, RED, Feedback
from mptest import eq

LED = 3
MOTOR = 4


def _fb():
    vboard.reset()
    vclock.reset(0)
    vboard.board.clock = vclock.now_us
    return Feedback(LED, MOTOR)


def _grb(rgb):
    return bytes((rgb[1], rgb[0], rgb[2]))


def test_colour_follows_connection_and_nogo():
    fb = _fb()
    fb.update(0, False)
    eq(vboard.board.bitstreams[LED], _grb(BLUE))
    fb.update(0, True)
    eq(vboard.board.bitstreams[LED], _grb(GREEN))
    fb.update(packet.F_NOGO_NEAR, True)
    eq(vboard.board.bitstreams[LED], _grb(AMBER))
    fb.update(packet.F_NOGO_REACHED, True)
    eq(vboard.board.bitstreams[LED], _grb(RED))


def test_reaching_the_nogo_depth_buzzes_once():
    fb = _fb()
    fb.update(0, True)
    eq(vboard.board.pin_level(MOTOR), 0)
    fb.update(packet.F_NOGO_REACHED, True)
    eq(vboard.board.pin_level(MOTOR), 1)
    time.sleep_ms(450)
    fb.update(packet.F_NOGO_REACHED, True)
    eq(vboard.board.pin_level(MOTOR), 0)  # one pulse, not a continuous buzz while it stays reached


def test_a_sensor_fault_blinks_red():
    fb = _fb()
    seen = set()
    for _ in range(8):
        fb.update(packet.F_HALL_FAULT, True)
        seen.add(vboard.board.bitstreams[LED])
        time.sleep_ms(130)
    eq(seen, {_grb(RED), _grb((0, 0, 0))})
