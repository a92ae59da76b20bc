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


def test_a_pipeline_loaded_by_spec_is_remembered_by_its_name():
    """After loading module:attribute, the pipeline's own name resolves in this process."""
    from tests.batch import pipelines

    spec = next(
        f"tests.batch.pipelines:{attr}"
        for attr in dir(pipelines)
        if getattr(getattr(pipelines, attr), "channel", None) is not None
    )
    loaded = get_pipeline(spec)
    assert get_pipeline(loaded.name) is loaded
