# Seeed Studio XIAO ESP32S3 on the NeedleTrack clip (hardware/pinout.md).
from micropython import const

NAME = "xiao_esp32s3"
I2C_ID = const(0)
I2C_SDA = const(5)  # D4
I2C_SCL = const(6)  # D5
I2C_FREQ = const(1000000)  # both chips allow Fast-mode Plus; a short bus on the clip carries it
IMU_ADDR = const(0x6A)
IMU_INT1 = const(2)  # D1, FIFO watermark interrupt
HALL_A_ADDR = const(0x35)  # TMAG5273A1, near the guide entry: the shallow half of the stroke
HALL_B_ADDR = const(0x22)  # TMAG5273B1, near the guide exit: the deep half
LED_PIN = const(3)  # D2, one WS2812B
MOTOR_PIN = const(4)  # D3, vibration motor through a low-side MOSFET
BATTERY_ADC = const(1)  # A0, LiPo through a 1:2 divider
BATTERY_DIVIDER = const(2)
FEED_TIMER_ID = const(0)  # hardware timer 0: feeds the watchdog while the sampling loop is not running
# IMU axes to probe body axes: body axis i = sign * chip axis index. The LSM6DSOX sits on the clip's board with
# its X along the array (lateral), Y out of the image plane and Z pointing into the tissue.
IMU_AXES = (0, 1, 2)
IMU_SIGNS = (1, 1, 1)
