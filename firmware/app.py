# The firmware proper: the device, its serial link and the sampling loop, until Ctrl-C. main.py runs it from
# the active firmware slot (boot.py explains the slots).
import log
from device import Device
from serial_link import SerialLink


def main():
    dev = Device()
    log.line(dev.banner())
    dev.links.append(SerialLink(dev.ring))
    try:
        from ble_link import BleLink

        ble = BleLink(dev, firmware=dev.version)
        dev.links.append(ble)
        log.note("BLE: advertising as " + ble.name)
    # A board without a radio, or whose stack refuses what the link asks of it (ValueError: a config key it does
    # not have), still streams on its serial console.
    except (ImportError, OSError, ValueError) as e:
        log.note("no BLE: %s" % e)
    dev.start()
    try:
        dev.run()
    except KeyboardInterrupt:
        dev.stop()
        log.note("stopped")
