"""Auth, error bodies, the control routes, scenarios and the in-process app."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.genai import errors
from starlette.testclient import TestClient

from emulator import BUILTINS, Scenario, ScenarioError, create_app, load_scenario
from emulator.testing import RunningEmulator

from .helpers import MODEL, request_for

GEN = f"/v1/models/{MODEL}:generateContent"


def test_missing_api_key_gets_403_body(emu: RunningEmulator) -> None:
    """No or empty x-goog-api-key: the real API's 403 PERMISSION_DENIED JSON body."""
    for headers in ({}, {"x-goog-api-key": ""}):
        resp = httpx.post(emu.base_url + GEN, json=request_for("hi"), headers=headers)
        assert resp.status_code == 403
        assert resp.json()["error"]["status"] == "PERMISSION_DENIED"
    assert emu.stats()["submissions"] == {}


def test_unknown_route_and_malformed_json(emu: RunningEmulator) -> None:
    """Unknown routes get a 404 JSON body, malformed JSON a 400 INVALID_ARGUMENT body."""
    key = {"x-goog-api-key": "k"}
    resp = httpx.get(emu.base_url + "/v1/nothing/here", headers=key)
    assert resp.status_code == 404 and resp.json()["error"]["status"] == "NOT_FOUND"
    resp = httpx.post(emu.base_url + GEN, content=b"{not json", headers=key)
    assert resp.status_code == 400 and resp.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert emu.stats()["requests"] == {
        "GET {unknown}": 1,
        "POST /v1/models/{model}:generateContent": 1,
    }


def test_sdk_sees_not_found_as_client_error(client: Any) -> None:
    """A batch that does not exist raises ClientError 404 through the SDK."""
    with pytest.raises(errors.ClientError) as info:
        client.batches.get(name="batches/nope")
    assert info.value.code == 404


def test_stats_count_exactly_and_reset_clears(emu: RunningEmulator, client: Any) -> None:
    """Stats count requests, submissions and billing exactly; reset clears them all."""
    emu.set_scenario({"scripts": [{"match": "bad", "steps": ["503"]}]})
    for key in ("a", "a", "bad"):
        with contextlib.suppress(errors.ServerError):
            client.models.generate_content(
                model=MODEL,
                contents="abcdefgh",  # 2 prompt tokens
                config={"http_options": {"headers": {"x-gemini-ledger-key": key}}},
            )
    stats = emu.stats()
    assert stats["requests"] == {"POST /v1/models/{model}:generateContent": 3}
    assert stats["submissions"] == {"a": 2, "bad": 1}
    assert stats["billed"]["generate_calls"] == 2
    assert stats["billed"]["prompt_tokens"] == 4
    emu.reset()
    stats = emu.stats()
    assert stats["requests"] == {} and stats["submissions"] == {}
    assert set(stats["billed"].values()) == {0}
    assert stats["batches_created"] == stats["interactions_created"] == stats["webhooks_sent"] == 0


def test_scenario_refuses_unknown_fields(emu: RunningEmulator, tmp_path: Path) -> None:
    """Unknown scenario fields are refused with a message naming them (file and runtime)."""
    with pytest.raises(ValueError, match="rate_4290"):
        emu.set_scenario({"rate_4290": 0.5})
    with pytest.raises(ValueError, match="latency_ms"):
        emu.set_scenario({"latency_ms": {"nope": 5}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("rate_429: 0.1\nbogus: true\n")
    with pytest.raises(ScenarioError, match="bogus"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="no built-in"):
        load_scenario("no-such-scenario")


def test_load_scenario_files_and_builtins(tmp_path: Path) -> None:
    """Built-ins load by name; YAML and JSON files load with latency shorthands."""
    assert load_scenario("clean") == Scenario(name="clean")
    default = load_scenario("default")
    assert default.empty_when_no_letters and default.rate_429 > 0 and default.rate_missing > 0
    assert set(BUILTINS) == {"clean", "default"}
    yml = tmp_path / "night.yaml"
    yml.write_text(
        "rate_503: 0.2\n"
        "latency_ms:\n  interactions.get: 50\n  generate: {mean: 20, jitter: 10}\n"
        "scripts:\n  - match: 'reviews:*'\n    steps: ['503', '503', ok]\n"
    )
    sc = load_scenario(yml)
    assert sc.name == "night" and sc.rate_503 == 0.2
    assert sc.latency_ms["interactions.get"].mean == 50
    assert sc.latency_ms["generate"].jitter == 10
    assert sc.scripts[0].steps == ["503", "503", "ok"]
    js = tmp_path / "s.json"
    js.write_text(json.dumps({"batch_job_outcomes": ["FAILED"]}))
    assert load_scenario(js).batch_job_outcomes == ["FAILED"]


def test_subprocess_with_scenario_file(tmp_path: Path) -> None:
    """RunningEmulator starts a subprocess from a scenario mapping and reports it in stats."""
    with RunningEmulator(scenario={"name": "mine", "rate_400": 1.0}, seed=3) as other:
        stats = other.stats()
        assert stats["scenario"] == "mine" and stats["seed"] == 3
        client = other.client()  # keep a reference: a collected Client closes its transport
        with pytest.raises(errors.ClientError) as info:
            client.models.generate_content(model=MODEL, contents="x")
        assert info.value.code == 400
        assert other.env()["GOOGLE_GEMINI_BASE_URL"] == other.base_url


def test_in_process_app_with_injected_clock() -> None:
    """create_app runs in process; batch_seconds_to_complete follows the injected clock."""
    now = [1_000_000.0]
    app = create_app(scenario=Scenario(batch_seconds_to_complete=60), clock=lambda: now[0])
    key = {"x-goog-api-key": "k"}
    with TestClient(app) as http:
        body = {"batch": {"displayName": "t", "inputConfig": {"requests": {"requests": [
            {"request": request_for("hi"), "metadata": {"key": "k1"}}
        ]}}}}  # fmt: skip
        op = http.post(f"/v1beta/models/{MODEL}:batchGenerateContent", json=body, headers=key)
        name = op.json()["name"]
        assert http.get(f"/v1beta/{name}", headers=key).json()["metadata"]["state"] == (
            "BATCH_STATE_RUNNING"
        )
        now[0] += 61
        got = http.get(f"/v1beta/{name}", headers=key).json()
        assert got["done"] and got["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
        inlined = got["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
        assert inlined[0]["metadata"] == {"key": "k1"}


def test_shipped_example_scenario_loads() -> None:
    """The example scenario shipped in emulator/scenarios/ is valid."""
    path = Path(__import__("emulator").__file__).parent / "scenarios" / "example.yaml"
    sc = load_scenario(path)
    assert sc.name == "example" and sc.scripts[0].steps == ["503", "503", "ok"]
    assert sc.latency_ms["interactions.get"].mean == 5
