"""Bad config values fail fast with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradesys.config import ConfigError, load_config, parse_override, redact_url


def test_defaults_are_valid() -> None:
    cfg = load_config()
    assert cfg.data.source == "sp500_stocks"
    assert cfg.strategy.fast < cfg.strategy.slow
    assert cfg.ledger.url is None


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("risk.max_order_qty=-1", "risk.max_order_qty"),
        ("risk.daily_loss_limit_pct=1.5", "risk.daily_loss_limit_pct"),
        ("broker.participation_cap=0", "broker.participation_cap"),
        ("initial_cash=0", "initial_cash"),
        ('data.source="bloomberg"', "data.source"),
        ("data.speed=-2", "data.speed"),
        ("strategy.fast=300", "strategy"),
        ('ledger.url="mysql://x/y"', "ledger.url"),
        ("risk.not_a_limit=3", "risk.not_a_limit"),
    ],
)
def test_bad_values_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert str(info.value).startswith(field + ":"), str(info.value)


def test_dates_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match=r"data: start \(2020-01-01\) must be before end"):
        load_config(overrides={"data.start": "2020-01-01", "data.end": "2019-01-01"})


def test_toml_file_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('initial_cash = 5e5\n[risk]\nmax_order_qty = 10\n[data]\nsource = "us_indices"\n')
    cfg = load_config(f, ["risk.max_order_qty=20"])
    assert cfg.initial_cash == 5e5
    assert cfg.risk.max_order_qty == 20
    assert cfg.data.source == "us_indices"


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[risk\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(bad)


def test_parse_override_types() -> None:
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a.b=0.5") == ("a.b", 0.5)
    assert parse_override("a.b=true") == ("a.b", True)
    assert parse_override("a.b=hello") == ("a.b", "hello")
    with pytest.raises(ConfigError, match=r"expected section\.field=value"):
        parse_override("nonsense")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://user:s3cret@host:5432/db", "postgresql://user:***@host:5432/db"),
        ("postgres://u:p/x@h/db", "postgres://u:***@h/db"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("postgresql://u@h/db?password=s3cret&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:///runs/a:b@c.db", "sqlite:///runs/a:b@c.db"),
        ("http://host:8080/v1/predict", "http://host:8080/v1/predict"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_bad_ledger_url_error_masks_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=['ledger.url="mysql://admin:s3cret@h/db"'])
    msg = str(info.value)
    assert msg.startswith("ledger.url: must start with sqlite://"), msg
    assert "s3cret" not in msg and "admin:***@h/db" in msg


@pytest.mark.parametrize(("kind", "reason"), [
    ("alpaca", "alpaca fills at the broker's live prices"),  # with replayed data: tests/test_broker_alpaca.py
    ("ib", "unknown broker 'ib'"),
])
def test_a_broker_kind_that_nothing_implements_is_refused(kind: str, reason: str) -> None:
    """`broker.kind = "alpaca"` used to be accepted and silently ran the simulator; now it needs live data."""
    with pytest.raises(ConfigError, match=rf"broker.kind: .*{reason}"):
        load_config(None, [f'broker.kind="{kind}"'])
    assert load_config(None, ['broker.kind="sim"']).broker.kind == "sim"
