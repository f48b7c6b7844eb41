# The host tests check host software (links, viewer, fusion, flashing, the demo's outputs) against a virtual probe
# that holds its rate: the firmware's compute, bus and flash time free ("ideal"). What each board charges, and
# whether the firmware keeps up there, is checked by tests/host/test_board_model.py and the HIL suite ("board").
HOST_TEST_CPU = "ideal"
