# Runs at every boot and soft reset, before main.py, and alone when mpremote soft-resets into its raw REPL.
#
# Where the firmware is. Two slots, /app-a and /app-b, each a complete firmware with its manifest.json, and
# /nt_app, a small file naming the slot to run. `needletrack flash` fills the other slot, reads it back, and
# then replaces /nt_app in one rename, so every boot finds one whole firmware: the old one or the new one
# (docs/flashing.md). A slot without its manifest (written last) is never run. Without /nt_app the firmware
# sits at the root, as a plain file copy leaves it. Only this file and main.py live at the root, as source
# (MicroPython runs no other file by itself); main.py finds the slot again, so that each works alone.
import sys


def _use_slot():
    try:
        with open("/nt_app") as f:
            name = f.read().strip()
    except OSError:
        return
    for slot in (name, "app-b" if name == "app-a" else "app-a"):
        try:
            open("/" + slot + "/manifest.json").close()
        except OSError:
            continue
        if "/" + slot not in sys.path:
            sys.path.insert(0, "/" + slot)  # ahead of the root: what a plain copy left there is not used
        return


def _keep_alive():
    # The watchdog keeper: fed while main.py is not running (raw REPL, flashing); see watchdog.py.
    import boards
    import watchdog

    watchdog.keep_alive(boards.select().FEED_TIMER_ID)


_use_slot()
_keep_alive()
