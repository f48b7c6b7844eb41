# Raspberry Pi Pico W on the NeedleTrack clip (hardware/pinout.md).
from micropython import const

NAME = "pico_w"
I2C_ID = const(0)
I2C_SDA = const(4)  # GP4, pin 6
I2C_SCL = const(5)  # GP5, pin 7
I2C_FREQ = const(1000000)
IMU_ADDR = const(0x6A)
IMU_INT1 = const(15)  # GP15
HALL_A_ADDR = const(0x35)
HALL_B_ADDR = const(0x22)
LED_PIN = const(16)  # GP16, one WS2812B
MOTOR_PIN = const(17)  # GP17
BATTERY_ADC = const(28)  # GP28/ADC2 with an external 1:2 divider (VSYS on GP29 shares the radio's SPI clock)
BATTERY_DIVIDER = const(2)
FEED_TIMER_ID = const(-1)  # the RP2040's virtual timer: feeds the watchdog while the sampling loop is not running
# The Pico W carrier mounts the IMU rotated 90 deg about Z: chip Y is the probe's lateral axis.
IMU_AXES = (1, 0, 2)
IMU_SIGNS = (1, -1, 1)
