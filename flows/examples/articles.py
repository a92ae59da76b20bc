"""Worked example on the background channel: short articles from a list of topics.

Each topic in ``data/topics.txt`` becomes one job keyed ``articles:<day>:<topic slug>:v1``,
submitted as a background interaction; the answer must validate against :class:`Article`
(title, summary, body, tags). ``on_result`` writes the article as JSON to a file named by
its topic (the item's own id, not the idempotency key) in ``ARTICLES_DIR`` (default
``var/articles``), atomically (a temporary file, then ``os.replace``): calling it twice for
a key (a resumed side effect) is an overwrite that changes nothing, a reader never sees half
a file, and a new key version (``v2``, to regenerate) replaces the topic's article instead
of adding a second one.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flows.crash import crash_point
from flows.pipeline import Pipeline, Prompt
from ledger import Channel

__all__ = [
    "ARTICLES_DIR_ENV",
    "DATA_FILE",
    "Article",
    "article_path",
    "articles_dir",
    "build_prompt",
    "load_topics",
    "pipeline",
    "safe_filename",
    "slug",
    "topic_of",
    "write_article",
]

DATA_FILE = Path(__file__).with_name("data") / "topics.txt"
ARTICLES_DIR_ENV = "ARTICLES_DIR"
DEFAULT_DIR = Path("var") / "articles"
MODEL = "gemini-2.5-flash"

SYSTEM = (
    "You write short, accurate explainer articles for a general audience. Answer with JSON"
    " only: a title, a one-sentence summary, a body of three to five short paragraphs, and"
    " three to six lowercase tags."
)


class Article(BaseModel):
    """The structured answer for one topic."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    summary: str
    body: str
    tags: list[str]


# -- input ---------------------------------------------------------------------------------


def load_topics(day: date) -> Iterator[str]:
    """Today's topics: the sample file stands for an editor's list for ``day``."""
    with DATA_FILE.open(encoding="utf-8") as fh:
        for line in fh:
            topic = line.strip()
            if topic and not topic.startswith("#"):
                yield topic


def slug(text: str) -> str:
    """A stable, readable slug for a topic (``The history of tea`` -> ``the-history-of-tea``)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "topic"


def article_key(topic: str, day: date) -> str:
    return f"articles:{day.isoformat()}:{slug(topic)}:v1"


def topic_of(key: str) -> str:
    """The topic slug in a key (``articles:<day>:<slug>:<version>``): what the article is
    published under, the same whatever the day or version."""
    parts = key.split(":")
    return parts[2] if len(parts) >= 4 else key


def build_prompt(topic: str) -> Prompt:
    return Prompt(text=f"Write an article about: {topic}", system=SYSTEM, temperature=0.7)


# -- the side effect -------------------------------------------------------------------------


def articles_dir() -> Path:
    return Path(os.environ.get(ARTICLES_DIR_ENV) or DEFAULT_DIR)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(key: str) -> str:
    """A file name for a key on any file system: unsafe characters become ``_``.

    A digest of the key is appended whenever the rewrite changed it, so two keys that differ
    only in unsafe characters (``a:b`` and ``a/b``) never share a file.
    """
    safe = _UNSAFE.sub("_", key).strip("._") or "key"
    if safe != key or len(safe) > 150:
        safe = f"{safe[:150]}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    return safe + ".json"


def article_path(key: str) -> Path:
    """Where the article for ``key`` is published: one file per topic."""
    return articles_dir() / safe_filename(topic_of(key))


def write_article(key: str, article: Article, *, directory: Path | None = None) -> Path:
    """Write one article as JSON, atomically: a temporary file in the same directory, then
    ``os.replace`` (an overwrite by topic, so a repeated call changes nothing and a new key
    version replaces the earlier article)."""
    folder = directory if directory is not None else articles_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / safe_filename(topic_of(key))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(article.model_dump_json(indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def on_result(key: str, result: Article | dict[str, Any]) -> None:
    """Deliver one article: write its topic's file (idempotent overwrite by topic)."""
    article = result if isinstance(result, Article) else Article.model_validate(result)
    write_article(key, article)
    # A kill here leaves the file written and the job not yet consumed: the next tick
    # calls this again for the key, which rewrites the same file.
    crash_point("background.inside_side_effect")


pipeline: Pipeline[str] = Pipeline(
    name="articles",
    model=MODEL,
    channel=Channel.BACKGROUND,
    output=Article,
    load_items=load_topics,
    key_of=article_key,
    build_prompt=build_prompt,
    on_result=on_result,
    description="Short explainer articles from a list of topics, as background interactions.",
)
