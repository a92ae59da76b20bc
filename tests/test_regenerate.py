"""Regenerating is safe: the examples publish by the item's own id, so a new key version
replaces the earlier result instead of adding a second one."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select

from flows.examples import articles, reviews

DAY = date(2026, 11, 29)


def test_a_version_bump_leaves_one_review_label_per_review(monkeypatch, sqlite_url):
    """Every sample review labelled under v1 then v2: one row per review, the v2 label."""
    monkeypatch.setenv(reviews.RESULTS_URL_ENV, sqlite_url)
    items = list(reviews.load_reviews(DAY))
    v1 = reviews.ReviewLabel(category="bug", sentiment="negative", confidence=0.5)
    v2 = reviews.ReviewLabel(category="praise", sentiment="positive", confidence=0.9)
    for item in items:
        reviews.write_label(reviews.review_key(item, DAY), v1)
    for item in items:
        reviews.write_label(reviews.review_key(item, DAY).replace(":v1", ":v2"), v2)
    table = reviews.ReviewLabelRow
    with reviews.results_engine().connect() as conn:
        rows = conn.execute(select(func.count()).select_from(table)).scalar()
        categories = set(conn.execute(select(table.category)).scalars())  # type: ignore[call-overload]
        keys = set(conn.execute(select(table.key)).scalars())  # type: ignore[call-overload]
    assert rows == len({item["id"] for item in items}) == len(items)
    assert categories == {"praise"}
    assert all(key.endswith(":v2") for key in keys)


def test_a_version_bump_leaves_one_article_file_per_topic(monkeypatch, tmp_path):
    """Every topic written under v1 then v2: one file per topic, holding the v2 article."""
    monkeypatch.setenv(articles.ARTICLES_DIR_ENV, str(tmp_path))
    topics = list(articles.load_topics(DAY))
    for version in ("v1", "v2"):
        for topic in topics:
            key = articles.article_key(topic, DAY).replace(":v1", f":{version}")
            articles.on_result(
                key, articles.Article(title=version, summary="s", body="b", tags=["t"])
            )
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == len(topics)
    assert {articles.Article.model_validate_json(f.read_text()).title for f in files} == {"v2"}
