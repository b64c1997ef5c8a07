"""The Alembic script directory of ai-secretary-schema, shipped inside the wheel."""
