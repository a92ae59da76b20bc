"""Requests per second the emulator serves to concurrent SDK clients calling interactions.get.

    .venv/bin/python -m bench.emulator [--clients 32] [--seconds 5] [--mode async|threads|raw]
                                       [--procs 2] [--parse raw|model]
    .venv/bin/python -m bench.emulator --mode raw   # same load without the SDK

Starts the emulator as a subprocess (emulator.testing.RunningEmulator), creates one completed
interaction per client, then has ``--clients`` google-genai clients call
``interactions.get(id)`` in a loop for ``--seconds``, spread over ``--procs`` load-generating
processes. Prints the figure measured by the clients and the one counted by the emulator.

``--parse raw`` (the default) reads each answer as the background poller does: the SDK's
``with_raw_response`` and orjson (flows/channels/_interactions.py). ``--parse model`` lets the SDK
build its pydantic ``Interaction``: it creates a model *class* per response, ~6 ms of CPU per
``get``, so on a 2-core machine the clients, not the emulator, are then the bottleneck.
``--mode raw`` sends the same GETs over keep-alive HTTP/1.1 without the SDK, to show the
emulator's own ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from emulator.testing import RunningEmulator
from flows.testing import fetch_json

MODEL = "gemini-2.5-flash"
ROUTE = "GET /v1/interactions/{id}"


def _make_client(base_url: str) -> Any:
    from google import genai
    from google.genai import types

    return genai.Client(
        api_key="bench-key",
        http_options=types.HttpOptions(
            base_url=base_url, retry_options=types.HttpRetryOptions(attempts=1)
        ),
    )


def _status_sync(client: Any, iid: str, parse: str) -> str:
    if parse == "model":
        return str(client.interactions.get(iid).status)
    response = client.interactions.with_raw_response.get(iid)
    return str(orjson.loads(response.read())["status"])


async def _status_async(client: Any, iid: str, parse: str) -> str:
    if parse == "model":
        return str((await client.aio.interactions.get(iid)).status)
    # Exactly what the background poller does (flows/channels/_interactions.py).
    return str((await fetch_json(client.aio.interactions.with_raw_response.get, iid))["status"])


async def _async_load(
    base_url: str, clients: int, seconds: float, parse: str
) -> tuple[int, float, list[float]]:
    sdk = [_make_client(base_url) for _ in range(clients)]
    ids = [
        (await c.aio.interactions.create(model=MODEL, input=f"bench {i}", background=True)).id
        for i, c in enumerate(sdk)
    ]
    for c, iid in zip(sdk, ids, strict=True):  # warm up: complete and open connections
        await _status_async(c, iid, parse)
    latencies: list[float] = []
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: Any, iid: str) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status = await _status_async(client, iid, parse)
            latencies.append(time.perf_counter() - t0)
            assert status == "completed", status
            count += 1

    start = time.perf_counter()
    await asyncio.gather(*[worker(c, i) for c, i in zip(sdk, ids, strict=True)])
    elapsed = time.perf_counter() - start
    for c in sdk:
        await c.aio.aclose()
    return count, elapsed, latencies


def _in_threads(
    clients: int, seconds: float, call: Callable[[int], None]
) -> tuple[int, float, list[float]]:
    """Run ``call(n)`` in a loop on ``clients`` threads for ``seconds``; count and time it."""
    latencies: list[float] = []
    counts = [0] * clients
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(n: int) -> None:
        local: list[float] = []
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            call(n)
            local.append(time.perf_counter() - t0)
            counts[n] += 1
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - start, latencies


def _thread_load(
    base_url: str, clients: int, seconds: float, parse: str
) -> tuple[int, float, list[float]]:
    sdk = [_make_client(base_url) for _ in range(clients)]
    ids = [
        c.interactions.create(model=MODEL, input=f"bench {i}", background=True).id
        for i, c in enumerate(sdk)
    ]
    for c, iid in zip(sdk, ids, strict=True):
        _status_sync(c, iid, parse)

    def call(n: int) -> None:
        assert _status_sync(sdk[n], ids[n], parse) == "completed"

    return _in_threads(clients, seconds, call)


def _raw_load(base_url: str, clients: int, seconds: float) -> tuple[int, float, list[float]]:
    """The emulator's own ceiling: keep-alive HTTP/1.1 sockets, no SDK in the way."""
    import http.client

    host, port = base_url.removeprefix("http://").split(":")
    sdk = _make_client(base_url)
    iid = sdk.interactions.create(model=MODEL, input="bench", background=True).id
    sdk.interactions.get(iid)
    conns = [http.client.HTTPConnection(host, int(port)) for _ in range(clients)]

    def call(n: int) -> None:
        conns[n].request("GET", f"/v1/interactions/{iid}", headers={"x-goog-api-key": "k"})
        conns[n].getresponse().read()

    try:
        return _in_threads(clients, seconds, call)
    finally:
        for conn in conns:
            conn.close()


def _run(args: tuple[str, str, str, int, float]) -> tuple[int, float, list[float]]:
    base_url, mode, parse, clients, seconds = args
    if mode == "raw":
        return _raw_load(base_url, clients, seconds)
    if mode == "threads":
        return _thread_load(base_url, clients, seconds, parse)
    return asyncio.run(_async_load(base_url, clients, seconds, parse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mode", choices=["async", "threads", "raw"], default="async")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument(
        "--parse",
        choices=["raw", "model"],
        default="raw",
        help="raw: with_raw_response + orjson, as the background poller reads interactions; "
        "model: the SDK's pydantic Interaction (it builds a model class per response)",
    )
    args = parser.parse_args()
    per_proc = [
        args.clients // args.procs + (i < args.clients % args.procs) for i in range(args.procs)
    ]
    with RunningEmulator(scenario="clean") as emu:
        jobs = [(emu.base_url, args.mode, args.parse, n, args.seconds) for n in per_proc if n]
        if len(jobs) == 1:
            results = [_run(jobs[0])]
        else:
            with mp.get_context("spawn").Pool(len(jobs)) as pool:
                results = pool.map(_run, jobs)
        served = emu.stats()["requests"].get(ROUTE, 0)
    total = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results)
    lat = sorted(x for r in results for x in r[2])
    p50 = lat[len(lat) // 2] * 1000 if lat else 0.0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0
    print(
        f"interactions.get: {args.clients} {'raw HTTP' if args.mode == 'raw' else 'SDK'} clients "
        f"({args.mode}, {len(jobs)} process(es)), "
        f"{elapsed:.1f} s"
    )
    print(f"  requests completed by clients: {total}  ->  {total / elapsed:,.0f} req/s")
    print(f"  requests counted by emulator:  {served} (includes warm-up gets)")
    print(f"  latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
