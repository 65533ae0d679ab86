"""Helper process for tests/store/test_concurrent_writers.py: open the event store and the MLflow registry the way
`driftpilot serve` does, at the same moment as its siblings.

    python tests/store/open_together.py --store-url URL --tracking-uri URI --go FILE [--root REPO]

It imports everything first, then waits (bounded) until FILE exists, so that N copies reach the set-up together.
Exit 0 and "ok" on stdout when both opened; exit 1 with driftpilot's one-line error; anything else is a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store-url", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--go", required=True, type=Path)
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2]))
    args = parser.parse_args()
    sys.path.insert(0, args.root)

    from controller.clock import SystemClock
    from controller.errors import DriftpilotError
    from controller.store import EventStore
    from lineage import ModelRegistry, RegistrySettings
    from lineage.errors import LineageError

    deadline = time.monotonic() + 60
    while not args.go.exists():  # a bounded poll: the test creates the file once every copy is waiting
        if time.monotonic() > deadline:
            print(f"no go file {args.go} after 60 s", file=sys.stderr)
            return 2
        time.sleep(0.005)
    try:
        store = EventStore.from_url(args.store_url, SystemClock())
        store.ping()
        ModelRegistry.connect(RegistrySettings(tracking_uri=args.tracking_uri, experiment="driftpilot/together",
                                               artifact_location=str(args.go.parent / "mlartifacts")),
                              clock=SystemClock())
    except (DriftpilotError, LineageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
