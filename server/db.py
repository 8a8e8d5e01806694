"""Database engine, the one-session-per-request dependency, and tasks sent after commit.

Every request gets one session; routes never commit: :func:`get_db` commits once when the route
returns and then sends the Celery messages the request buffered with :func:`send_after_commit`, so
a worker never reads a row that is not there yet (STYLE.md, "Traps").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import Engine, MetaData, create_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from fdiot.settings import get_settings

log = logging.getLogger(__name__)

# Stable constraint names, so that migrations can drop and alter them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Base(DeclarativeBase):
    metadata = metadata


@lru_cache
def get_engine() -> Engine:
    """The process-wide engine, built on first use so that importing the app needs no database."""
    return create_engine(get_settings().sqlalchemy_url, pool_pre_ping=True)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    # expire_on_commit=False: responses are built from rows after the commit in get_db.
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def reset_engine() -> None:
    """Forget the engine (tests and ``fdiot up`` call this after the stack's address changes)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()


@dataclass(frozen=True)
class PendingTask:
    """A Celery message to send once the transaction that made its rows has committed."""

    name: str
    args: tuple[Any, ...]
    queue: str


_PENDING_KEY = "pending_tasks"


def send_after_commit(session: Session, name: str, args: tuple[Any, ...], queue: str) -> None:
    """Buffer a task on the session; :func:`commit_and_send` sends it after the commit."""
    pending: list[PendingTask] = session.info.setdefault(_PENDING_KEY, [])
    task = PendingTask(name=name, args=args, queue=queue)
    if task not in pending:  # two requests for the same fit in one transaction send one message
        pending.append(task)


def pending_tasks(session: Session) -> list[PendingTask]:
    """Tasks buffered on ``session`` and not yet sent."""
    return list(session.info.get(_PENDING_KEY, []))


def commit_and_send(session: Session) -> None:
    """Commit, then send every buffered message (never before: the rows must exist first)."""
    session.commit()
    pending: list[PendingTask] = session.info.pop(_PENDING_KEY, [])
    if not pending:
        return
    from worker.celery_app import celery_app

    for task in pending:
        # A send that fails here is not lost work: the row is committed and the reconciler
        # re-sends queued jobs and due fits.
        try:
            celery_app.send_task(task.name, args=list(task.args), queue=task.queue)
        except Exception:
            log.exception(
                "sending %s%s to %s failed; the reconciler will retry",
                task.name,
                task.args,
                task.queue,
            )


def get_db() -> Iterator[Session]:
    """One session per request, committed once after the route returns, then messages sent."""
    with get_sessionmaker()() as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            session.info.pop(_PENDING_KEY, None)
            raise
        commit_and_send(session)


# scope="function": commit before the response is sent, so a client that reads back what it
# just wrote never races the commit.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]
