"""Finding pipelines by the name the ledger records."""

from __future__ import annotations

import pytest

from flows.registry import PIPELINES_ENV, get_pipeline
from flows.settings import Settings, SettingsError, load_settings


def test_a_user_pipeline_is_found_by_name_through_the_setting():
    """GEMINI_LEDGER_PIPELINES maps a recorded name to module:attribute."""
    settings = Settings.given(**{PIPELINES_ENV: "my-reviews=flows.examples.reviews:pipeline"})
    assert get_pipeline("my-reviews", settings).name == "reviews"


def test_a_malformed_pipelines_setting_is_a_clear_error(monkeypatch):
    """A pair without '=' or ':' is refused when the settings load, naming the setting."""
    monkeypatch.setenv(PIPELINES_ENV, "broken")  # what a command or a flow run reads
    with pytest.raises(SettingsError, match=PIPELINES_ENV):
        load_settings()


def test_loading_by_spec_leaves_no_memory_in_the_process(tmp_path):
    """Loading module:attribute does not make its name resolve later in the process: a name
    resolves only from the examples, GEMINI_LEDGER_PIPELINES or the ledger's record, so a
    run never depends on what ran before it."""
    import pytest

    from flows.registry import UnknownPipeline
    from tests.batch import pipelines

    settings = Settings.given(database_url=f"sqlite:///{tmp_path / 'none.db'}")
    spec = next(
        f"tests.batch.pipelines:{attr}"
        for attr in dir(pipelines)
        if getattr(getattr(pipelines, attr), "channel", None) is not None
    )
    loaded = get_pipeline(spec, settings)
    with pytest.raises(UnknownPipeline):
        get_pipeline(loaded.name, settings)
    assert not (tmp_path / "none.db").exists()  # looking a name up created no ledger
