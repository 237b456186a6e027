"""The vectorised engine against the event-driven one (the reference: SimBroker, sizing, Portfolio, the ledger).

Parity runs both on the same configuration and compares every fill (id, qty, price, fee), every order, the
per-bar equity and the summary. The pre-trade gate's checks that the vectorised engine does not model are set
out of the way in `_RISK_OFF` (kill switch, order rate, VaR, and the gate's gross/net exposure check); the order
and position limits stay on (sizing clips to them in both engines, so the gate never refuses for them), and each
event-driven run asserts it had no rejects, so parity is never compared across a refused order.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import tradesys.data
from tradesys.backtest.costs import (
    CostModel,
    SizingLimits,
    bar_liquidity,
    capped_qty,
    fees,
    fill_price,
    order_qty,
    scale_to_leverage,
    target_shares,
)
from tradesys.backtest.metrics import per_step_equity
from tradesys.backtest.runner import run_backtest
from tradesys.backtest.vectorized import (
    bars_from_config,
    batch_summaries,
    run_vectorized,
    simulate,
    trend_target_weights,
)
from tradesys.config import ConfigError, RiskConfig, StrategyConfig, TradesysConfig
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.data import TableSource, bars_table
from tradesys.strategy import sizing
from tradesys.strategy.trend import TrendStrategy

# the gate's checks the vectorised engine does not model, set out of the way (see the module docstring)
_RISK_OFF = {
    "daily_loss_limit_pct": 0.99,  # kill switch
    "max_orders_per_window": 10**7,  # order rate
    "var_limit_pct": None,  # VaR limit
    "max_gross_leverage": None,  # the gate's exposure check (and the strategy's leverage scaling with it)
    "max_net_leverage": None,
}
SP500 = {"source": "sp500_stocks", "symbols": ["AAPL", "JPM", "XOM", "KO"], "start": "2019-01-01",
         "end": "2020-06-30"}
SYNTH = {"source": "synthetic", "synthetic_days": 2, "synthetic_bar_seconds": 300}


def _cfg(data: dict, strategy: dict, risk: dict | None = None, broker: dict | None = None) -> TradesysConfig:
    return TradesysConfig.model_validate(
        {"data": data, "strategy": strategy, "risk": {**_RISK_OFF, **(risk or {})}, "broker": broker or {}}
    )


def _random_schedule(cfg: TradesysConfig, path, seed: int, every: int = 5, scale: float = 0.3) -> str:
    """A seeded random target-weight file on the data's own bar times (every `every` bars), written as Parquet."""
    bars, _, _ = bars_from_config(cfg)
    rng = np.random.default_rng(seed)
    rows = np.arange(0, bars.shape[0], every)
    w = rng.uniform(-scale, scale, (len(rows), bars.shape[1]))
    w[rng.random(w.shape) < 0.1] = np.nan  # empty cells: no opinion
    frame = pd.DataFrame(w, columns=list(bars.symbols))
    frame.insert(0, "ts", pd.to_datetime(bars.ts_ns[rows], utc=True))
    out = path / f"weights_{seed}.parquet"
    frame.to_parquet(out)
    return str(out)


def _assert_same_books(cfg: TradesysConfig, strategy_id: str | None = None) -> tuple:
    """Run both engines on `cfg`; require the same orders, fills, equity and summary. Returns both results."""
    summary, ledger = run_backtest(cfg)
    assert summary.rejected == 0, summary.risk  # nothing refused: the gate's checks are out of the way
    vec = run_vectorized(cfg, strategy_id=strategy_id)

    ev = pd.DataFrame(ledger.fills()).set_index("fill_id").sort_index()
    vf = vec.fills.set_index("fill_id").sort_index()
    assert list(ev.index) == list(vf.index)  # same fill ids, so the same orders filled, same number of times
    for col in ("client_order_id", "symbol", "side", "ts_ns"):
        assert list(ev[col]) == list(vf[col]), col
    for col in ("qty", "price", "fee"):
        np.testing.assert_allclose(vf[col].to_numpy(), ev[col].to_numpy(), rtol=1e-8, atol=0, err_msg=col)

    eo = pd.DataFrame(ledger.orders()).set_index("client_order_id").sort_index()
    vo = vec.orders.set_index("client_order_id").sort_index()
    assert list(eo.index) == list(vo.index)
    assert list(eo["side"]) == list(vo["side"])
    assert list(eo["status"]) == list(vo["status"])
    np.testing.assert_allclose(vo["qty"].to_numpy(), eo["qty"].to_numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(vo["filled_qty"].to_numpy(), eo["filled_qty"].to_numpy(), rtol=1e-12, atol=1e-9)

    eq = per_step_equity(ledger.equity_curve())
    np.testing.assert_allclose(vec.equity, eq, rtol=1e-8, atol=0)
    final = {p["symbol"]: p["qty"] for p in ledger.positions()}
    got = {s: q for s, q in zip(vec.symbols, vec.positions[-1], strict=True) if q != 0}
    assert got.keys() == final.keys()
    for s, q in final.items():
        assert got[s] == pytest.approx(q, rel=1e-12, abs=1e-9)

    vs = vec.summary
    assert (vs.steps, vs.orders, vs.fills) == (summary.steps, summary.orders, summary.fills)
    for name in ("equity", "total_return", "max_drawdown", "sharpe"):
        assert getattr(vs, name) == pytest.approx(getattr(summary, name), rel=1e-8, abs=1e-12), name
    return summary, ledger, vec


# ------------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize(
    ("data", "broker"),
    [
        (SP500, {"fee_min": 1.0}),  # real daily bars; no volume in this data set, so the cap never binds
        (SYNTH, {"participation_cap": 1.0, "fee_min": 1.0}),  # synthetic intraday bars, cap never binds
    ],
    ids=["sp500", "synthetic"],
)
def test_weights_parity(tmp_path, data: dict, broker: dict) -> None:
    path = _random_schedule(_cfg(data, {"name": "trend"}), tmp_path, seed=11)
    cfg = _cfg(data, {"name": "weights", "weights_path": path}, broker=broker)
    _, _, vec = _assert_same_books(cfg)
    assert len(vec.fills) > 50
    assert not vec.fills["fill_id"].str.endswith(":2").any()  # nothing rested: no participation cap binds


def test_weights_parity_binding_participation_cap(tmp_path) -> None:
    """A cap small enough that most orders fill in part at the close and the rest at the next open."""
    path = _random_schedule(_cfg(SYNTH, {"name": "trend"}), tmp_path, seed=5, every=7)
    cfg = _cfg(SYNTH, {"name": "weights", "weights_path": path}, broker={"participation_cap": 0.0005})
    _, ledger, vec = _assert_same_books(cfg)
    second = vec.fills["fill_id"].str.endswith(":2")
    assert second.sum() > 20  # resting remainders filled at the next bar's open
    assert (vec.orders["status"] == "expired").sum() > 10  # and the rest of them expired
    assert any(r["status"] == "expired" for r in ledger.orders())


def test_weights_parity_with_leverage_scaling_and_order_limits(tmp_path) -> None:
    """scale_to_leverage binds most bars, and the order notional and position limits clip many orders."""
    path = _random_schedule(_cfg(SP500, {"name": "trend"}), tmp_path, seed=2, every=3, scale=0.6)
    cfg = _cfg(
        SP500,
        {"name": "weights", "weights_path": path, "rebalance_band": 0.05},
        # a gross limit the strategy scales to (2% inside it), so the gate's own check never refuses here (a
        # tighter net limit does: prices drift between rebalances, and the gate's refusals are not modelled)
        risk={"max_gross_leverage": 1.0, "max_net_leverage": 1.0, "max_order_notional": 60_000,
              "max_position_notional": 250_000},
    )
    _, _, vec = _assert_same_books(cfg)
    gross = np.nansum(np.abs(vec.weights), axis=1)
    assert gross.max() <= 0.98 * (1 + 1e-12)
    assert (np.abs(gross - 0.98) < 1e-12).sum() > 100  # scaled down on most bars
    notional = vec.fills["qty"] * vec.fills["price"]
    assert (notional > 0.99 * 60_000).sum() > 10  # orders were clipped at the notional limit


@pytest.mark.parametrize(
    ("data", "broker"),
    [(SP500, {}), (SYNTH, {"participation_cap": 0.002})],
    ids=["sp500", "synthetic-capped"],
)
def test_trend_parity(data: dict, broker: dict) -> None:
    cfg = _cfg(data, {"name": "trend", "fast": 5, "slow": 20, "vol_lookback": 10, "max_weight": 0.3}, broker=broker)
    _, _, vec = _assert_same_books(cfg)
    assert len(vec.fills) > 30


def test_trend_weights_match_the_strategy_bit_for_bit() -> None:
    """trend_target_weights == TrendStrategy.target_weight on each symbol's usable history, with gaps in the data
    (per-symbol histories skip missing bars), shorts off, and a flat stretch (sigma = 0 -> weight 0)."""
    rng = np.random.default_rng(0)
    t, n = 300, 4
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (t, n)), axis=0))
    close[rng.random((t, n)) < 0.15] = np.nan
    close[:40, 2] = np.nan  # a late starter
    close[100:140, 3] = 55.0  # flat: zero volatility
    for allow_short in (True, False):
        cfg = StrategyConfig(fast=5, slow=30, vol_lookback=12, max_weight=0.4, allow_short=allow_short)
        w = trend_target_weights(close, cfg, 252.0, None, n_symbols=7)
        strat = TrendStrategy(cfg, 7, 252.0)
        keep = max(cfg.slow, cfg.vol_lookback + 1)
        checked = 0
        for j in range(n):
            rows = np.flatnonzero(np.isfinite(close[:, j]))
            c = close[rows, j]
            for k, row in enumerate(rows):
                assert w[row, j] == strat.target_weight(c[max(0, k + 1 - keep) : k + 1].copy()), (row, j)
                checked += 1
        assert np.isnan(w[~np.isfinite(close)]).all()
        assert checked == np.isfinite(close).sum()
        assert (w != 0).sum() > 100
        assert allow_short or np.nanmin(w) >= 0


def test_trend_weights_scaled_like_the_strategy() -> None:
    """With leverage limits, each bar's weights equal sizing.scale_to_leverage of the strategy's dict."""
    rng = np.random.default_rng(1)
    close = 50 * np.exp(np.cumsum(rng.normal(0.001, 0.01, (200, 6)), axis=0))
    cfg = StrategyConfig(fast=3, slow=10, vol_lookback=5, max_weight=0.5, target_vol=2.0)
    limits = RiskConfig(max_gross_leverage=1.0, max_net_leverage=0.5)
    raw = trend_target_weights(close, cfg, 252.0, None)
    scaled = trend_target_weights(close, cfg, 252.0, limits)
    changed = 0
    for i in range(len(close)):
        ref = sizing.scale_to_leverage({str(j): raw[i, j] for j in range(6)}, limits)
        assert [ref[str(j)] for j in range(6)] == list(scaled[i])
        changed += bool((scaled[i] != raw[i]).any())
    assert changed > 50


def test_missing_bars_and_late_symbols(tmp_path, monkeypatch) -> None:
    """Bars with holes, a symbol that starts late (so the book lists positions out of name order), NaN volume on
    some bars: a remainder rests until its symbol's next usable bar, in both engines alike."""
    rng = np.random.default_rng(4)
    t, syms = 120, ["AAA", "BBB", "CCC"]
    stamps = np.datetime64("2024-01-02T14:30") + np.arange(t) * np.timedelta64(5, "m")
    rows = []
    for j, s in enumerate(syms):
        px = 40 * (j + 1) * np.exp(np.cumsum(rng.normal(0, 0.004, t)))
        for i in range(t):
            if (s == "AAA" and i < 15) or rng.random() < 0.15:
                continue  # no bar
            vol = np.nan if rng.random() < 0.1 else float(rng.integers(5_000, 40_000))
            o = px[i - 1] if i else px[i]
            rows.append((stamps[i], s, o, max(o, px[i]), min(o, px[i]), px[i], vol))
    table = bars_table(pd.DataFrame(rows, columns=["ts", "symbol", "open", "high", "low", "close", "volume"]))
    monkeypatch.setattr(tradesys.data, "make_source", lambda cfg: TableSource(table))
    data = {"source": "synthetic"}
    path = _random_schedule(_cfg(data, {"name": "trend"}), tmp_path, seed=9, every=4, scale=0.5)
    cfg = _cfg(data, {"name": "weights", "weights_path": path}, broker={"participation_cap": 0.02})
    bars, _, _ = bars_from_config(cfg)
    assert bars.symbols[0] != "AAA"  # first-appearance order
    _, _, vec = _assert_same_books(cfg)
    # a remainder filled after a gap: its fill is stamped later than the bar after the order's bar
    rest = vec.fills[vec.fills["fill_id"].str.endswith(":2")]
    order_ts = rest["client_order_id"].str.rsplit("-", n=2).str[1].astype(np.int64)
    next_bar = {int(a): int(b) for a, b in zip(bars.ts_ns[:-1], bars.ts_ns[1:], strict=True)}
    assert (rest["ts_ns"].to_numpy() > np.array([next_bar[int(x)] for x in order_ts])).any()


# ------------------------------------------------------------------------------------------------ conservation


def test_conservation_and_fee_formula(tmp_path) -> None:
    path = _random_schedule(_cfg(SYNTH, {"name": "trend"}), tmp_path, seed=3, every=6)
    cfg = _cfg(SYNTH, {"name": "weights", "weights_path": path},
               broker={"participation_cap": 0.001, "fee_bps": 1.5, "fee_min": 2.0, "slippage_bps": 3.0})
    vec = run_vectorized(cfg)
    bars, _, _ = bars_from_config(cfg)
    marks = pd.DataFrame(bars.close).ffill().to_numpy()
    # cash + sum(qty * close) == equity, every bar
    mv = np.nansum(vec.positions * marks, axis=1)
    np.testing.assert_allclose(vec.cash + mv, vec.equity, rtol=1e-12)
    # every fill has an order, on the same symbol and side, and no order is overfilled
    orders = vec.orders.set_index("client_order_id")
    f = vec.fills
    assert f["client_order_id"].isin(orders.index).all()
    assert (orders.loc[f["client_order_id"], "symbol"].to_numpy() == f["symbol"].to_numpy()).all()
    assert (orders.loc[f["client_order_id"], "side"].to_numpy() == f["side"].to_numpy()).all()
    per_order = f.groupby("client_order_id")["qty"].sum()
    assert (per_order <= orders.loc[per_order.index, "qty"] + 1e-9).all()
    # fees: max(fee_min, fee_bps / 1e4 * qty * price); fee_min binds on the small capped fills
    expect = np.maximum(2.0, 1.5e-4 * f["qty"] * f["price"])
    np.testing.assert_allclose(f["fee"], expect, rtol=1e-12)
    assert (f["fee"] == 2.0).any() and (f["fee"] > 2.0).any()
    assert vec.costs["fees"] == pytest.approx(f["fee"].sum(), rel=1e-12)
    # cash: initial - sum(signed qty * price + fee); positions: cumulative signed fills
    signed = np.where(f["side"] == "buy", 1.0, -1.0) * f["qty"]
    assert vec.cash[-1] == pytest.approx(cfg.initial_cash - float((signed * f["price"]).sum() + f["fee"].sum()),
                                         rel=1e-10)
    by_sym = signed.groupby(f["symbol"]).sum()
    for j, s in enumerate(vec.symbols):
        assert vec.positions[-1, j] == pytest.approx(by_sym.get(s, 0.0), abs=1e-6)
    # fill prices: close * (1 +/- slip) on the order's bar, open * (1 +/- slip) for a remainder on the next
    idx = {int(x): i for i, x in enumerate(bars.ts_ns)}
    col = {s: j for j, s in enumerate(bars.symbols)}
    for r in f.itertuples():
        i, j = idx[int(r.ts_ns)], col[r.symbol]
        ref = bars.close[i, j] if r.fill_id.endswith(":1") and r.client_order_id.endswith(f"{r.ts_ns}-{r.symbol}") \
            else bars.open[i, j]
        assert r.price == pytest.approx(ref * (1 + 3e-4 if r.side == "buy" else 1 - 3e-4), rel=1e-14)


def test_batch_axis_matches_single_runs() -> None:
    """Several schedules in one call book exactly what each books alone; record=False keeps the same equity."""
    cfg = _cfg(SYNTH, {"name": "trend"}, broker={"participation_cap": 0.001})
    bars, _, _ = bars_from_config(cfg)
    rng = np.random.default_rng(8)
    w = rng.uniform(-0.3, 0.3, (3, *bars.shape))
    costs = CostModel.from_config(cfg.broker)
    lim = SizingLimits.from_config(0.2, cfg.risk)
    batch = simulate(bars, w, costs, lim, 1e6)
    quiet = simulate(bars, w, costs, lim, 1e6, record=False)
    assert quiet.positions is None
    np.testing.assert_array_equal(quiet.equity, batch.equity)
    for b in range(3):
        one = simulate(bars, w[b], costs, lim, 1e6)
        np.testing.assert_array_equal(one.equity[0], batch.equity[b])
        np.testing.assert_array_equal(one.submit_qty[0], batch.submit_qty[b])
        assert one.n_fills[0] == batch.n_fills[b] > 0


def test_trend_sweep_in_one_call_matches_each_run() -> None:
    """A fast/slow grid as one batched simulate: each schedule's summary equals run_vectorized on that config."""
    grid = [(3, 12), (5, 20), (8, 30)]
    cfgs = [_cfg(SYNTH, {"name": "trend", "fast": f, "slow": s, "max_weight": 0.3}, broker={"participation_cap": 0.01})
            for f, s in grid]
    bars, n, bpy = bars_from_config(cfgs[0])
    w = np.stack([trend_target_weights(bars.close, c.strategy, bpy, c.risk, n, bars.valid) for c in cfgs])
    c0 = cfgs[0]
    sim = simulate(bars, w, CostModel.from_config(c0.broker), SizingLimits.from_config(c0.strategy.rebalance_band,
                                                                                        c0.risk), 1e6, record=False)
    for cfg, got in zip(cfgs, batch_summaries(sim, bars.ts_ns, 1e6), strict=True):
        ref = run_vectorized(cfg).summary
        assert (got.equity, got.sharpe, got.max_drawdown, got.orders, got.fills) == (
            ref.equity, ref.sharpe, ref.max_drawdown, ref.orders, ref.fills)
    assert len({s.equity for s in batch_summaries(sim, bars.ts_ns, 1e6)}) == 3


# ------------------------------------------------------------------------------------------------ costs.py


def _book(equity: float, positions: dict[str, float]) -> PortfolioSnapshot:
    return PortfolioSnapshot(0, equity, equity, 0.0, 0.0, 0.0, 0.0, 0.0, equity, equity, positions, {}, {})


def test_sizing_arrays_equal_rebalance_order() -> None:
    """target_shares + order_qty give exactly the order `sizing.rebalance_order` makes, over random books."""
    rng = np.random.default_rng(12)
    n = 4000
    w = rng.uniform(-0.5, 0.5, n)
    w[rng.random(n) < 0.05] = 0.0
    px = np.exp(rng.uniform(0, 7, n))
    eq = rng.uniform(5e4, 5e6, n)
    have = np.round(rng.normal(0, 1, n) * 0.3 * eq / px)
    have[rng.random(n) < 0.2] = 0.0
    scfg = StrategyConfig(rebalance_band=0.1)
    limits = RiskConfig(max_order_qty=3_000.5, max_order_notional=150_000, max_position_notional=600_000)
    lim = SizingLimits.from_config(scfg.rebalance_band, limits)
    got = order_qty(target_shares(w, eq, px, lim.max_position_notional), have, px, lim)
    for i in range(n):
        o = sizing.rebalance_order(scfg, "s", 1, "X", float(px[i]), float(w[i]), _book(float(eq[i]), {"X": have[i]}),
                                   {}, 0, limits)
        assert got[i] == (0.0 if o is None else o.signed_qty), i
    assert (got != 0).sum() > n // 2 and (got == 0).sum() > n // 40  # both branches well covered


def test_scale_to_leverage_equals_sizing() -> None:
    rng = np.random.default_rng(13)
    w = rng.uniform(-0.6, 0.8, (500, 7))
    w[rng.random(w.shape) < 0.1] = np.nan
    limits = RiskConfig(max_gross_leverage=1.5, max_net_leverage=0.7)
    got = scale_to_leverage(w, limits.max_gross_leverage, limits.max_net_leverage)
    for i in range(len(w)):
        ref = sizing.scale_to_leverage({str(j): w[i, j] for j in range(7)}, limits)
        np.testing.assert_array_equal(got[i], [ref[str(j)] for j in range(7)])
    batched = scale_to_leverage(w.reshape(5, 100, 7), 1.5, 0.7)  # leading batch axis
    np.testing.assert_array_equal(batched.reshape(500, 7), got)


def test_venue_formulas() -> None:
    """Closed forms of the SimBroker rules (module docstring of tradesys.broker.sim)."""
    np.testing.assert_array_equal(fill_price([100.0, 100.0], [1, -1], 2e-4), [100.0 * 1.0002, 100.0 * 0.9998])
    np.testing.assert_array_equal(fees([0.0, 10.0, -1.0, 1e6], [100.0, 100.0, 1.0, 10.0], 0.5e-4, 1.0),
                                  [0.0, 1.0, 1.0, 500.0])
    np.testing.assert_array_equal(bar_liquidity([np.nan, -5.0, 1000.0], 0.1), [math.inf, 0.0, 100.0])
    np.testing.assert_array_equal(capped_qty([50.0, 50.0, 50.0], [math.inf, 20.0, 1e-10]), [50.0, 20.0, 0.0])
    assert CostModel.from_config(TradesysConfig().broker).slip == 2e-4
    with pytest.raises(ConfigError, match=r"broker\.participation_cap"):
        CostModel(participation_cap=0.0)


# ------------------------------------------------------------------------------------------------ errors


def test_run_vectorized_refuses_what_it_does_not_model(tmp_path) -> None:
    base = {"data": SYNTH}
    with pytest.raises(ConfigError, match=r"strategy\.order_type"):
        run_vectorized(TradesysConfig.model_validate({**base, "strategy": {"order_type": "limit"}}))
    bad = TradesysConfig.model_validate({**base, "strategy": {"name": "model", "standardizer_path": "/x.json",
                                                                "model_path": "/x.onnx"}})
    with pytest.raises(ConfigError, match=r"strategy\.name"):
        run_vectorized(bad)
    with pytest.raises(ConfigError, match="weights: expected shape"):
        run_vectorized(TradesysConfig.model_validate(base), weights=np.zeros((3, 3)))
    other = tmp_path / "w.csv"
    pd.DataFrame({"date": ["2024-01-02"], "NOPE": [0.1]}).to_csv(other, index=False)
    cfg = TradesysConfig.model_validate({**base, "strategy": {"name": "weights", "weights_path": str(other)}})
    with pytest.raises(ConfigError, match=r"strategy\.weights_path: no weight column names a symbol"):
        run_vectorized(cfg)
