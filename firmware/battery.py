# LiPo battery level from the ADC behind the board's divider. Read about once a second, not per sample.
import machine

# Open-circuit LiPo voltage (mV) against charge (%), a typical single-cell discharge curve at light load.
_CURVE = ((3300, 0), (3500, 5), (3600, 10), (3700, 20), (3750, 30), (3790, 40), (3830, 50), (3870, 60),
          (3920, 70), (3980, 80), (4060, 90), (4200, 100))
LOW_PCT = 15


def percent(mv):
    if mv <= _CURVE[0][0]:
        return 0
    for i in range(1, len(_CURVE)):
        v1, p1 = _CURVE[i]
        if mv <= v1:
            v0, p0 = _CURVE[i - 1]
            return p0 + (p1 - p0) * (mv - v0) // (v1 - v0)
    return 100


class Battery:
    def __init__(self, pin, divider):
        self.adc = machine.ADC(machine.Pin(pin))
        if hasattr(self.adc, "atten"):
            self.adc.atten(machine.ADC.ATTN_11DB)  # ESP32: up to ~3.1 V at the pin
        self.divider = divider
        self.mv = 0
        self.pct = 255  # unknown until read

    def read(self):
        if hasattr(self.adc, "read_uv"):
            uv = self.adc.read_uv()  # ESP32: calibrated against the chip's eFuse reference
        else:
            uv = self.adc.read_u16() * 3300000 // 65535  # RP2040: 0..3.3 V full scale
        self.mv = uv * self.divider // 1000
        # Below 2.5 V nothing is connected (USB power, no cell): report unknown, not empty.
        self.pct = percent(self.mv) if self.mv >= 2500 else 255
        return self.pct

    @property
    def low(self):
        return self.pct != 255 and self.pct < LOW_PCT
