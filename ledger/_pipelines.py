"""Pipeline identity: which spec a pipeline name stands for, its revisions, and the API its
workers use."""

from __future__ import annotations

from sqlalchemy import text

from ledger._base import LedgerBase
from ledger._errors import PipelineConflict
from ledger._models import ApiSettingsRow, PipelineRow
from ledger._records import (
    API_SETTINGS_COLUMNS,
    PIPELINE_COLUMNS,
    ApiSettingsRecord,
    PipelineChange,
    PipelineRecord,
)

__all__ = ["PipelineVerbs"]


class PipelineVerbs(LedgerBase):
    """Verbs over ``pipelines``."""

    def pipeline_record(self, name: str) -> PipelineRecord | None:
        """The recorded identity of the pipeline called ``name``, or None."""
        with self._read() as conn:
            row = conn.execute(
                text(f"SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE name = :name"),
                {"name": name},
            ).one_or_none()
        return None if row is None else PipelineRecord(*row)

    def pipelines(self) -> list[PipelineRecord]:
        with self._read() as conn:
            rows = conn.execute(text(f"SELECT {PIPELINE_COLUMNS} FROM pipelines ORDER BY name"))
            return [PipelineRecord(*row) for row in rows]

    def record_pipeline(
        self, name: str, *, spec: str, channel: str, model: str, schema_fingerprint: str
    ) -> PipelineChange:
        """Record the pipeline called ``name`` as defined by ``spec`` (``module:attribute``).

        A name first seen is recorded; the same ``spec`` with another channel, model or
        schema fingerprint is a deliberate change, recorded with its revision counted up.
        Another ``spec`` under a recorded name raises :class:`PipelineConflict` and changes
        nothing.
        """
        now = self.clock()
        fields = {"channel": channel, "model": model, "schema_fingerprint": schema_fingerprint}
        with self._write() as conn:
            row = conn.execute(
                text(f"SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE name = :name"),
                {"name": name},
            ).one_or_none()
            if row is None:
                inserted = conn.execute(
                    self._insert_ignore(PipelineRow.__table__, "name"),  # type: ignore[attr-defined]
                    {
                        "name": name,
                        "spec": spec,
                        **fields,
                        "revision": 1,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
                if self._inserted(inserted) == 1:
                    return PipelineChange(
                        "new",
                        PipelineRecord(name, spec, channel, model, schema_fingerprint, 1, now, now),
                    )
                row = conn.execute(
                    text(f"SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE name = :name"),
                    {"name": name},
                ).one()
            record = PipelineRecord(*row)
            if record.spec != spec:
                raise PipelineConflict(name, owner=record.spec, given=spec)
            changed = tuple(k for k, v in fields.items() if getattr(record, k) != v)
            if not changed:
                return PipelineChange("same", record)
            conn.execute(
                text(
                    "UPDATE pipelines SET channel = :channel, model = :model,"
                    " schema_fingerprint = :schema_fingerprint, revision = revision + 1,"
                    " updated_at = :now WHERE name = :name"
                ),
                {**fields, "now": now, "name": name},
            )
            return PipelineChange(
                "changed",
                record._replace(
                    channel=channel,
                    model=model,
                    schema_fingerprint=schema_fingerprint,
                    revision=record.revision + 1,
                    updated_at=now,
                ),
                changed,
            )

    def record_api_settings(self, pipeline: str, *, base_url: str, key_digest: str) -> None:
        """Note that ``pipeline``'s workers bound a batch job at the API ``base_url`` with the
        key whose digest is ``key_digest`` (never the key: secrets never reach the ledger)."""
        now = self.clock()
        values = {"p": pipeline, "u": base_url, "d": key_digest, "now": now}
        with self._write() as conn:
            updated = conn.execute(
                text(
                    "UPDATE api_settings SET base_url = :u, key_digest = :d, recorded_at = :now"
                    " WHERE pipeline = :p"
                ),
                values,
            ).rowcount
            if updated:
                return
            conn.execute(
                self._insert_ignore(ApiSettingsRow.__table__, "pipeline"),  # type: ignore[attr-defined]
                {
                    "pipeline": pipeline,
                    "base_url": base_url,
                    "key_digest": key_digest,
                    "recorded_at": now,
                },
            )

    def api_settings(self, *, since: float | None = None) -> list[ApiSettingsRecord]:
        """Each pipeline's API as last recorded by a tick that bound a batch job (only those
        recorded at or after ``since``, epoch seconds, when given)."""
        where = "" if since is None else " WHERE recorded_at >= :since"
        with self._read() as conn:
            rows = conn.execute(
                text(f"SELECT {API_SETTINGS_COLUMNS} FROM api_settings{where} ORDER BY pipeline"),
                {"since": since},
            )
            return [ApiSettingsRecord(*row) for row in rows]
