#!/usr/bin/env bash
# Regenerate the single Alembic migration 0001 from the SQLModel tables (only while nothing is released:
# once a store exists in the field, add a new migration with `alembic revision --autogenerate` instead).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -f keel/core/store/migrations/versions/0001_*.py
tmp=$(mktemp -d)
"$PY" - "$tmp/gen.db" <<'PYEOF'
import sys
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

cfg = Config()
cfg.set_main_option("script_location", "keel/core/store/migrations")
with create_engine(f"sqlite:///{sys.argv[1]}").begin() as conn:
    cfg.attributes["connection"] = conn
    command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
PYEOF
sed -i 's/^Create Date: .*/Create Date: 2026-11-29/' keel/core/store/migrations/versions/0001_*.py
rm -rf "$tmp"
