"""gemini-ledger's Prefect flows and tasks, the google-genai gateway and example pipelines."""

from flows.contents import Part
from flows.deadline import Deadline
from flows.embedding import EmbeddingSettings
from flows.generation import (
    GenerationSettings,
    HarmCategory,
    HarmThreshold,
    MediaResolution,
    SafetySetting,
    ThinkingLevel,
)
from flows.pipeline import Item, Pipeline, Prompt, Run
from flows.prefix import CachedPrefix
from flows.registry import get_pipeline

__all__ = [
    "CachedPrefix",
    "Deadline",
    "EmbeddingSettings",
    "GenerationSettings",
    "HarmCategory",
    "HarmThreshold",
    "Item",
    "MediaResolution",
    "Part",
    "Pipeline",
    "Prompt",
    "Run",
    "SafetySetting",
    "ThinkingLevel",
    "get_pipeline",
]
