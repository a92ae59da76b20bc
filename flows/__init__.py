"""gemini-ledger's Prefect flows and tasks, the google-genai gateway and example pipelines."""

from flows.generation import (
    GenerationSettings,
    HarmCategory,
    HarmThreshold,
    MediaResolution,
    SafetySetting,
    ThinkingLevel,
)
from flows.pipeline import Item, Pipeline, Prompt, Run
from flows.registry import get_pipeline

__all__ = [
    "GenerationSettings",
    "HarmCategory",
    "HarmThreshold",
    "Item",
    "MediaResolution",
    "Pipeline",
    "Prompt",
    "Run",
    "SafetySetting",
    "ThinkingLevel",
    "get_pipeline",
]
