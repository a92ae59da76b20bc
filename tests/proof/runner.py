"""One tick released on a signal, for starting several ticks at the same moment.

``python -m tests.proof.runner SPEC DAY`` imports everything a tick needs (the CLI's tick
path: ``flows.tick`` and the channel's flow module), prints ``ready``, waits for one line
on stdin, runs the tick (a real Prefect flow run against ``PREFECT_API_URL``), prints its
report as JSON and exits. Without the wait, ticks would queue behind their imports (a few
seconds each) and never overlap.
"""

from __future__ import annotations

import json
import sys
from datetime import date


def main() -> None:
    spec, day = sys.argv[1], date.fromisoformat(sys.argv[2])
    import flows.channels.background
    import flows.channels.batch
    import flows.channels.direct  # noqa: F401  (imported before the signal, not after)
    from flows.registry import get_pipeline
    from flows.settings import load_settings
    from flows.tick import run_tick

    get_pipeline(spec, load_settings())
    print("ready", flush=True)
    sys.stdin.readline()
    report = run_tick(spec, day=day)
    print(json.dumps(report.as_dict(), default=str), flush=True)


if __name__ == "__main__":
    main()
