# What the clip tells the clinician without a look away from the image: one RGB LED (WS2812B) and a vibration
# motor. The pattern follows the device's state; update() is cheap and writes the LED only when it changes.
import machine
import time
from micropython import const

import packet

# WS2812B bit timing in ns: (T0H, T0L, T1H, T1L), for machine.bitstream.
_WS2812_TIMING = (400, 850, 800, 450)

OFF = (0, 0, 0)
GREEN = (0, 40, 0)  # streaming to a host
BLUE = (0, 0, 40)  # waiting for a host
AMBER = (60, 25, 0)  # the tip is within the margin of the no-go depth
RED = (80, 0, 0)  # at or past the no-go depth; or a sensor fault (blinking)
WHITE = (40, 40, 40)  # identify

_BLINK_MS = const(250)
_BUZZ_REACHED_MS = const(400)  # one pulse when the no-go depth is reached; nothing else buzzes while needling


class Feedback:
    def __init__(self, led_pin, motor_pin):
        self.led = machine.Pin(led_pin, machine.Pin.OUT)
        self.motor = machine.Pin(motor_pin, machine.Pin.OUT, value=0)
        self.grb = bytearray(3)
        self.colour = None
        self.epoch = time.ticks_ms()
        self.buzz_until = self.epoch
        self.identify_until = self.buzz_until
        self.was_reached = False
        self.show(OFF)

    def show(self, rgb):
        if rgb == self.colour:
            return
        self.colour = rgb
        self.grb[0] = rgb[1]
        self.grb[1] = rgb[0]
        self.grb[2] = rgb[2]
        machine.bitstream(self.led, 0, _WS2812_TIMING, self.grb)

    def buzz(self, ms):
        self.motor.value(1)
        self.buzz_until = time.ticks_add(time.ticks_ms(), ms)

    def identify(self, seconds):
        self.identify_until = time.ticks_add(time.ticks_ms(), seconds * 1000)
        self.buzz(300)

    def update(self, flags, connected):
        now = time.ticks_ms()
        blink_on = (time.ticks_diff(now, self.epoch) // _BLINK_MS) & 1
        reached = bool(flags & packet.F_NOGO_REACHED)
        if reached and not self.was_reached:
            self.buzz(_BUZZ_REACHED_MS)
        self.was_reached = reached
        if time.ticks_diff(now, self.buzz_until) >= 0:
            self.motor.value(0)
        if time.ticks_diff(self.identify_until, now) > 0:
            self.show(WHITE if blink_on else OFF)
        elif flags & (packet.F_IMU_FAULT | packet.F_HALL_FAULT):
            self.show(RED if blink_on else OFF)
        elif reached:
            self.show(RED)
        elif flags & packet.F_NOGO_NEAR:
            self.show(AMBER)
        else:
            self.show(GREEN if connected else BLUE)
