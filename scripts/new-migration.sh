#!/usr/bin/env bash
# A new Alembic migration from what the SQLModel tables have and the migrations so far do not:
#   scripts/new-migration.sh "what changed"
# It migrates a scratch SQLite store to head, autogenerates the next numbered revision against it, and
# leaves it in core/store/migrations/versions/ to be read (SQLite and PostgreSQL both run it)
# before it is committed. tests/core/test_store_schema.py fails until models and migrations agree.
set -euo pipefail
cd "$(dirname "$0")/.."
message=${1:?usage: scripts/new-migration.sh "what changed"}
PY=${PYTHON:-.venv/bin/python}
last=$(ls core/store/migrations/versions | sed -n 's/^\([0-9]\{4\}\)_.*/\1/p' | sort | tail -1)
next=$(printf "%04d" $((10#$last + 1)))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" - "$tmp/scratch.db" "$message" "$next" <<'PYEOF'
import sys

from alembic import command
from sqlalchemy import create_engine

from keel.core.store.migrate import _config

cfg = _config()
with create_engine(f"sqlite:///{sys.argv[1]}").begin() as conn:
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    command.revision(cfg, message=sys.argv[2], autogenerate=True, rev_id=sys.argv[3])
PYEOF
