"""The Alembic migrations: up, down and up again on a scratch database of the embedded server,
and the migrated schema matches the ORM tables exactly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from fdiot.settings import Settings

pytestmark = pytest.mark.stack

TABLES = {"tokens", "devices", "campaigns", "jobs", "samples", "model_versions"}


@pytest.fixture
def scratch_url(stack: Settings) -> Iterator[str]:
    """A fresh, empty database on the test PostgreSQL; dropped afterwards."""
    assert stack.database_url is not None
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    admin = make_url(stack.sqlalchemy_url).set(drivername="postgresql", database="postgres")
    admin_dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield (
            make_url(stack.sqlalchemy_url).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_upgrade_downgrade_upgrade(scratch_url: str) -> None:
    from server.prestart import downgrade_database, upgrade_database

    assert _tables(scratch_url) == set()
    upgrade_database(sqlalchemy_url=scratch_url)
    assert _tables(scratch_url) == TABLES
    downgrade_database(sqlalchemy_url=scratch_url)
    assert _tables(scratch_url) == set()
    upgrade_database(sqlalchemy_url=scratch_url)
    assert _tables(scratch_url) == TABLES


def test_migrated_schema_matches_the_tables(scratch_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from server import tables  # noqa: F401
    from server.db import metadata
    from server.prestart import upgrade_database

    upgrade_database(sqlalchemy_url=scratch_url)
    engine = create_engine(scratch_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()
