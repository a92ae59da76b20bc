"""``python -m emulator``: serve the local Gemini API emulator."""

from __future__ import annotations

import argparse
import sys

from . import ScenarioError, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--scenario", default="default", help="default, clean, or a JSON/YAML file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--webhook-secret", default=None)
    args = parser.parse_args(argv)
    try:
        serve(
            host=args.host,
            port=args.port,
            scenario=args.scenario,
            seed=args.seed,
            webhook_url=args.webhook_url,
            webhook_secret=args.webhook_secret,
        )
    except ScenarioError as exc:  # a mistake of the user's: one line, exit 1
        sys.exit(f"error: {exc}")
    except OSError as exc:
        sys.exit(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")


if __name__ == "__main__":
    main()
