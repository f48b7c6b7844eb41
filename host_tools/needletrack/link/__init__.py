"""Links from the device to the host: BLE (bleak, bumble) and serial lines."""
