# NeedleTrack firmware entry point: runs after boot.py on power-up and soft reset, until interrupted (Ctrl-C).
# The firmware itself is app.py in the active slot; see boot.py for the slots.
import sys


def _use_slot():
    # The same as boot.py's: main.py must find the firmware after any boot.py, including one replaced by hand.
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
            sys.path.insert(0, "/" + slot)
        return


def _run():
    _use_slot()
    import app

    app.main()


_run()
