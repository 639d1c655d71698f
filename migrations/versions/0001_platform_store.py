"""Platform store: tenants, metadata versions, migration history.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(schema=None):
    op.create_table(
        "tenants",
        sa.Column("slug", sa.String(40), primary_key=True),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("metadata_version", sa.String(32)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True)),
        schema=schema)
    op.create_table(
        "metadata_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(40), nullable=False, index=True),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema)
    op.create_table(
        "migrations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(40), nullable=False, index=True),
        sa.Column("from_version", sa.String(32)),
        sa.Column("to_version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("destructive", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("seconds", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema)


def downgrade(schema=None):
    for name in ("migrations", "metadata_versions", "tenants"):
        op.drop_table(name, schema=schema)
