"""gemini-ledger's Prefect flows and tasks, the google-genai gateway and example pipelines."""

from flows.pipeline import Item, Pipeline, Prompt
from flows.registry import get_pipeline

__all__ = ["Item", "Pipeline", "Prompt", "get_pipeline"]
