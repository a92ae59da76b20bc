"""A pipeline's identity in the ledger: one name, one definition; enrollment says what it did."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from flows import registry
from flows.cli import app
from flows.identity import claim_pipeline
from flows.settings import Settings
from flows.testing import enroll_day, open_ledger
from ledger import Ledger, NewJob, PipelineConflict

runner = CliRunner()


@pytest.fixture
def project(tmp_path, monkeypatch, sqlite_url):
    """A project directory as the current one, its own SQLite ledger (the CLI's environment),
    a fresh registry."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


@pytest.fixture
def settings(sqlite_url) -> Settings:
    """The settings code in this process is handed: the project's ledger."""
    return Settings.given(database_url=sqlite_url)


def _claim(settings: Settings, spec: str):
    return claim_pipeline(spec, ledger=open_ledger(settings.database_url), settings=settings)


def _module(project, name: str, *, pipeline_name: str, model: str = "gemini-2.5-flash") -> str:
    (project / f"{name}.py").write_text(
        "from dataclasses import replace\n"
        "from pydantic import BaseModel\n"
        "from flows.examples.reviews import pipeline as _p\n"
        "class Other(BaseModel):\n"
        "    verdict: str\n"
        f"pipeline = replace(_p, name={pipeline_name!r}, model={model!r}, output=Other)\n"
    )
    sys.modules.pop(name, None)
    return f"{name}:pipeline"


def test_record_pipeline_new_same_changed_and_conflict(ledger_url):
    """A name is recorded once; the same definition may change; another one is refused."""
    ledger = Ledger(ledger_url)
    common = {"channel": "batch", "schema_fingerprint": "s1"}
    first = ledger.record_pipeline("p", spec="a:pipeline", model="m1", **common)
    again = ledger.record_pipeline("p", spec="a:pipeline", model="m1", **common)
    changed = ledger.record_pipeline("p", spec="a:pipeline", model="m2", **common)
    assert (first.outcome, again.outcome) == ("new", "same")
    assert (changed.outcome, changed.changed, changed.record.revision) == ("changed", ("model",), 2)
    with pytest.raises(PipelineConflict, match="belongs to a:pipeline"):
        ledger.record_pipeline("p", spec="b:pipeline", model="m2", **common)
    record = ledger.pipeline_record("p")
    assert record is not None and (record.spec, record.model, record.revision) == (
        "a:pipeline",
        "m2",
        2,
    )
    ledger.dispose()


def test_a_tick_of_another_pipeline_under_a_recorded_name_is_refused(
    project, settings, monkeypatch
):
    """`tick twin:pipeline` after `tick reviews`: one line naming the owner, nothing touched."""
    _claim(settings, "reviews")
    twin = _module(project, "twin", pipeline_name="reviews")
    import flows.tick

    monkeypatch.setattr(flows.tick, "run_tick", lambda *a, **k: pytest.fail("tick started"))
    result = runner.invoke(app, ["tick", twin])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "'reviews' belongs to flows.examples.reviews:pipeline" in result.output
    assert "its own name" in result.output
    ledger = Ledger(settings.database_url)
    assert ledger.counts().total == 0
    record = ledger.pipeline_record("reviews")
    assert record is not None and record.spec == "flows.examples.reviews:pipeline"


def test_a_deliberate_change_of_the_same_pipeline_is_recorded(project, settings):
    """Same module:attr with a new model: allowed, recorded with the next revision."""
    spec = _module(project, "mine", pipeline_name="mine", model="gemini-2.5-flash")
    _, first = _claim(settings, spec)
    _module(project, "mine", pipeline_name="mine", model="gemini-2.5-pro")
    _, second = _claim(settings, spec)
    assert first.outcome == "new"
    assert (second.outcome, second.changed, second.record.revision) == ("changed", ("model",), 2)
    assert second.record.model == "gemini-2.5-pro"


def test_a_process_with_only_the_name_finds_the_pipeline_from_the_ledger(project, settings):
    """A name the ledger recorded resolves to its module:attr in a process that never loaded
    it (the webhook receiver, replay, a reconcile deployment)."""
    spec = _module(project, "translate_mod", pipeline_name="translate")
    _claim(settings, spec)
    assert registry.get_pipeline("translate", settings).name == "translate"


def test_enrollment_counts_new_known_and_keys_of_another_pipeline(ledger_url):
    """Keys another pipeline owns are counted with examples and never taken over."""
    ledger = Ledger(ledger_url)
    ledger.enroll(
        [NewJob("k1", {"t": 1}), NewJob("k2", {"t": 2})], pipeline="a", channel="batch", model="m"
    )
    jobs = [NewJob("k2", {"t": 9}), NewJob("k3", {"t": 3})]
    first = ledger.enroll_counted(jobs, pipeline="b", channel="batch", model="m")
    again = ledger.enroll_counted(jobs, pipeline="b", channel="batch", model="m")
    assert (first.enrolled, first.already_known, first.foreign) == (1, 0, 1)
    assert first.foreign_examples == [("k2", "a")]
    assert (again.enrolled, again.already_known, again.foreign) == (0, 1, 1)
    k2 = ledger.get("k2")
    assert (k2.pipeline, k2.payload_dict) == ("a", {"t": 2})
    ledger.dispose()


def test_a_tick_warns_about_keys_another_pipeline_owns(project, settings, caplog):
    """A copy of a pipeline under a new name with the same key_of: a warning, not silence."""
    from dataclasses import replace
    from datetime import date

    from flows.examples.reviews import pipeline as reviews

    ledger = Ledger(settings.database_url)
    day = date(2026, 11, 29)
    enroll_day(ledger, reviews, day)
    copy = replace(reviews, name="reviews-copy")
    with caplog.at_level("WARNING"):
        out = enroll_day(ledger, copy, day)
    assert out.enrolled == 0 and out.foreign == 516 and len(out.foreign_examples) == 5
    assert "516 keys already belong to another pipeline" in caplog.text
    ledger.dispose()


def _revised_module(project, name: str, *, fields: str, channel: str = "BATCH") -> str:
    """A small pipeline whose output model has ``fields``; it delivers to a file."""
    (project / f"{name}.py").write_text(
        "import json\n"
        "from pathlib import Path\n"
        "from pydantic import BaseModel\n"
        "from flows.pipeline import Pipeline, Prompt\n"
        "from ledger import Channel\n"
        "class Label(BaseModel):\n"
        f"{fields}"
        "def deliver(key, result):\n"
        "    with Path(__file__).with_name('delivered.jsonl').open('a') as f:\n"
        "        f.write(json.dumps({'key': key, 'result': result.model_dump()}) + '\\n')\n"
        "pipeline = Pipeline(\n"
        f"    name={name!r}, model='gemini-2.5-flash', channel=Channel.{channel}, output=Label,\n"
        "    load_items=lambda day: [{'id': i, 'text': f'review {i}'} for i in range(6)],\n"
        "    key_of=lambda item, day: f'revised:{item[\"id\"]}',\n"
        "    build_prompt=lambda item: Prompt(text=item['text']),\n"
        "    on_result=deliver,\n"
        ")\n"
    )
    sys.modules.pop(name, None)
    return f"{name}:pipeline"


@pytest.mark.parametrize("channel", ["BATCH", "BACKGROUND"])
def test_answers_of_an_earlier_schema_are_sent_again_not_parked(
    project, settings, emulator, prefect_api, monkeypatch, channel
):
    """Jobs sent under schema v1, collected after a deliberate change to v2: no row is
    parked `schema`; each is sent again under v2 and delivered in v2's shape."""
    import json
    from datetime import date

    from flows.tick import tick
    from ledger import Status

    monkeypatch.delenv("GEMINI_LEDGER_CRASH_AT", raising=False)
    emulator.set_scenario({"batch_polls_to_complete": 1})
    day = date(2026, 11, 29)
    spec = _revised_module(project, "revised", fields="    label: str\n", channel=channel)
    tick(pipeline=spec, day=day)
    ledger = Ledger(settings.database_url)
    assert ledger.counts(pipeline="revised").by_status == {Status.SUBMITTED: 6}

    # The deliberate change: a field every v1 answer lacks.
    _revised_module(
        project, "revised", fields="    label: str\n    severity: int\n", channel=channel
    )
    for _ in range(8):
        tick(pipeline=spec, day=day)
        by_status = ledger.counts(pipeline="revised").by_status
        assert not by_status.get(Status.PARKED), [j.error_class for j in ledger.jobs()]
        if by_status.get(Status.CONSUMED) == 6:
            break
    record = ledger.pipeline_record("revised")
    assert record is not None and record.revision == 2
    jobs = ledger.jobs(pipeline="revised")
    assert {j.status for j in jobs} == {Status.CONSUMED}
    # Sent twice (both billed), the first not counted against the caps, no failure recorded.
    assert {(j.attempts, j.attempts_base, j.schema_revision, j.error_class) for j in jobs} == {
        (2, 1, 2, None)
    }
    delivered = [
        json.loads(line) for line in (project / "delivered.jsonl").read_text().splitlines()
    ]
    assert len(delivered) == 6
    assert all(set(d["result"]) == {"label", "severity"} for d in delivered)
    ledger.dispose()
