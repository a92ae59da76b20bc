"""Requests per second the emulator serves to concurrent SDK clients calling interactions.get.

    .venv/bin/python bench/emulator.py [--clients 32] [--seconds 5] [--mode threads|async|raw]
                                      [--procs 1]
    .venv/bin/python bench/emulator.py --mode raw   # same load without the SDK

``--mode raw`` sends the same GETs over keep-alive HTTP/1.1 connections without the SDK, to
show the emulator's own ceiling: the google-genai interactions client spends ~6 ms of CPU per
``get`` (it builds a pydantic model per response), which caps one client process at ~150/s on
a 2-core machine whatever the server does.

Starts the emulator as a subprocess (emulator.testing.RunningEmulator), creates one completed
interaction per client, then has ``--clients`` google-genai clients call
``client.interactions.get(id)`` in a loop for ``--seconds``. With ``--procs N`` the clients are
spread over N load-generating processes (the SDK's own per-call cost is high, so on a small
machine one client process can be the bottleneck rather than the emulator). Prints the figure
measured by the clients and the one counted by the emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.testing import RunningEmulator

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


async def _async_load(
    base_url: str, clients: int, seconds: float
) -> tuple[int, float, list[float]]:
    sdk = [_make_client(base_url) for _ in range(clients)]
    ids = [
        (await c.aio.interactions.create(model=MODEL, input=f"bench {i}", background=True)).id
        for i, c in enumerate(sdk)
    ]
    for c, iid in zip(sdk, ids, strict=True):  # warm up: complete and open connections
        await c.aio.interactions.get(iid)
    latencies: list[float] = []
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: Any, iid: str) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            got = await client.aio.interactions.get(iid)
            latencies.append(time.perf_counter() - t0)
            assert got.status == "completed"
            count += 1

    start = time.perf_counter()
    await asyncio.gather(*[worker(c, i) for c, i in zip(sdk, ids, strict=True)])
    elapsed = time.perf_counter() - start
    for c in sdk:
        await c.aio.aclose()
    return count, elapsed, latencies


def _thread_load(base_url: str, clients: int, seconds: float) -> tuple[int, float, list[float]]:
    sdk = [_make_client(base_url) for _ in range(clients)]
    ids = [
        c.interactions.create(model=MODEL, input=f"bench {i}", background=True).id
        for i, c in enumerate(sdk)
    ]
    for c, iid in zip(sdk, ids, strict=True):
        c.interactions.get(iid)
    latencies: list[float] = []
    counts = [0] * clients
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(n: int) -> None:
        local: list[float] = []
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            sdk[n].interactions.get(ids[n])
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


def _raw_load(base_url: str, clients: int, seconds: float) -> tuple[int, float, list[float]]:
    """The emulator's own ceiling: keep-alive HTTP/1.1 sockets, no SDK in the way."""
    import http.client

    host, port = base_url.removeprefix("http://").split(":")
    sdk = _make_client(base_url)
    iid = sdk.interactions.create(model=MODEL, input="bench", background=True).id
    sdk.interactions.get(iid)
    counts = [0] * clients
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection(host, int(port))
        local: list[float] = []
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            conn.request("GET", f"/v1/interactions/{iid}", headers={"x-goog-api-key": "k"})
            resp = conn.getresponse()
            resp.read()
            local.append(time.perf_counter() - t0)
            counts[n] += 1
        conn.close()
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - start, latencies


def _run(args: tuple[str, str, int, float]) -> tuple[int, float, list[float]]:
    base_url, mode, clients, seconds = args
    if mode == "raw":
        return _raw_load(base_url, clients, seconds)
    if mode == "threads":
        return _thread_load(base_url, clients, seconds)
    return asyncio.run(_async_load(base_url, clients, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mode", choices=["async", "threads", "raw"], default="threads")
    parser.add_argument("--procs", type=int, default=1)
    args = parser.parse_args()
    per_proc = [
        args.clients // args.procs + (i < args.clients % args.procs) for i in range(args.procs)
    ]
    with RunningEmulator(scenario="clean") as emu:
        jobs = [(emu.base_url, args.mode, n, args.seconds) for n in per_proc if n]
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
