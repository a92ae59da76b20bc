"""Finding pipelines by the name the ledger records."""

from __future__ import annotations

import pytest

from flows.registry import PIPELINES_ENV, UnknownPipeline, get_pipeline


def test_a_user_pipeline_is_found_by_name_through_the_environment(monkeypatch):
    """GEMINI_LEDGER_PIPELINES maps a recorded name to module:attribute."""
    monkeypatch.setenv(PIPELINES_ENV, "my-reviews=flows.examples.reviews:pipeline")
    assert get_pipeline("my-reviews").name == "reviews"


def test_a_malformed_pipelines_setting_is_a_clear_error(monkeypatch):
    """A pair without '=' or ':' is refused with a message naming the setting."""
    monkeypatch.setenv(PIPELINES_ENV, "broken")
    with pytest.raises(UnknownPipeline, match=PIPELINES_ENV):
        get_pipeline("anything")


def test_loading_by_spec_leaves_no_memory_in_the_process(tmp_path, monkeypatch):
    """Loading module:attribute does not make its name resolve later in the process: a name
    resolves only from the examples, GEMINI_LEDGER_PIPELINES or the ledger's record, so a
    run never depends on what ran before it."""
    import pytest

    from flows.registry import UnknownPipeline
    from tests.batch import pipelines

    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    spec = next(
        f"tests.batch.pipelines:{attr}"
        for attr in dir(pipelines)
        if getattr(getattr(pipelines, attr), "channel", None) is not None
    )
    loaded = get_pipeline(spec)
    with pytest.raises(UnknownPipeline):
        get_pipeline(loaded.name)
    assert not (tmp_path / "none.db").exists()  # looking a name up created no ledger
