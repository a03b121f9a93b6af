"""keel.toml validation: required keys, unknown keys and bad values name the key."""

from __future__ import annotations

import pytest

from keel.core.config import Settings, load_config, parse_config
from keel.core.errors import ConfigError


def test_minimal_config_has_documented_defaults():
    cfg = parse_config({"model": "m", "target": "y"})
    assert cfg.drift.engine == "alibi" and cfg.drift.correction == "bonferroni"
    assert cfg.retrain.window == 3 and cfg.gate.metric == "roc_auc"
    assert cfg.review.approvers == [] and cfg.review.wait is False


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"target": "y"}, "required key 'model' is missing"),
        ({"model": "m"}, "required key 'target' is missing"),
        ({"model": "m", "target": "y", "colour": 1}, "unknown key 'colour'"),
        ({"model": "m", "target": "y", "drift": {"engin": "scipy"}}, "unknown key 'drift.engin'"),
        ({"model": "m", "target": "y", "drift": {"engine": "torch"}}, "bad value for 'drift.engine'"),
        ({"model": "m", "target": "y", "retrain": {"window": 0}}, "bad value for 'retrain.window'"),
        ({"model": "m", "target": "y", "contract": {"ranges": {"x": [5, 1]}}}, "bad value for 'contract.ranges'"),
        ({"model": "bad name!", "target": "y"}, "bad value for 'model'"),
    ],
)
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_load_config_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "keel.toml"
    broken.write_text("model = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_settings_default_to_sqlite_under_keel_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "h"))
    monkeypatch.delenv("KEEL_DATABASE_URL", raising=False)
    s = Settings()
    assert s.db_url == f"sqlite:///{tmp_path / 'h' / 'keel.db'}"
    assert s.artifacts_path == tmp_path / "h" / "artifacts"
    cfg = parse_config({"model": "m", "target": "y", "store": {"database_url": "sqlite:////tmp/x.db"}})
    assert cfg.settings(s).db_url == "sqlite:////tmp/x.db"
