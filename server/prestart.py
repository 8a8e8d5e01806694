"""Run before the server starts (``fdiot up``, docker, tests): bring the schema to Alembic head."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command

# alembic.ini sits at the repository root, next to the server/ package.
ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def alembic_config(sqlalchemy_url: str | None = None) -> Config:
    """Alembic config of the farm; ``sqlalchemy_url`` overrides the settings' database."""
    config = Config(str(ALEMBIC_INI))
    # Leave the caller's logging alone (the CLI and pytest configure their own).
    config.attributes["configure_logger"] = False
    if sqlalchemy_url is not None:
        config.attributes["sqlalchemy_url"] = sqlalchemy_url
    return config


def upgrade_database(revision: str = "head", sqlalchemy_url: str | None = None) -> None:
    """Apply migrations up to ``revision`` (``alembic upgrade head`` programmatically)."""
    command.upgrade(alembic_config(sqlalchemy_url), revision)


def downgrade_database(revision: str = "base", sqlalchemy_url: str | None = None) -> None:
    """Undo migrations down to ``revision``."""
    command.downgrade(alembic_config(sqlalchemy_url), revision)


if __name__ == "__main__":
    upgrade_database()
