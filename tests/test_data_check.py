"""`check_data`: data-dependent settings fail up front with the field named (no Ray, no run)."""

from __future__ import annotations

import pytest
from skfolio.datasets import load_sp500_dataset

from tradesys.config import ConfigError, load_config
from tradesys.data import check_data, make_source


def _check(*overrides: str) -> None:
    check_data(load_config(overrides=list(overrides)).data)


def test_defaults_and_known_symbols_pass() -> None:
    _check()
    _check('data.symbols=["AAPL","JPM"]')
    _check('data.source="us_indices"', 'data.symbols=["SP500"]')
    _check('data.source="synthetic"', 'data.symbols=["ANY","NAME"]')


def test_unknown_symbol_names_field_and_lists_the_real_universe() -> None:
    with pytest.raises(ConfigError) as info:
        _check('data.symbols=["AAPL","ZZZZ"]')
    msg = str(info.value)
    assert msg.startswith("data.symbols: unknown symbol 'ZZZZ' for source sp500_stocks (have: "), msg
    have = msg.split("(have: ")[1].rstrip(")").split(", ")
    assert have == sorted(load_sp500_dataset().columns)  # the independent list: the packaged data itself
    with pytest.raises(ConfigError, match=r"^data\.symbols: unknown symbol 'AAPL' for source us_indices"):
        _check('data.source="us_indices"', 'data.symbols=["AAPL"]')


def test_unknown_symbol_is_what_the_source_itself_rejects() -> None:
    """check_data agrees with make_source: what it refuses really cannot run."""
    cfg = load_config(overrides=['data.symbols=["ZZZZ"]']).data
    with pytest.raises(ValueError, match="unknown symbol"):
        make_source(cfg)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (("data.start=2030-01-01", "data.end=2031-01-01"), "data.start"),
        (('data.source="us_indices"', "data.start=2019-06-01", "data.end=2019-12-31"), "data.start"),
        (('data.source="synthetic"', "data.start=2016-01-02", "data.end=2016-01-03"), "data.end"),  # a weekend
        (("data.symbols=[]",), "data.symbols"),
        (('data.symbols=[""]',), "data.symbols"),
    ],
)
def test_empty_data_names_the_field(overrides: tuple[str, ...], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        _check(*overrides)
    assert str(info.value).startswith(field + ": "), str(info.value)
    assert "\n" not in str(info.value)
