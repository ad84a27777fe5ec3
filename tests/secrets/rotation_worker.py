"""A long-running opsdesk process for the cross-process rotation test and the benchmark.

Reads one secret in a tight loop (as a busy web worker would) and prints, as JSON lines, when its
rotation listener is subscribed and every time the value's fingerprint changes. Prints
fingerprints, never values. Stops when stdin closes.
"""
import json
import os
import sys
import threading
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ops_project.settings")

import django  # noqa: E402

django.setup()

from secrets_app import default_manager, get_secret  # noqa: E402


def main(name: str) -> None:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    listener = default_manager.rotation_listener
    if listener is not None:
        listener.ready.wait(10)
    last = default_manager.fingerprint(get_secret(name))
    print(json.dumps({"event": "ready", "fingerprint": last, "listener": listener is not None}), flush=True)
    while not stop.is_set():
        for _ in range(1000):
            fingerprint_source = get_secret(name)
        fingerprint = default_manager.fingerprint(fingerprint_source)
        if fingerprint != last:
            last = fingerprint
            print(json.dumps({"event": "changed", "fingerprint": fingerprint, "at": time.time()}), flush=True)
        time.sleep(0.005)


if __name__ == "__main__":
    main(sys.argv[1])
