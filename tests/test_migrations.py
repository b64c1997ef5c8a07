"""The migration history on both dialects, through pytest-alembic's built-in checks.

``alembic_engine`` is parametrized, so each built-in test runs once on a SQLite file and once on
a fresh PostgreSQL database: a single head; base → head; every step up and down one at a time;
and the models match the migrated schema (no autogenerate difference).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.config import Config as AlembicConfig
from pytest_alembic import Config
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Engine, make_url

from ai_secretary_schema.alembic_config import make_alembic_config
from ai_secretary_schema.engine import create_engine

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]


@pytest.fixture
def alembic_config() -> Config:
    config: AlembicConfig = make_alembic_config()
    return Config(alembic_config=config)


@pytest.fixture
def alembic_engine(db_url: str) -> Iterator[Engine]:
    engine = create_engine(make_url(db_url), pooled=False)
    yield engine
    engine.dispose()
