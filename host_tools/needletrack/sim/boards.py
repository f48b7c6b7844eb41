"""What each board charges the firmware: the virtual probe's board profiles, in one place.

A profile is what a board's MicroPython port gives the firmware and what it costs: the CPU (the RP2040 scale from
``sim/mpy/kernel-rp2040.json``, and the factor from the RP2040 to this board), the I2C master's limits, the flash
chip's write times, the free heap at ``main.py``, which timer ids and ADC pins the port accepts, how it reports an
address nobody answers, and its BLE stack. ``session.json`` carries the profile to ``sim/mpy/vprobe.py``.

Measured figures and assumptions are marked as such; a measurement on a board replaces an assumption here and
nowhere else (docs/virtual-probe.md, "What a board costs", says where each comes from).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# A 64-bit MicroPython (the unix port here) stores the same objects in about this many times the bytes of a
# 32-bit board's port: the free heap the firmware sees is the board's, scaled by it.
HEAP_64BIT_FACTOR = 1.42


@dataclass(frozen=True)
class BoardProfile:
    name: str
    mcu: str
    stack: str  # BLE host stack of the port: "btstack" (rp2, Pico W) or "nimble" (esp32)
    # Board compute time = RP2040-at-125-MHz compute time x this. The RP2040 figure itself is measured
    # (kernel-rp2040.json); the factor for another MCU is an assumption until measured there.
    cpu_vs_rp2040: float
    i2c_src_hz: int  # the clock the I2C divider is taken from (0: the port sets any rate exactly)
    i2c_max_hz: int  # the highest SCL the port's I2C master runs at
    i2c_reports_actual: bool  # machine.I2C's repr shows the rate set (rp2) rather than the one asked for
    i2c_nack_errno: int  # an address nobody answers
    flash_program_us: int  # page program (256 B), typical
    flash_erase_us: int  # 4 KB sector erase, typical
    heap_free_bytes: int  # gc.mem_free() at main.py on the board, BLE active
    timer_ids: tuple[int, int]  # lowest and highest machine.Timer id the port accepts
    adc_pins: tuple[int, ...]  # pins machine.ADC accepts
    adc_api: str  # "rp2": ADC(pin).read_u16() alone; "esp32": also atten, width, read, read_uv
    mpy_arch: str  # what `needletrack flash` compiles for on the board

    def session(self) -> dict[str, Any]:
        """The profile as session.json carries it to the virtual probe."""
        d = asdict(self)
        d["heap_64bit_factor"] = HEAP_64BIT_FACTOR
        return d


PROFILES = {
    "pico_w": BoardProfile(
        name="pico_w",
        mcu="RP2040 @ 125 MHz (Cortex-M0+), MicroPython rp2 port, RPI_PICO_W",
        stack="btstack",
        cpu_vs_rp2040=1.0,
        # pico-sdk's i2c_set_baudrate: period = round(clk_sys / freq), so the rate set is clk_sys / period;
        # the RP2040's I2C block is specified up to Fast-mode Plus, 1 MHz (and so are the LSM6DSOX and TMAG5273).
        i2c_src_hz=125_000_000,
        i2c_max_hz=1_000_000,
        i2c_reports_actual=True,
        i2c_nack_errno=5,  # EIO
        # Winbond W25Q16JV (Pico W): page program 0.4 ms typical, 4 KB sector erase 45 ms typical. The RP2040
        # runs from that flash: the whole chip stalls while it programs or erases.
        flash_program_us=400,
        flash_erase_us=45_000,
        heap_free_bytes=198_768,  # measured: gc.mem_free() at main.py, RPI_PICO_W v1.28, BLE active
        timer_ids=(-1, -1),  # ports/rp2/machine_timer.c: only the soft timer, -1
        adc_pins=(26, 27, 28, 29),  # GPIO26-29 (ADC0-3)
        adc_api="rp2",
        mpy_arch="armv6m",
    ),
    "xiao_esp32s3": BoardProfile(
        name="xiao_esp32s3",
        mcu="ESP32-S3 @ 240 MHz (Xtensa LX7), MicroPython esp32 port, ESP32_GENERIC_S3",
        stack="nimble",
        # Assumption, not measured here: published cross-board MicroPython benchmarks put the ESP32-S3 at 240
        # MHz 2.2-2.7x faster than an RP2040 at 125 MHz on interpreted code; we take 2.4.
        cpu_vs_rp2040=1 / 2.4,
        # ESP-IDF: "The clock frequency of SCL in master mode should not be larger than 400 kHz" (ESP32-S3).
        # The port passes any rate to the driver; above 400 kHz the bus is out of the chip's specification.
        i2c_src_hz=0,
        i2c_max_hz=400_000,
        i2c_reports_actual=False,
        i2c_nack_errno=19,  # ENODEV
        # Assumption: a QSPI NOR flash like the W25Q64 class (0.4-0.7 ms page program, 45 ms sector erase);
        # ESP-IDF suspends the caches while it writes, so code from flash (the VM) stalls as on the RP2040.
        flash_program_us=700,
        flash_erase_us=45_000,
        # Assumption: the XIAO's 8 MB octal PSRAM build, whose MicroPython heap is most of the PSRAM.
        heap_free_bytes=8_000_000,
        timer_ids=(-1, 3),  # ports/esp32/machine_timer.c: -1 (esp_timer) and the S3's 4 hardware timers
        adc_pins=tuple(range(1, 21)),  # ADC1 GPIO1-10, ADC2 GPIO11-20
        adc_api="esp32",
        mpy_arch="xtensawin",
    ),
}

DEFAULT = "xiao_esp32s3"
NAMES = tuple(PROFILES)
CPU_MODES = ("board", "ideal")


def profile(name: str) -> BoardProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}: one of {', '.join(NAMES)}") from None
