"""Square-root market impact: the model against its closed form, calibration against pandas on the same bars,
SimBroker's prices with impact and quotes computed by hand, a venue rebuilt from the ledger pricing the same, and
the engines that refuse or pick the model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tradesys.backtest.sweep import check_engine, trial_engine
from tradesys.broker.sim import SimBroker
from tradesys.config import BrokerConfig, ConfigError, load_config
from tradesys.core.orders import Order, OrderType, Side, TimeInForce
from tradesys.core.schemas import BAR_SCHEMA, QUOTE_SCHEMA, batch_ts
from tradesys.data import make_source
from tradesys.data.synthetic import SyntheticIntradaySource
from tradesys.engine.step import run_step
from tradesys.execution.impact import DailyCalibrator, ImpactParams, SqrtImpact, calibrate, daily_stats

DAY = 86_400 * 10**9
T0 = 19_723 * DAY + 15 * 3600 * 10**9  # 2024-01-01 15:00 UTC
BUY, SELL = Side.BUY, Side.SELL


# ------------------------------------------------------------------------------------------------ the model


def test_temporary_and_permanent_match_the_closed_form() -> None:
    m = SqrtImpact(eta=0.142, gamma=0.314)
    p = ImpactParams(adv=2_000_000.0, sigma_daily=0.02, days=20)
    for q in (100.0, 20_000.0, 400_000.0):
        assert m.temporary(q, p, 0.0001) == pytest.approx(0.0001 + 0.142 * 0.02 * math.sqrt(q / 2e6), rel=1e-15)
        assert m.permanent(q, p) == pytest.approx(0.314 * 0.02 * q / 2e6, rel=1e-15)
    # a 5%-of-ADV order: 0.142 * 2% * sqrt(0.05) = 6.35 bps of temporary cost, 3.14 bps of permanent shift
    assert m.temporary(100_000.0, p) * 1e4 == pytest.approx(6.3504, abs=1e-4)
    assert m.permanent(100_000.0, p) * 1e4 == pytest.approx(3.14, abs=1e-12)
    assert m.fill_price(50.0, True, 100_000.0, p, 0.0) == pytest.approx(50.0 * (1 + m.temporary(1e5, p)), rel=1e-15)
    assert m.fill_price(50.0, False, 100_000.0, p, 0.0) == pytest.approx(50.0 * (1 - m.temporary(1e5, p)), rel=1e-15)
    assert m.fill_price(50.0, True, 100_000.0, None, 0.0002) == 50.0 * 1.0002  # uncalibrated: flat


def test_cost_per_share_grows_like_the_square_root_of_size() -> None:
    m = SqrtImpact()
    p = ImpactParams(adv=1e6, sigma_daily=0.015, days=20)
    q = np.geomspace(10.0, 1e6, 60)
    impact = np.array([m.temporary(x, p) for x in q])  # no spread: the impact term alone
    assert np.all(np.diff(impact) > 0), "more shares cost more per share"
    for x in (1e3, 5e4, 2e5):
        assert m.temporary(2 * x, p) / m.temporary(x, p) == pytest.approx(math.sqrt(2), rel=1e-12)
        assert m.permanent(2 * x, p) / m.permanent(x, p) == pytest.approx(2.0, rel=1e-12)
    lin = np.linspace(1e3, 1e6, 50)
    per_share = np.array([m.temporary(x, p) for x in lin])
    assert np.all(np.diff(per_share, 2) < 0), "cost per share is concave in size"
    total = lin * per_share  # the order's total temporary cost grows like q^(3/2): convex
    assert np.all(np.diff(total, 2) > 0)
    assert (2e5 * m.temporary(2e5, p)) / (1e5 * m.temporary(1e5, p)) == pytest.approx(2**1.5, rel=1e-12)
    # splitting an order into n equal pieces (no permanent impact) cuts the temporary cost by sqrt(n)
    whole = 1e5 * m.temporary(1e5, p)
    parts = 10 * 1e4 * m.temporary(1e4, p)
    assert whole / parts == pytest.approx(math.sqrt(10), rel=1e-12)


# ------------------------------------------------------------------------------------------------ calibration


@pytest.fixture(scope="module")
def synth() -> SyntheticIntradaySource:
    return SyntheticIntradaySource(("ALPHA", "BRAVO"), days=45, bar_seconds=600, seed=11, sigma=(0.2, 0.4))


def _pandas_calibration(table: pa.Table, window: int) -> dict[str, tuple[float, float]]:
    """The same statistic written independently in pandas: daily sum of volume, last close, trailing window."""
    df = table.to_pandas()
    df["day"] = df["ts"].dt.tz_convert("UTC").dt.floor("D")
    daily = df.sort_values("ts").groupby(["symbol", "day"]).agg(volume=("volume", "sum"), close=("close", "last"))
    out = {}
    for sym, g in daily.groupby(level="symbol"):
        g = g.tail(window)
        out[str(sym)] = (float(g["volume"].mean()), float(np.log(g["close"]).diff().dropna().std()))
    return out


def test_calibration_matches_pandas_on_the_same_bars(synth: SyntheticIntradaySource) -> None:
    table = synth.table
    for window in (3, 10, 45):
        got = calibrate(table, window)
        want = _pandas_calibration(table, window)
        assert set(got) == set(want) == {"ALPHA", "BRAVO"}
        for sym, (adv, sigma) in want.items():
            assert got[sym].adv == pytest.approx(adv, rel=1e-12)
            assert got[sym].sigma_daily == pytest.approx(sigma, rel=1e-9)
            assert got[sym].days == window


def test_calibration_recovers_the_synthetic_market_s_true_parameters(synth: SyntheticIntradaySource) -> None:
    """The generator's volume is volume_base per bar on average and its diffusion sigma is annualised over 252
    sessions: 45 days estimate both within sampling error (sigma's standard error is about 1/sqrt(2 * 44) = 11%)."""
    got = calibrate(synth.table, 45)
    bars_per_day = 23_400 // 600
    for sym, sigma_year in (("ALPHA", 0.2), ("BRAVO", 0.4)):
        assert got[sym].adv == pytest.approx(50_000.0 * bars_per_day, rel=0.05)
        assert got[sym].sigma_daily == pytest.approx(sigma_year / math.sqrt(252), rel=0.3)
    assert got["BRAVO"].sigma_daily > got["ALPHA"].sigma_daily


def test_too_little_history_gives_no_parameters() -> None:
    rows = _day_bars([(100.0, 1e6), (101.0, 1e6)])
    assert calibrate(rows) == {}
    assert calibrate(_day_bars([(100.0, 1e6), (101.0, 1e6), (99.0, 1e6)]))["AAA"].days == 3
    assert calibrate(_day_bars([(100.0, 0.0)] * 5)) == {}  # no volume: no ADV to divide by
    with pytest.raises(ValueError, match="window"):
        calibrate(rows, 2)


def test_online_calibration_equals_calibrate_on_the_completed_days(synth: SyntheticIntradaySource) -> None:
    table = synth.table.filter(pc.equal(synth.table["symbol"], "BRAVO"))
    cal = DailyCalibrator(window=7)
    ts = table["ts"].cast(pa.int64()).to_numpy()
    close, vol = table["close"].to_numpy(), table["volume"].to_numpy()
    checked = 0
    for i in range(len(ts)):
        cal.update("BRAVO", int(ts[i]), float(close[i]), float(vol[i]))
        if i % 37 == 0 or (i + 1 < len(ts) and ts[i + 1] // DAY != ts[i] // DAY):
            before = table.filter(pc.less(table["ts"].cast(pa.int64()), int(ts[i] // DAY) * DAY))
            want = calibrate(before, 7).get("BRAVO") if before.num_rows else None
            got = cal.params("BRAVO")
            if want is None:
                assert got is None
            else:
                assert got is not None
                assert (got.adv, got.days) == (want.adv, want.days)
                assert got.sigma_daily == pytest.approx(want.sigma_daily, rel=1e-12)
                checked += 1
    assert checked > 30


# ------------------------------------------------------------------------------------------------ SimBroker


def _day_bars(days: list[tuple[float, float]], sym: str = "AAA", per_day: int = 2) -> pa.Table:
    """`per_day` bars a day at T0 + d days; each day's volume split evenly, its last close as given."""
    rows = []
    for d, (close, volume) in enumerate(days):
        for k in range(per_day):
            rows.append({"ts": T0 + d * DAY + k * 60 * 10**9, "symbol": sym, "open": close, "high": close * 1.01,
                         "low": close * 0.99, "close": close, "volume": volume / per_day})
    return pa.Table.from_pylist(rows, schema=BAR_SCHEMA)


def _feed(venue: SimBroker, table: pa.Table) -> list[pa.RecordBatch]:
    out = []
    for i in range(table.num_rows):
        b = table.slice(i, 1).to_batches()[0]
        venue.on_bars(b)
        out.append(b)
    return out


HISTORY = [(100.0, 1e6), (102.0, 1.2e6), (99.0, 0.8e6), (101.0, 1.0e6), (100.0, 1.0e6)]


def _sqrt_venue(**kw: Any) -> tuple[SimBroker, list[pa.RecordBatch]]:
    cfg = BrokerConfig(impact="sqrt", fee_bps=0.0, slippage_bps=1.0, participation_cap=1.0, **kw)
    venue = SimBroker(cfg, wall_clock=lambda: 0)
    return venue, _feed(venue, _day_bars(HISTORY))


def _by_hand(days: list[tuple[float, float]]) -> tuple[float, float]:
    """ADV and sigma of the completed days, written out."""
    vols = [v for _, v in days]
    rets = [math.log(days[i][0] / days[i - 1][0]) for i in range(1, len(days))]
    mean = sum(rets) / len(rets)
    return sum(vols) / len(vols), math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1))


def test_sqrt_venue_prices_market_orders_with_temporary_and_permanent_impact() -> None:
    venue, _ = _sqrt_venue()
    adv, sigma = _by_hand(HISTORY[:4])  # the fifth day is today: not complete
    p = venue.impact_params("AAA")
    assert p is not None and p.adv == pytest.approx(adv, rel=1e-12) and p.sigma_daily == pytest.approx(sigma, 1e-12)
    q1, q2 = 20_000.0, 5_000.0
    ev = venue.submit([Order("b1", "AAA", BUY, q1)])
    f1 = next(e.fill for e in ev if e.fill)
    want1 = 100.0 * (1 + 1e-4 + 0.142 * sigma * math.sqrt(q1 / adv))
    assert f1.price == pytest.approx(want1, rel=1e-13)
    shift = 0.314 * sigma * q1 / adv
    assert venue.impact_shift("AAA") == pytest.approx(shift, rel=1e-13)
    ev = venue.submit([Order("s1", "AAA", SELL, q2)])
    f2 = next(e.fill for e in ev if e.fill)
    want2 = 100.0 * math.exp(shift) * (1 - 1e-4 - 0.142 * sigma * math.sqrt(q2 / adv))
    assert f2.price == pytest.approx(want2, rel=1e-13)
    assert venue.impact_shift("AAA") == pytest.approx(shift - 0.314 * sigma * q2 / adv, rel=1e-12)
    assert venue.flat_priced_fills == 0
    # the same order on a flat venue pays the slippage only: impact costs more, and more per share for more shares
    flat = SimBroker(BrokerConfig(fee_bps=0.0, slippage_bps=1.0, participation_cap=1.0), wall_clock=lambda: 0)
    _feed(flat, _day_bars(HISTORY))
    assert next(e.fill for e in flat.submit([Order("b1", "AAA", BUY, q1)]) if e.fill).price == 100.0 * (1 + 1e-4)


def test_sqrt_venue_prices_flat_until_three_days_are_complete() -> None:
    cfg = BrokerConfig(impact="sqrt", fee_bps=0.0, slippage_bps=1.0, participation_cap=1.0)
    venue = SimBroker(cfg, wall_clock=lambda: 0)
    _feed(venue, _day_bars(HISTORY[:3]))
    assert venue.impact_params("AAA") is None
    f = next(e.fill for e in venue.submit([Order("b", "AAA", BUY, 1e4)]) if e.fill)
    assert f.price == 99.0 * (1 + 1e-4) and venue.flat_priced_fills == 1 and venue.impact_shift("AAA") == 0.0


def test_resting_orders_pay_impact_at_the_next_open_and_limits_are_never_worse() -> None:
    venue, _ = _sqrt_venue()
    adv, sigma = _by_hand(HISTORY[:4])
    temp = lambda q: 1e-4 + 0.142 * sigma * math.sqrt(q / adv)  # noqa: E731
    lim = 100.0 * (1 + temp(5e4)) - 0.01  # marketable, but the impact would take the price through it
    ev = venue.submit([Order("l", "AAA", BUY, 5e4, OrderType.LIMIT, limit_price=lim)])
    assert next(e.fill for e in ev if e.fill).price == lim
    shift = 0.314 * sigma * 5e4 / adv
    venue.submit([Order("m", "AAA", BUY, 3e4, tif=TimeInForce.GTC)])
    assert venue.liquidity_left("AAA") == pytest.approx(5e5 - 8e4)  # the bar's 5e5, less what filled
    nxt = pa.RecordBatch.from_pylist([{"ts": T0 + 5 * DAY, "symbol": "AAA", "open": 103.0, "high": 104.0,
                                       "low": 102.0, "close": 103.0, "volume": 1e6}], schema=BAR_SCHEMA)
    shift += 0.314 * sigma * 3e4 / adv
    venue.submit([Order("m2", "AAA", BUY, 2e4, tif=TimeInForce.GTC, type=OrderType.STOP, stop_price=1e9)])
    got = venue.on_bars(nxt)
    assert not [e for e in got if e.fill]  # a stop far away never triggers
    # the day rolled: today's calibration takes in the fifth day
    adv5, sigma5 = _by_hand(HISTORY)
    p = venue.impact_params("AAA")
    assert p is not None and p.adv == pytest.approx(adv5) and p.sigma_daily == pytest.approx(sigma5)
    ev = venue.submit([Order("m3", "AAA", BUY, 1e4)])
    want = 103.0 * math.exp(shift) * (1 + 1e-4 + 0.142 * sigma5 * math.sqrt(1e4 / adv5))
    assert next(e.fill for e in ev if e.fill).price == pytest.approx(want, rel=1e-13)


def _quotes(ts: int, bid: float, ask: float, sym: str = "AAA") -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{"ts": ts, "symbol": sym, "bid": bid, "ask": ask, "bid_size": 100.0,
                                        "ask_size": 100.0}], schema=QUOTE_SCHEMA)


def test_a_fresh_quote_prices_market_orders_at_the_touch_until_it_goes_stale() -> None:
    venue = SimBroker(BrokerConfig(fee_bps=0.0, slippage_bps=5.0, participation_cap=1.0), wall_clock=lambda: 0)
    batches = _feed(venue, _day_bars([(100.0, 1e6)], per_day=2))
    last = batch_ts(batches[-1])
    venue.on_quotes(_quotes(last - 10**9, 99.95, 100.07))  # inside the last bar's interval
    venue.on_quotes(_quotes(last - 2 * 10**9, 1.0, 500.0))  # older than the quote held: ignored
    venue.on_quotes(_quotes(last, 101.0, 100.0))  # crossed: ignored
    assert venue.quote("AAA") == (99.95, 100.07)
    assert next(e.fill for e in venue.submit([Order("b", "AAA", BUY, 10.0)]) if e.fill).price == 100.07
    assert next(e.fill for e in venue.submit([Order("s", "AAA", SELL, 10.0)]) if e.fill).price == 99.95
    lim = venue.submit([Order("l", "AAA", BUY, 10.0, OrderType.LIMIT, limit_price=100.05)])
    assert not [e for e in lim if e.fill]  # below the ask: not marketable, though above the close
    venue.on_bars(pa.RecordBatch.from_pylist([{"ts": last + 60 * 10**9, "symbol": "AAA", "open": 100.0,
                                               "high": 100.0, "low": 100.0, "close": 100.0, "volume": 1e6}],
                                             schema=BAR_SCHEMA))
    assert venue.quote("AAA") is None  # a new bar: the quote is older than its interval
    venue.on_quotes(_quotes(last + 30 * 10**9, 99.9, 100.1))  # arrives late: inside the last bar's interval
    assert venue.quote("AAA") == (99.9, 100.1)
    venue.on_bars(pa.RecordBatch.from_pylist([{"ts": last + 120 * 10**9, "symbol": "AAA", "open": 100.0,
                                               "high": 100.0, "low": 100.0, "close": 100.0, "volume": 1e6}],
                                             schema=BAR_SCHEMA))
    assert venue.quote("AAA") is None
    assert next(e.fill for e in venue.submit([Order("b2", "AAA", BUY, 10.0)]) if e.fill).price == 100.0 * 1.0005


def test_sqrt_venue_with_a_quote_pays_the_ask_plus_impact() -> None:
    venue, batches = _sqrt_venue()
    adv, sigma = _by_hand(HISTORY[:4])
    venue.on_quotes(_quotes(batch_ts(batches[-1]), 99.9, 100.2))
    f = next(e.fill for e in venue.submit([Order("b", "AAA", BUY, 4e4)]) if e.fill)
    assert f.price == pytest.approx(100.2 * (1 + 0.142 * sigma * math.sqrt(4e4 / adv)), rel=1e-13)


def test_restored_venue_prices_exactly_as_the_one_that_ran(tmp_path: Any) -> None:
    """The extended idea of the warm-up test: a run with sqrt impact, the venue rebuilt from the ledger mid-run
    (calibration from the bars, permanent impact from the ledger's fills) continues fill for fill."""
    from tradesys.data import bars_per_year
    from tradesys.engine.recovery import restore_venue
    from tradesys.engine.step import TradingComponents, run_step
    from tradesys.execution.service import ExecutionService
    from tradesys.ledger import open_ledger
    from tradesys.ledger.book import BookKeeper
    from tradesys.risk.pretrade import PreTradeRisk
    from tradesys.strategy import make_strategy

    cfg = load_config(overrides={
        "data.source": "synthetic", "data.symbols": ["ALPHA", "BRAVO"], "data.synthetic_days": 4,
        "data.synthetic_bar_seconds": 300, "strategy.fast": 3, "strategy.slow": 8, "strategy.vol_lookback": 5,
        "strategy.rebalance_band": 0.02, "strategy.order_type": "market", "broker.participation_cap": 0.05,
        "broker.impact": "sqrt", "broker.impact_window_days": 3, "risk.max_orders_per_window": 1000,
    })
    batches = [b for b in make_source(cfg.data).batches() if b.num_rows]
    book = BookKeeper(open_ledger(f"sqlite:///{tmp_path}/v.db"), cfg.initial_cash)
    strat = make_strategy(cfg.strategy, 2, bars_per_year(cfg.data), cfg.risk)
    venue = SimBroker(cfg.broker)
    c = TradingComponents(strat, PreTradeRisk(cfg.risk), ExecutionService(venue, book))
    stop = len(batches) - 30
    for b in batches[:stop]:
        run_step(b, batch_ts(b), c)
    assert venue.impact_params("ALPHA") is not None and venue.impact_shift("ALPHA") != 0.0
    assert venue.fills_count > venue.flat_priced_fills > 0, "fills both before and after calibration"
    orders, fills = book.ledger_rows()
    rebuilt = restore_venue(cfg.broker, batches[:stop], orders, fills, book.ledger.audit_log())
    for sym in ("ALPHA", "BRAVO"):
        assert rebuilt.impact_shift(sym) == venue.impact_shift(sym), sym
        assert rebuilt.impact_params(sym) == venue.impact_params(sym)
    assert rebuilt.flat_priced_fills == venue.flat_priced_fills
    cold = SimBroker(cfg.broker)  # a venue that forgot its impact prices differently: the test can fail
    _ = [cold.on_bars(b) for b in batches[:stop]]
    for seq, b in enumerate(batches[stop:], 1):
        for v in (rebuilt, venue, cold):
            v.on_bars(b)
        o = [Order(f"x{seq}", "ALPHA", BUY if seq % 2 else SELL, 500.0 + seq)]
        a, b_, k = (next(e.fill.price for e in v.submit(o) if e.fill) for v in (rebuilt, venue, cold))
        assert a == b_
        assert k != a


def _sqrt_run_cfg() -> Any:
    return load_config(overrides={
        "data.source": "synthetic", "data.symbols": ["ALPHA", "BRAVO"], "data.synthetic_days": 4,
        "data.synthetic_bar_seconds": 600, "strategy.fast": 3, "strategy.slow": 8, "strategy.vol_lookback": 5,
        "strategy.rebalance_band": 0.02, "strategy.order_type": "market", "broker.participation_cap": 0.05,
        "broker.impact": "sqrt", "broker.impact_window_days": 3, "risk.max_orders_per_window": 1000,
    })


def test_a_run_with_sqrt_impact_resumed_mid_run_trades_as_undisturbed_and_books_consistently(tmp_path: Any) -> None:
    """The warm-up test's resume, with impact: stopped after calibration started, resumed on its ledger (venue
    restored by `restore_venue`), the orders and fills equal an undisturbed run's, and the ledger's books balance."""
    from tradesys.ledger import open_ledger
    from tradesys.ledger.book import BookKeeper

    from .ledger_checks import assert_ledger_consistent, closes_by_ts, trade_record
    from .test_strategy_warmup import _components, _resume

    cfg = _sqrt_run_cfg()
    batches = [b for b in make_source(cfg.data).batches() if b.num_rows]
    undisturbed = open_ledger("sqlite:///:memory:")
    book = BookKeeper(undisturbed, cfg.initial_cash)
    c = _components(cfg, book, batches)
    for b in batches:
        run_step(b, batch_ts(b), c)
    venue = c.execution.broker
    assert venue.fills_count > venue.flat_priced_fills > 0 and venue.impact_shift("ALPHA") != 0.0
    url = f"sqlite:///{tmp_path}/r.db"
    book = BookKeeper(open_ledger(url), cfg.initial_cash)
    c = _components(cfg, book, batches)
    stop = len(batches) - 20
    for b in batches[:stop]:
        run_step(b, batch_ts(b), c)
    resumed = _resume(cfg, url, batches)
    assert trade_record(resumed) == trade_record(undisturbed)
    assert_ledger_consistent(resumed, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))


# ------------------------------------------------------------------------------------------------ config, engines


def test_config_refuses_an_unknown_model_and_coefficients_of_a_model_that_is_off() -> None:
    with pytest.raises(ConfigError, match=r"^broker\.impact: "):
        load_config(overrides={"broker.impact": "cubic"})
    with pytest.raises(ConfigError, match=r"^broker\.impact_eta: used only with broker\.impact = 'sqrt'"):
        load_config(overrides={"broker.impact_eta": 0.3})
    cfg = load_config(overrides={"broker.impact": "sqrt", "broker.impact_gamma": 0.5})
    assert SimBroker(cfg.broker)._model == SqrtImpact(0.142, 0.5)
    dumped = load_config().model_dump(mode="json")  # a saved flat config, defaults included, loads again
    assert type(load_config()).model_validate(dumped).broker.impact == "flat"


def test_auto_picks_the_event_engine_and_vectorized_is_refused_for_sqrt_impact() -> None:
    trend = load_config(overrides={"strategy.name": "trend", "strategy.order_type": "market"})
    sqrt = load_config(overrides={"strategy.name": "trend", "strategy.order_type": "market", "broker.impact": "sqrt"})
    assert trial_engine("auto", trend, []) == ("vectorized", None)
    assert trial_engine("auto", sqrt, []) == ("event", None)
    eng, why = trial_engine("vectorized", sqrt, [])
    assert eng == "vectorized" and why is not None and why.startswith("broker.impact: ")
    with pytest.raises(ConfigError, match=r"^broker\.impact: "):
        check_engine("vectorized", [], sqrt)
    with pytest.raises(ConfigError, match=r"^broker\.impact: "):
        check_engine("vectorized", ["broker.impact"], trend)
    check_engine("auto", ["broker.impact"], sqrt)
    from tradesys.backtest.vectorized import run_vectorized

    with pytest.raises(ConfigError, match=r"^broker\.impact: ") as err:
        run_vectorized(sqrt)
    assert "\n" not in str(err.value)


def test_daily_stats_aggregates_intraday_bars_to_utc_days() -> None:
    t = _day_bars([(100.0, 1e6), (101.0, 3e6)], per_day=3)
    days, vol, close = daily_stats(t)["AAA"]
    assert list(vol) == pytest.approx([1e6, 3e6]) and list(close) == [100.0, 101.0] and days[1] - days[0] == 1
    assert pd.Timestamp(int(days[0]) * DAY, tz="UTC").hour == 0
