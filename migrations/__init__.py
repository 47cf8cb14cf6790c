"""Alembic migrations, shipped as ``sapo_monitor.migrations`` (see ``service/storage/migrate.py``)."""
