"""TargetWeightsStrategy: schedule files, as-of rows, the shared sizing, and bad files named by field."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tradesys.backtest.runner import run_backtest
from tradesys.config import ConfigError, RiskConfig, StrategyConfig, load_config
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.core.schemas import BAR_SCHEMA
from tradesys.strategy import TargetWeightsStrategy, make_strategy
from tradesys.strategy.sizing import rebalance_order, scale_to_leverage
from tradesys.strategy.weights import WeightSchedule, load_weights

DAY = 86_400 * 10**9
CLOSE = 21 * 3600 * 10**9  # daily bars are stamped 21:00 UTC


def _ns(day: str) -> int:
    return int(pd.Timestamp(day, tz="UTC").value)


def _bars(ts: int, prices: dict[str, float | None]) -> pa.RecordBatch:
    syms = list(prices)
    px = [prices[s] for s in syms]
    return pa.RecordBatch.from_pydict(
        {"ts": [ts] * len(syms), "symbol": syms, "open": px, "high": px, "low": px, "close": px,
         "volume": [1e6] * len(syms)},
        schema=BAR_SCHEMA,
    )


def _book(equity: float, positions: dict[str, float] | None = None) -> PortfolioSnapshot:
    return PortfolioSnapshot(0, equity, equity, 0.0, 0.0, 0.0, 0.0, 0.0, equity, equity, positions or {}, {}, {})


def _write(tmp_path: Path, name: str, frame: pd.DataFrame) -> str:
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return str(path)


def test_csv_dates_apply_from_that_days_bar(tmp_path) -> None:
    path = _write(tmp_path, "w.csv", pd.DataFrame({"date": ["2024-01-02", "2024-01-04"], "AAA": [0.5, -0.25],
                                                   "BBB": [0.1, None]}))
    sched = load_weights(path)
    assert sched.symbols == ("AAA", "BBB")
    assert list(sched.ts_ns) == [_ns("2024-01-02"), _ns("2024-01-04")]
    strat = TargetWeightsStrategy(StrategyConfig(name="weights", weights_path=path), sched)
    assert strat.weights_at(_ns("2024-01-01") + CLOSE, ["AAA", "BBB"]) == {}  # before the first row
    assert strat.weights_at(_ns("2024-01-02") + CLOSE, ["AAA", "BBB"]) == {"AAA": 0.5, "BBB": 0.1}
    assert strat.weights_at(_ns("2024-01-03") + CLOSE, ["AAA", "BBB"]) == {"AAA": 0.5, "BBB": 0.1}  # as of
    assert strat.weights_at(_ns("2024-01-04") + CLOSE, ["BBB", "AAA", "ZZZ"]) == {"AAA": -0.25}  # empty: none


def test_parquet_ts_and_dense_alignment(tmp_path) -> None:
    ts = pd.to_datetime(["2024-01-02 14:30", "2024-01-02 14:35"]).tz_localize("UTC")
    path = _write(tmp_path, "w.parquet", pd.DataFrame({"ts": ts, "X": [0.2, 0.3], "Y": [-0.1, 0.0]}))
    sched = load_weights(path)
    bars = np.array([ts[0].value - 1, ts[0].value, ts[0].value + 1, ts[1].value])
    dense = sched.dense(bars, ["Y", "Q", "X"])
    expect = np.array([[np.nan] * 3, [-0.1, np.nan, 0.2], [-0.1, np.nan, 0.2], [0.0, np.nan, 0.3]])
    np.testing.assert_array_equal(dense, expect)


def test_orders_are_the_shared_sizing(tmp_path) -> None:
    """Each order is what rebalance_order makes from the leverage-scaled weight (same id, side, qty)."""
    limits = RiskConfig(max_gross_leverage=0.5, max_order_notional=30_000)
    cfg = StrategyConfig(name="weights", weights_path=str(tmp_path / "unused.csv"), rebalance_band=0.1)
    sched = WeightSchedule.from_array([0], ["A", "B", "C"], np.array([[0.3, -0.4, np.nan]]))
    strat = TargetWeightsStrategy(cfg, sched, wall_clock=lambda: 7, limits=limits)
    book = _book(200_000.0, {"B": -50.0})
    ts = _ns("2024-03-01") + CLOSE
    orders = strat.on_bars(_bars(ts, {"A": 25.0, "B": 40.0, "C": 10.0, "D": None}), book, {})
    w = scale_to_leverage({"A": 0.3, "B": -0.4}, limits)
    assert sum(abs(v) for v in w.values()) == pytest.approx(0.49)
    expect = [rebalance_order(cfg, "weights", ts, s, px, w[s], book, {}, 7, limits) for s, px in (("A", 25.0),
                                                                                                 ("B", 40.0))]
    assert orders == [o for o in expect if o is not None]
    assert [o.client_order_id for o in orders] == [f"weights-{ts}-A", f"weights-{ts}-B"]
    # A: 0.3 * 0.49/0.7 * 200k / 25 = 1680 shares, clipped to 30k notional = 1199 (whole shares below the limit)
    assert orders[0].qty == math.floor(30_000 / 25.0 * (1 - 1e-12)) == 1199
    assert strat.on_bars(_bars(ts - DAY, {"A": 25.0}), book, {}) != []  # the schedule's row 0 is at ts 0
    assert strat.warm_up([_bars(ts, {"A": 25.0}), _bars(ts + DAY, {"A": 26.0})]) == 2


def test_config_and_make_strategy(tmp_path) -> None:
    path = _write(tmp_path, "w.csv", pd.DataFrame({"date": ["2016-01-04"], "AAPL": [0.1]}))
    cfg = load_config(overrides={"strategy.name": "weights", "strategy.weights_path": path})
    assert isinstance(make_strategy(cfg.strategy, 1, limits=cfg.risk), TargetWeightsStrategy)
    with pytest.raises(ConfigError, match=r"strategy: weights_path: required"):
        load_config(overrides={"strategy.name": "weights"})
    with pytest.raises(ConfigError, match=r"strategy\.weights_path: .*\.parquet or \.csv"):
        load_config(overrides={"strategy.name": "weights", "strategy.weights_path": "w.xlsx"})


@pytest.mark.parametrize(
    ("name", "frame", "reason"),
    [
        ("w.csv", pd.DataFrame({"when": ["2024-01-02"], "A": [0.1]}), "needs a 'ts' or 'date' column"),
        ("w.csv", pd.DataFrame({"date": ["2024-01-02"], "A": ["lots"]}), "column 'A' is not numeric"),
        ("w.csv", pd.DataFrame({"date": ["not a date"], "A": [0.1]}), "column 'date' is not datetimes"),
        ("w.csv", pd.DataFrame({"date": ["2024-01-02", None], "A": [0.1, 0.2]}), "column 'date' has empty values"),
        ("w.csv", pd.DataFrame({"date": ["2024-01-03", "2024-01-02"], "A": [0.1, 0.2]}), "strictly increasing"),
        ("w.csv", pd.DataFrame({"date": ["2024-01-02", "2024-01-02"], "A": [0.1, 0.2]}), "strictly increasing"),
        ("w.parquet", pd.DataFrame({"ts": pd.to_datetime(["2024-01-02"]), "A": [np.inf]}), "A at row 0 is infinite"),
        ("w.parquet", pd.DataFrame({"ts": pd.to_datetime(["2024-01-02"])}), "no symbol columns"),
        ("w.csv", pd.DataFrame({"date": []}), "at least one row"),
    ],
)
def test_bad_files_name_the_field(tmp_path, name: str, frame: pd.DataFrame, reason: str) -> None:
    path = _write(tmp_path, name, frame)
    with pytest.raises(ConfigError, match=r"^strategy\.weights_path: ") as err:
        load_weights(path)
    assert reason in str(err.value)


def test_missing_and_corrupt_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"strategy\.weights_path: no such file"):
        load_weights(tmp_path / "absent.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match=r"strategy\.weights_path: cannot read bad\.parquet"):
        load_weights(bad)
    cfg = load_config(overrides={"strategy.name": "weights", "strategy.weights_path": str(tmp_path / "gone.csv")})
    with pytest.raises(ConfigError, match=r"strategy\.weights_path: no such file"):
        run_backtest(cfg)  # the backtest builds the strategy: a missing file is a config error, not a traceback


def test_backtest_holds_the_schedule(tmp_path) -> None:
    """End to end on real data: equal weights from a date on, flat before; the book ends near the weights."""
    data = {"data.source": "sp500_stocks", "data.symbols": ["AAPL", "KO"], "data.start": "2019-01-01",
            "data.end": "2019-03-29"}
    path = _write(tmp_path, "w.csv", pd.DataFrame({"date": ["2019-02-01"], "AAPL": [0.4], "KO": [-0.2]}))
    cfg = load_config(overrides={**data, "strategy.name": "weights", "strategy.weights_path": path,
                                 "risk.var_limit_pct": False})
    summary, ledger = run_backtest(cfg)
    orders = ledger.orders()
    assert orders and min(o["ts_ns"] for o in orders) >= _ns("2019-02-01")
    assert summary.rejected == 0
    pos = {p["symbol"]: p["qty"] * p["mark"] for p in ledger.positions()}
    assert pos["AAPL"] / summary.equity == pytest.approx(0.4, abs=0.4 * 0.25 + 0.01)  # within the band
    assert pos["KO"] / summary.equity == pytest.approx(-0.2, abs=0.2 * 0.25 + 0.01)
