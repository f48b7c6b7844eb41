# Runs at every boot and soft reset, before main.py, and alone when mpremote soft-resets into its raw REPL.
import boards
import watchdog

watchdog.keep_alive(boards.select().FEED_TIMER_ID)
