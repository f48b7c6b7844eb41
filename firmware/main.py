# NeedleTrack firmware entry point: runs on power-up and after a soft reset, until interrupted (Ctrl-C).
from device import Device
from serial_link import SerialLink


def main():
    dev = Device()
    print(dev.banner())
    dev.links.append(SerialLink(dev.ring))
    dev.start()
    try:
        dev.run()
    except KeyboardInterrupt:
        dev.stop()
        print("# stopped")


main()
