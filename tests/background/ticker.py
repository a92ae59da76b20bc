"""One background tick released on a signal, for running ticks side by side.

``python -m tests.background.ticker PIPELINE DAY`` imports everything a tick needs, prints
``ready``, waits for one line on stdin, runs the ``tick`` flow (a real Prefect flow run,
against ``PREFECT_API_URL``), prints its report as JSON and exits. A test starts several and
writes ``go`` to all of them at once, so the ticks overlap instead of queueing behind their
imports.
"""

from __future__ import annotations

import json
import sys
from datetime import date


def main() -> None:
    pipeline, day = sys.argv[1], date.fromisoformat(sys.argv[2])
    from flows.tick import tick

    print("ready", flush=True)
    sys.stdin.readline()
    report = tick(pipeline=pipeline, day=day)
    print(json.dumps(report.as_dict()), flush=True)


if __name__ == "__main__":
    main()
