"""A worker process for the concurrency tests: claims jobs until none are left.

Prints "ready", waits for "go" on stdin (so both workers start together), then claims in
small chunks and prints the claimed keys as one JSON list.
"""

from __future__ import annotations

import sys
import uuid

import orjson

from ledger import Ledger


def main(url: str, chunk: int) -> None:
    ledger = Ledger(url)
    print("ready", flush=True)
    sys.stdin.readline()
    claimed: list[str] = []
    while True:
        token = f"w-{uuid.uuid4().hex[:8]}"
        if ledger.reserve(pipeline="p", limit=chunk, reservation=token) == 0:
            break
        claimed.extend(r.key for r in ledger.reserved(token))
    print(orjson.dumps(claimed).decode(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
