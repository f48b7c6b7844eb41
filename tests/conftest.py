pytest_plugins = ["tests.mpy_harness"]
