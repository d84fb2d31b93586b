"""The results database, as SQLAlchemy 2 ORM classes.

Only Alembic migrations (``migrations/``) create or change these tables; this
module describes them for queries.

A scan finds files; every file it queues gets one ``Analysis`` (the job's
record: status, attempts, error). A finished analysis has a ``Prediction``;
every change tagger makes to a file is a ``TagChange`` holding the values
before and after, which is what undo restores.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy import UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class ScanStatus(StrEnum):
    """``Scan.status``."""

    RUNNING = "running"
    DONE = "done"
    INTERRUPTED = "interrupted"


class AnalysisStatus(StrEnum):
    """``Analysis.status``: queued → running → one of the finished states."""

    QUEUED = "queued"
    RUNNING = "running"
    TAGGED = "tagged"
    LOW_CONFIDENCE = "low_confidence"  # no tag written: the model was not sure enough
    KEPT = "kept"  # no tag written: the user's own genre is kept
    DRY_RUN = "dry_run"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # its scan stopped first (Ctrl-C, SIGTERM, a dead scan): not a failure


class ChangeAction(StrEnum):
    """``TagChange.action``."""

    WRITE = "write"  # a scan wrote its prediction
    UNDO = "undo"  # undo (or redo) wrote back what a change replaced


class ChangeState(StrEnum):
    """``TagChange.state``: pending is recorded before the file is touched, done once verified."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"  # the file is as it was


QUEUED, RUNNING = AnalysisStatus.QUEUED, AnalysisStatus.RUNNING
TAGGED, LOW_CONFIDENCE, KEPT = AnalysisStatus.TAGGED, AnalysisStatus.LOW_CONFIDENCE, AnalysisStatus.KEPT
DRY_RUN, FAILED, INTERRUPTED = AnalysisStatus.DRY_RUN, AnalysisStatus.FAILED, AnalysisStatus.INTERRUPTED
#: the analysis succeeded (the file need not be analysed again while unchanged)
SUCCEEDED = (TAGGED, LOW_CONFIDENCE, KEPT, DRY_RUN)
FINISHED = SUCCEEDED + (FAILED, INTERRUPTED)


class Scan(Base):
    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default=ScanStatus.RUNNING)
    roots: Mapped[list[str]] = mapped_column(JSON, default=list)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    host: Mapped[str] = mapped_column(String(255), default="")
    # the process that follows the scan's jobs to the end (the embedded default, --wait, the API):
    # gone from ``host``, or silent past scan.STALE_AFTER_S, and the scan is dead (scan.reap_dead)
    pid: Mapped[Optional[int]] = mapped_column(Integer)
    heartbeat_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    found: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)  # unchanged since their last analysis
    queued: Mapped[int] = mapped_column(Integer, default=0)

    analyses: Mapped[list["Analysis"]] = relationship(back_populates="scan")


class File(Base):
    __tablename__ = "files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # the exact bytes of the path (file names need not be UTF-8); ``path`` is for display
    raw_path: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(8))
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    # the stat after the last successful analysis (and our write): unchanged means skip
    done_size: Mapped[Optional[int]] = mapped_column(BigInteger)
    done_mtime_ns: Mapped[Optional[int]] = mapped_column(BigInteger)
    done_model: Mapped[Optional[str]] = mapped_column(String(128))
    genre: Mapped[Optional[str]] = mapped_column(String(128))
    confidence: Mapped[Optional[float]] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    @staticmethod
    def encode_path(path: str | bytes) -> tuple[bytes, str]:
        raw = os.fsencode(path)
        return raw, raw.decode("utf-8", "replace")


class Analysis(Base):
    __tablename__ = "analyses"
    __table_args__ = (UniqueConstraint("scan_id", "file_id", name="uq_analysis_scan_file"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"), index=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED, index=True)
    # the file's stat when the scan found it; a different stat at write time means it changed
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_kind: Mapped[Optional[str]] = mapped_column(String(32))
    error: Mapped[Optional[str]] = mapped_column(Text)
    worker: Mapped[Optional[str]] = mapped_column(String(255))
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    seconds: Mapped[Optional[float]] = mapped_column(Float)

    scan: Mapped[Scan] = relationship(back_populates="analyses")
    file: Mapped[File] = relationship()
    prediction: Mapped[Optional["Prediction"]] = relationship(back_populates="analysis", uselist=False)


class Prediction(Base):
    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id"), unique=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id"), index=True)
    genre: Mapped[str] = mapped_column(String(128), index=True)
    genres: Mapped[list[str]] = mapped_column(JSON, default=list)
    confidence: Mapped[float] = mapped_column(Float)
    top: Mapped[list[list[Any]]] = mapped_column(JSON, default=list)  # [[genre, p], ...]
    model: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    decided_by: Mapped[str] = mapped_column(String(32))
    # why no genre was written whatever the confidence ("does not sound like music (a steady tone)")
    reason: Mapped[Optional[str]] = mapped_column(Text)
    # the genre the file held before this analysis (our write or not)
    previous_genre: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    analysis: Mapped[Analysis] = relationship(back_populates="prediction")


class TagChange(Base):
    __tablename__ = "tag_changes"
    # one write per analysis, even when two workers run the same job at once
    __table_args__ = (UniqueConstraint("analysis_id", "action", name="uq_tag_change_analysis_action"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id"), index=True)
    scan_id: Mapped[Optional[int]] = mapped_column(ForeignKey("scans.id"), index=True)
    analysis_id: Mapped[Optional[int]] = mapped_column(ForeignKey("analyses.id"))
    action: Mapped[str] = mapped_column(String(16))  # ChangeAction
    # our fields before and after: {"genre": [...], "confidence": [...], "model": [...]}
    before: Mapped[dict[str, list[str]]] = mapped_column(JSON)
    after: Mapped[dict[str, list[str]]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=ChangeState.PENDING)  # ChangeState
    reverts_id: Mapped[Optional[int]] = mapped_column(ForeignKey("tag_changes.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    file: Mapped[File] = relationship()


class Error(Base):
    __tablename__ = "errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[Optional[int]] = mapped_column(ForeignKey("scans.id"), index=True)
    file_id: Mapped[Optional[int]] = mapped_column(ForeignKey("files.id"))
    analysis_id: Mapped[Optional[int]] = mapped_column(ForeignKey("analyses.id"))
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    final: Mapped[bool] = mapped_column(default=True)  # False: a retry follows
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
