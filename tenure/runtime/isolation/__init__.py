"""Where synchronous bodies run: inline, in a thread, or in a killable worker process."""
