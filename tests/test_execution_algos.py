"""Execution algorithms (tradesys.execution.algos): closed forms, invariants, determinism and restarts.

Pure and fast: no Ray. A small driver stands in for the execution service: at each slice point it asks the algorithm
for children, fills each child (all of it, or a fixed share), lets the unfilled rest work until the next slice point
and then expire (a DAY child in SimBroker works one bar), and keeps the ledger of children and fills from which a
restart rebuilds ParentProgress.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pytest
from scipy.optimize import minimize

from tradesys.broker.sim import SimBroker
from tradesys.config import BrokerConfig
from tradesys.core.orders import EventKind, Order, OrderEvent, OrderType, Side
from tradesys.data.historical import bars_table
from tradesys.data.synthetic import SESSION_SECONDS, SyntheticParams, simulate_bars
from tradesys.data.ticks import SyntheticTicks
from tradesys.execution.algos.base import ChildSpec, ExecutionAlgo, MarketSlice, ParentOrder, ParentProgress
from tradesys.execution.algos.registry import ALGOS, make_algo
from tradesys.execution.algos.shortfall import (
    ac_expected_cost,
    ac_kappa,
    ac_optimal_cost,
    ac_trajectory,
    ac_variance,
)
from tradesys.execution.algos.twap import twap_schedule
from tradesys.execution.algos.vwap import DAY_NS, VolumeCurve

S = 10**9
MIN = 60 * S


# ----------------------------------------------------------------------------------------------------- the driver
@dataclass
class Ledger:
    """What the ledger would hold: every child (slice index, spec) and its fill; plus the run's progress."""

    children: list[tuple[int, ChildSpec]] = field(default_factory=list)
    fills: list[float] = field(default_factory=list)
    progress: ParentProgress = field(default_factory=ParentProgress)

    def rebuild(self, upto_slice: int, volumes: Sequence[float]) -> ParentProgress:
        """ParentProgress from the ledger alone, as a restarted actor would, before slice point `upto_slice`
        (every child of an earlier slice point has filled what it will and expired)."""
        return ParentProgress(
            filled_qty=float(sum(self.fills)),
            working_qty=0.0,
            children=len(self.children),
            slices=upto_slice,
            market_volume=float(sum(volumes[:upto_slice])),
        )


def bars(n: int, start: int = 0, step: int = MIN, price: float = 100.0, volume: float = 1000.0) -> list[MarketSlice]:
    return [MarketSlice(ts_ns=start + i * step, price=price, volume=volume) for i in range(n)]


def run(
    algo: ExecutionAlgo,
    parent: ParentOrder,
    markets: Sequence[MarketSlice],
    fill: Callable[[ChildSpec, int], float] = lambda c, i: c.qty,
    ledger: Ledger | None = None,
    first: int = 0,
) -> Ledger:
    """Drive `algo` over `markets[first:]`, appending to `ledger`; asserts no over-sending at every step."""
    led = ledger if ledger is not None else Ledger()
    pr = led.progress
    for i in range(first, len(markets)):
        m = markets[i]
        pr.working_qty = 0.0  # the previous slice's unfilled children expired
        pr.slices += 1
        pr.market_volume += m.volume if math.isfinite(m.volume) else 0.0
        kids = algo.children(parent, pr, m)
        assert all(k.qty > 0 for k in kids)
        assert pr.filled_qty + pr.working_qty + sum(k.qty for k in kids) <= parent.qty + 1e-9, "over-sent"
        if algo.done(parent, pr, m):
            assert kids == [], "a done algorithm sent children"
        for k in kids:
            f = min(fill(k, i), k.qty)
            led.children.append((i, k))
            led.fills.append(f)
            pr.children += 1
            pr.filled_qty += f
            pr.notional += f * m.price
            pr.working_qty += k.qty - f
    return led


def sizes(led: Ledger) -> list[float]:
    return [c.qty for _, c in led.children]


def per_slice(led: Ledger, n: int) -> np.ndarray:
    out = np.zeros(n)
    for i, c in led.children:
        out[i] += c.qty
    return out


def parent(algo: str = "twap", qty: float = 1000, start: int = 0, end: int = 9 * MIN, **kw: object) -> ParentOrder:
    return ParentOrder(parent_id=kw.pop("parent_id", "P-1"), symbol="ALPHA", side=Side.BUY, qty=qty, algo=algo,  # type: ignore[arg-type]
                       start_ns=start, end_ns=end, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------- the registry
def test_registry_names_and_protocol() -> None:
    assert ALGOS == ("market", "twap", "vwap", "pov", "is", "iceberg", "conditional")
    for name in ALGOS:
        params = {"trigger_price": 100.0} if name == "conditional" else {}
        algo = make_algo(name, params)
        assert isinstance(algo, ExecutionAlgo)
        assert algo.name == name


@pytest.mark.parametrize(
    ("name", "params", "prefix"),
    [
        ("pov", {"rate": 1.5}, "pov.rate: must be in (0, 1], got 1.5"),
        ("pov", {"rate": 0}, "pov.rate:"),
        ("pov", {"rate": "fast"}, "pov.rate:"),
        ("pov", {"min_child": 50, "max_child": 10}, "pov.max_child:"),
        ("pov", {"complete": 1}, "pov.complete:"),
        ("pov", {"complete_before_ns": 1.5}, "pov.complete_before_ns:"),
        ("twap", {"jitter": 1.0}, "twap.jitter:"),
        ("twap", {"slices": 0}, "twap.slices:"),
        ("twap", {"slices": 2.5}, "twap.slices:"),
        ("twap", {"lot": 0}, "twap.lot:"),
        ("twap", {"speed": 3}, "twap.speed:"),
        ("market", {"min_qty": -1}, "market.min_qty:"),
        ("vwap", {"curve": "u"}, "vwap.curve:"),
        ("vwap", {"curve": 3}, "vwap.curve:"),
        ("vwap", {"curve": '{"tod_ns": [2, 1], "fraction": [0.5, 0.5]}'}, "vwap.curve.tod_ns:"),
        ("vwap", {"curve": '{"tod_ns": [1, 2], "fraction": [0.5, 0.6]}'}, "vwap.curve.fraction:"),
        ("is", {"risk_aversion": -1e-6}, "is.risk_aversion:"),
        ("is", {"eta": 0.0}, "is.eta:"),
        ("is", {"sigma": float("nan")}, "is.sigma:"),
        ("iceberg", {"display_qty": 0}, "iceberg.display_qty:"),
        ("iceberg", {"display_qty": 50, "lot": 100}, "iceberg.display_qty:"),
        ("conditional", {}, "conditional.trigger_price:"),
        ("conditional", {"trigger_price": 10, "trigger": "sideways"}, "conditional.trigger:"),
        ("conditional", {"trigger_price": 10, "inner": "nope"}, "conditional.inner:"),
        ("conditional", {"trigger_price": 10, "inner": "twap", "slices": -2}, "twap.slices:"),
        ("teleport", {}, "algo:"),
    ],
)
def test_param_errors_name_the_param(name: str, params: dict[str, object], prefix: str) -> None:
    with pytest.raises(ValueError) as err:
        make_algo(name, params)
    assert str(err.value).startswith(prefix), str(err.value)
    assert "\n" not in str(err.value)


def test_parent_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"^parent\.end_ns:"):
        make_algo("twap").children(parent(end=0), ParentProgress(), MarketSlice(0, 100.0))
    with pytest.raises(ValueError, match=r"^parent\.qty:"):
        make_algo("market").children(parent(qty=0), ParentProgress(), MarketSlice(0, 100.0))
    with pytest.raises(ValueError, match=r"^parent\.limit_price:"):
        make_algo("iceberg").children(parent(), ParentProgress(), MarketSlice(0, 100.0))
    # eta_tilde = eta - gamma tau / 2 must stay positive: a 9-minute window in 1 slice with a huge gamma
    with pytest.raises(ValueError, match=r"^is\.gamma:"):
        make_algo("is", {"gamma": 1.0, "slices": 1, "day_seconds": 1.0}).children(
            parent(), ParentProgress(), MarketSlice(0, 100.0))


# ------------------------------------------------------------------------------------------------ market and twap
def test_market_one_child_for_everything() -> None:
    led = run(make_algo("market"), parent("market", qty=1234, start=2 * MIN, end=0), bars(6))
    assert [(i, c.qty, c.type) for i, c in led.children] == [(2, 1234, OrderType.MARKET)]


def test_twap_equal_slices_and_exact_completion() -> None:
    # 10 slices over [0, 9 min] -> interval boundaries every 54 s; one bar per interval start
    p = parent(qty=1003, end=10 * MIN)
    led = run(make_algo("twap", {"slices": 10}), p, bars(11))
    got = per_slice(led, 11)
    want = np.diff(np.floor(1003 * np.arange(11) / 10))  # cumulative targets in whole shares
    want[-1] += 1003 - want.sum()  # the last slice sends the exact remainder
    assert got[:10].tolist() == want.tolist() and got[10] == 0
    assert sum(sizes(led)) == 1003


def test_twap_lots_round_down_but_last_completes() -> None:
    led = run(make_algo("twap", {"slices": 4, "lot": 100}), parent(qty=1050, end=4 * MIN), bars(5))
    assert sizes(led) == [200, 300, 200, 350]  # cum targets 262.5 -> 200, 525 -> 500, 787.5 -> 700, then 1050


def test_twap_catches_up_after_a_lost_child() -> None:
    # the first child is lost (nothing filled, expires); the next slice point sends the missed slice too
    led = run(make_algo("twap", {"slices": 5}), parent(qty=500, end=5 * MIN), bars(6),
              fill=lambda c, i: 0.0 if i == 0 else c.qty)
    assert [(i, c.qty) for i, c in led.children] == [(0, 100), (1, 200), (2, 100), (3, 100), (4, 100)]
    assert sum(led.fills) == 500


def test_twap_nothing_while_working_covers_the_target() -> None:
    algo, p = make_algo("twap", {"slices": 2}), parent(qty=100, end=2 * MIN)
    assert algo.children(p, ParentProgress(working_qty=50), MarketSlice(0, 100.0)) == []
    assert sizes_of(algo.children(p, ParentProgress(working_qty=50), MarketSlice(MIN, 100.0))) == [50]
    assert algo.children(p, ParentProgress(filled_qty=100), MarketSlice(MIN, 100.0)) == []
    assert algo.done(p, ParentProgress(), MarketSlice(2 * MIN + 1, 100.0))
    assert algo.children(p, ParentProgress(), MarketSlice(2 * MIN + 1, 100.0)) == []  # past end: nothing
    assert algo.children(p, ParentProgress(), MarketSlice(-1, 100.0)) == []  # before start: nothing


def test_twap_slice_index_is_exact_at_real_timestamps() -> None:
    """Epoch-ns timestamps (numpy int64 from Arrow) times a large slice count would overflow int64 or round as
    floats; the slice index is computed in Python ints."""
    t0 = 1_704_205_800 * S
    p = parent(qty=1_000_000, start=t0, end=t0 + 6 * 3600 * S)
    algo = make_algo("twap", {"slices": 1_000_000})
    last = MarketSlice(np.int64(t0 + 6 * 3600 * S - 1), 100.0)  # type: ignore[arg-type]
    first = MarketSlice(np.int64(t0), 100.0)  # type: ignore[arg-type]
    assert sizes_of(algo.children(p, ParentProgress(), first)) == [1]
    assert sizes_of(algo.children(p, ParentProgress(filled_qty=999_990), last)) == [10]  # the last slice: the rest
    assert algo.children(p, ParentProgress(), MarketSlice(np.int64(t0 - 1), 100.0)) == []  # type: ignore[arg-type]


def sizes_of(kids: list[ChildSpec]) -> list[float]:
    return [k.qty for k in kids]


def test_twap_jitter_is_seeded_by_parent_and_bounded() -> None:
    n, j = 20, 0.5
    a = twap_schedule("P-1", n, j)
    assert np.array_equal(a, twap_schedule("P-1", n, j))  # same parent: same schedule (a restart draws it again)
    assert not np.allclose(a, twap_schedule("P-2", n, j))
    w = np.diff(np.concatenate([[0.0], a]))
    assert a[-1] == 1.0 and np.all(w > 0)
    assert w.max() / w.min() <= (1 + j) / (1 - j)  # weights 1 + j u with u in [-1, 1)
    assert np.std(w * n) > 0.05  # it does jitter
    led = run(make_algo("twap", {"slices": n, "jitter": j}), parent(qty=10_000, end=n * MIN), bars(n + 1))
    assert sum(sizes(led)) == 10_000
    assert np.allclose(np.cumsum(per_slice(led, n + 1))[:n], np.floor(10_000 * a), atol=1)


# ------------------------------------------------------------------------------------------------------------ vwap
def synthetic(days: int, seed: int = 3, noise: float = 0.35) -> pa.Table:
    return bars_table(simulate_bars(SyntheticParams(symbols=("ALPHA", "BRAVO"), days=days, bar_seconds=300,
                                                    seed=seed, volume_noise=noise)))


def u_shape(nb: int, depth: float = 2.0) -> np.ndarray:
    """The synthetic generator's volume curve (tradesys.data.synthetic), as a fraction per bar."""
    x = (np.arange(nb) + 0.5) / nb
    u = 1.0 + depth * (2.0 * x - 1.0) ** 2
    return u / u.sum()


@pytest.mark.parametrize("stat", ["median", "mean"])
def test_volume_curve_recovers_the_u_shape(stat: str) -> None:
    curve = VolumeCurve.fit(synthetic(40), symbol="ALPHA", sessions=40, stat=stat)
    nb = SESSION_SECONDS // 300
    assert len(curve.fraction) == nb and abs(sum(curve.fraction) - 1) < 1e-12
    assert curve.tod_ns[0] == (14 * 3600 + 30 * 60 + 300) * S and curve.tod_ns[-1] == 21 * 3600 * S  # bar ends
    rel = np.abs(np.asarray(curve.fraction) / u_shape(nb) - 1)
    assert rel.max() < 0.25 and rel.mean() < 0.08  # lognormal noise 0.35 per bar, 40 sessions
    # without noise the curve is the generator's shape to rounding of volumes to whole shares
    exact = VolumeCurve.fit(synthetic(3, noise=0.0), symbol="BRAVO")
    assert np.allclose(exact.fraction, u_shape(nb), rtol=1e-4)


def test_volume_curve_uses_the_last_sessions_only() -> None:
    table = synthetic(6, noise=0.0)
    ts = np.asarray(table["ts"].cast(pa.int64()))
    first_day = ts // DAY_NS == ts.min() // DAY_NS
    vol = np.asarray(table["volume"]).copy()
    vol[first_day] = np.where(np.arange(first_day.sum()) % 2 == 0, 1e9, 1.0)[: first_day.sum()]  # a wild session
    t2 = table.set_column(table.schema.get_field_index("volume"), "volume", pa.array(vol))
    nb = SESSION_SECONDS // 300
    assert np.allclose(VolumeCurve.fit(t2, sessions=5, stat="mean").fraction, u_shape(nb), rtol=1e-4)
    assert not np.allclose(VolumeCurve.fit(t2, sessions=6, stat="mean").fraction, u_shape(nb), rtol=1e-2)


def session_markets(table: pa.Table, symbol: str, day_index: int) -> list[MarketSlice]:
    t = table.filter(pa.compute.equal(table["symbol"], symbol))
    ts = np.asarray(t["ts"].cast(pa.int64()))
    days = np.unique(ts // DAY_NS)
    keep = ts // DAY_NS == days[day_index]
    close, vol = np.asarray(t["close"])[keep], np.asarray(t["volume"])[keep]
    return [MarketSlice(int(a), float(b), float(c)) for a, b, c in zip(ts[keep], close, vol, strict=True)]


def test_vwap_follows_the_predicted_curve_on_synthetic_bars() -> None:
    table = synthetic(31)
    ts = np.asarray(table["ts"].cast(pa.int64()))
    history = table.filter(pa.array(ts // DAY_NS < (ts // DAY_NS).max()))  # every session but the last
    curve = VolumeCurve.fit(history, symbol="ALPHA", sessions=20)
    markets = session_markets(table, "ALPHA", -1)  # a session the curve has not seen
    p = parent("vwap", qty=200_000, start=markets[0].ts_ns, end=markets[-1].ts_ns)
    led = run(make_algo("vwap", {"curve": curve}), p, markets)
    # the curve as a plain string parameter (what an order's algo_params and the parent row carry) is the same
    assert VolumeCurve.from_json(curve.to_json()) == curve
    assert run(make_algo("vwap", {"curve": curve.to_json()}), p, markets).children == led.children
    got = per_slice(led, len(markets))
    assert got.sum() == 200_000 and got[-1] > 0  # the last bar completes
    # the realised participation profile is the curve's, to whole-share rounding
    cum_curve = np.cumsum(curve.fraction)
    assert np.abs(np.cumsum(got) - 200_000 * cum_curve).max() <= 1.0
    # and its cumulative profile tracks the session's actual volume far better than a flat (TWAP) one does
    actual = np.cumsum([m.volume for m in markets])
    actual /= actual[-1]
    flat = np.arange(1, len(markets) + 1) / len(markets)
    assert np.abs(np.cumsum(got) / got.sum() - actual).max() < 0.5 * np.abs(flat - actual).max()


def test_vwap_window_inside_the_session_and_linear_fallback() -> None:
    curve = VolumeCurve(tod_ns=(1 * MIN, 2 * MIN, 3 * MIN, 4 * MIN), fraction=(0.4, 0.1, 0.1, 0.4))
    day = 10 * DAY_NS
    markets = bars(4, start=day + MIN)
    # the window holds bars 2..4: fractions 0.1, 0.1, 0.4 of 0.6
    p = parent("vwap", qty=600, start=day + 2 * MIN, end=day + 4 * MIN)
    assert sizes(run(make_algo("vwap", {"curve": curve}), p, markets)) == [100, 100, 400]
    # no curve: linear in time over [start, end]
    led = run(make_algo("vwap"), p, markets)
    assert [(i, c.qty) for i, c in led.children] == [(2, 300), (3, 300)]


# ------------------------------------------------------------------------------------------------------------- pov
def test_pov_participates_in_the_volume_since_the_last_slice() -> None:
    vols = [1000, 3000, 500, 2000, 1500, 4000]
    markets = [MarketSlice(i * MIN, 100.0, v) for i, v in enumerate(vols)]
    p = parent("pov", qty=10_000, end=100 * MIN)
    led = run(make_algo("pov", {"rate": 0.1}), p, markets)
    assert sizes(led) == [100, 300, 50, 200, 150, 400]  # rate x each bar's volume
    assert led.progress.filled_qty / sum(vols) == pytest.approx(0.1)


def test_pov_min_max_child_and_completion() -> None:
    vols = [1000, 300, 300, 6000, 100, 100]
    markets = [MarketSlice(i * MIN, 100.0, v) for i, v in enumerate(vols)]
    p = parent("pov", qty=1000, end=5 * MIN)
    led = run(make_algo("pov", {"rate": 0.1, "min_child": 50, "max_child": 250}), p, markets)
    # 100; 30 held back (< min_child); 60 sent (the held 30 plus 30); 600 capped at 250; catch-up 250; end: rest
    assert [(i, c.qty) for i, c in led.children] == [(0, 100), (2, 60), (3, 250), (4, 250), (5, 340)]
    assert sum(sizes(led)) == 1000
    led = run(make_algo("pov", {"rate": 0.1, "complete": False}), p, markets)
    assert sum(sizes(led)) == pytest.approx(0.1 * sum(vols))  # stops at end_ns with what the volume allowed
    led = run(make_algo("pov", {"rate": 0.1, "complete_before_ns": MIN}), p, markets)
    assert [(i, c.qty) for i, c in led.children][-1] == (4, 1000 - 0.1 * sum(vols[:4]))


def test_pov_on_synthetic_ticks_keeps_within_a_lot_of_its_rate() -> None:
    """Slice points are trades (tradesys.data.ticks): the running participation never runs ahead of the rate and
    never falls more than one lot behind it, and the completion rule finishes the parent at end_ns."""
    trades = SyntheticTicks(symbols=("ALPHA",), days=1, seed=5, events_per_day=4000.0).trades()
    ts = np.asarray(trades["ts"].cast(pa.int64()))
    markets = [MarketSlice(int(t), float(px), float(v)) for t, px, v in
               zip(ts, trades["price"].to_numpy(), trades["size"].to_numpy(), strict=True)]
    total = sum(m.volume for m in markets)
    p = parent("pov", qty=float(math.floor(0.06 * total)), start=markets[0].ts_ns, end=markets[-1].ts_ns)
    algo, led = make_algo("pov", {"rate": 0.05, "lot": 100}), Ledger()
    pr = led.progress
    for m in markets:
        run(algo, p, [m], ledger=led)
        if m.ts_ns < p.end_ns:
            assert pr.market_volume * 0.05 - 100 <= pr.filled_qty <= pr.market_volume * 0.05 + 1e-9
    assert all(c.qty % 100 == 0 for _, c in led.children[:-1])
    assert pr.filled_qty == p.qty and led.children[-1][1].qty > 0.009 * total  # the rest (1% of volume) at the end


# -------------------------------------------------------------------------------------------- implementation shortfall
AC = {"X": 1e6, "T": 5.0, "N": 5, "sigma": 0.95, "eta": 2.5e-6, "gamma": 2.5e-7, "eps": 0.0625, "lam": 1e-6}


def test_ac_kappa_and_trajectory_closed_form() -> None:
    tau = AC["T"] / AC["N"]
    k = ac_kappa(AC["lam"], AC["sigma"], AC["eta"], AC["gamma"], tau)
    assert k == pytest.approx(0.6, abs=0.01)  # the paper's example: kappa ~ 0.6 per day
    kt2 = AC["lam"] * AC["sigma"] ** 2 / (AC["eta"] - 0.5 * AC["gamma"] * tau)
    assert 2 * (math.cosh(k * tau) - 1) / tau**2 == pytest.approx(kt2, rel=1e-12)
    x = ac_trajectory(AC["X"], AC["N"], AC["T"], k)
    t = np.arange(AC["N"] + 1) * tau
    assert np.allclose(x, AC["X"] * np.sinh(k * (AC["T"] - t)) / np.sinh(k * AC["T"]), rtol=1e-12, atol=1e-6)
    # a huge kappa T would overflow sinh: the stable form still gives a decreasing path from X to 0
    xs = ac_trajectory(1.0, 10, 1.0, 2000.0)
    assert xs[0] == 1.0 and xs[-1] == 0.0 and np.all(np.diff(xs) <= 0) and np.all(np.isfinite(xs))


def test_ac_expected_cost_and_variance_match_the_papers_closed_forms() -> None:
    tau = AC["T"] / AC["N"]
    k = ac_kappa(AC["lam"], AC["sigma"], AC["eta"], AC["gamma"], tau)
    x = ac_trajectory(AC["X"], AC["N"], AC["T"], k)
    e, v = ac_optimal_cost(AC["X"], AC["N"], AC["T"], AC["lam"], AC["sigma"], AC["eta"], AC["gamma"], AC["eps"])
    assert ac_expected_cost(x, tau, AC["gamma"], AC["eta"], AC["eps"]) == pytest.approx(e, rel=1e-12)
    assert ac_variance(x, tau, AC["sigma"]) == pytest.approx(v, rel=1e-12)
    # TWAP by hand: E = 1/2 gamma X^2 + eps X + eta_tilde X^2 / T, V = sigma^2 tau X^2 sum_k (1 - k/N)^2
    lin = np.linspace(AC["X"], 0.0, AC["N"] + 1)
    et = AC["eta"] - 0.5 * AC["gamma"] * tau
    assert ac_expected_cost(lin, tau, AC["gamma"], AC["eta"], AC["eps"]) == pytest.approx(
        0.5 * AC["gamma"] * AC["X"] ** 2 + AC["eps"] * AC["X"] + et * AC["X"] ** 2 / AC["T"], rel=1e-12)
    assert ac_variance(lin, tau, AC["sigma"]) == pytest.approx(
        AC["sigma"] ** 2 * tau * AC["X"] ** 2 * sum((1 - j / AC["N"]) ** 2 for j in range(1, AC["N"] + 1)), rel=1e-12)


@pytest.mark.parametrize(("n", "lam"), [(5, 1e-6), (12, 2e-7), (20, 1e-5)])
def test_ac_closed_form_is_the_numerical_optimum(n: int, lam: float) -> None:
    """Independent check: minimise E + lambda V over the interior holdings with scipy; compare to the closed form."""
    X, T, sigma, eta, gamma = AC["X"], AC["T"], AC["sigma"], AC["eta"], AC["gamma"]
    tau = T / n

    def objective(y: np.ndarray) -> tuple[float, np.ndarray]:
        # scaled: holdings x = X y, objective / (X^2 eta_tilde / tau), so it is of order 1 (E's constant terms
        # 1/2 gamma X^2 + epsilon X do not move the optimum of a monotone path)
        full = np.concatenate([[1.0], y, [0.0]])
        trades = -np.diff(full)
        r = lam * sigma**2 * tau**2 / (eta - 0.5 * gamma * tau)
        f = trades @ trades + r * (y @ y)
        grad = 2 * (trades[1:] - trades[:-1]) + 2 * r * y
        return float(f), grad

    res = minimize(objective, np.linspace(1, 0, n + 1)[1:-1], jac=True, method="BFGS",
                   options={"gtol": 1e-14, "maxiter": 10_000})
    numeric = X * np.concatenate([[1.0], res.x, [0.0]])
    closed = ac_trajectory(X, n, T, ac_kappa(lam, sigma, eta, gamma, tau))
    assert np.allclose(numeric[1:-1], closed[1:-1], rtol=1e-6, atol=0)
    # and the closed form's objective is the minimum: no perturbation beats it
    assert objective(closed[1:-1] / X)[0] <= res.fun + 1e-15


def test_is_lambda_zero_is_twap_and_risk_aversion_front_loads() -> None:
    n, qty = 8, 8_000
    p = parent("is", qty=qty, end=n * MIN)
    markets = bars(n + 1)
    zero = sizes(run(make_algo("is", {"risk_aversion": 0.0, "slices": n}), p, markets))
    tiny = sizes(run(make_algo("is", {"risk_aversion": 1e-15, "slices": n}), p, markets))
    twap = sizes(run(make_algo("twap", {"slices": n}), p, markets))
    assert zero == twap == tiny == [1000] * n
    # a window of n minutes is n/390 of a day: use a large lambda so kappa T is of order 1
    urgent = sizes(run(make_algo("is", {"risk_aversion": 0.1, "slices": n}), p, markets))
    assert sum(urgent) == qty
    assert urgent[0] > 2 * qty / n and all(a >= b for a, b in itertools.pairwise(urgent))
    # the children are the closed-form trades (to whole-share rounding of the cumulative target)
    algo = make_algo("is", {"risk_aversion": 0.1, "slices": n})
    x = algo.trajectory(p)  # type: ignore[attr-defined]
    assert np.abs(np.cumsum(urgent) - (qty - x[1:])).max() < 1.0


# ---------------------------------------------------------------------------------- iceberg, min-qty, conditional
def test_iceberg_shows_display_and_reloads_when_filled() -> None:
    p = parent("iceberg", qty=1000, end=0, limit_price=99.5)
    # each shown child fills 150 of 300 in its bar, the rest expires -> reload the next bar
    led = run(make_algo("iceberg", {"display_qty": 300}), p, bars(12), fill=lambda c, i: min(c.qty, 150))
    assert all(c.type is OrderType.LIMIT and c.limit_price == 99.5 for _, c in led.children)
    assert all(c.qty <= 300 and c.display_qty == c.qty for _, c in led.children)
    assert sizes(led) == [300, 300, 300, 300, 300, 250, 100] and sum(led.fills) == 1000
    # while the shown part still works, nothing more is sent
    algo = make_algo("iceberg", {"display_qty": 300})
    assert algo.children(p, ParentProgress(filled_qty=100, working_qty=200), MarketSlice(5 * MIN, 99.0)) == []
    assert sizes_of(algo.children(p, ParentProgress(filled_qty=800), MarketSlice(5 * MIN, 99.0))) == [200]


def test_min_qty_is_set_on_every_child() -> None:
    led = run(make_algo("twap", {"slices": 4, "min_qty": 200}), parent(qty=900, end=4 * MIN), bars(5))
    assert [(c.qty, c.min_qty) for _, c in led.children] == [(225, 200), (225, 200), (225, 200), (225, 200)]
    led = run(make_algo("twap", {"slices": 4, "min_qty": 300}), parent(qty=900, end=4 * MIN), bars(5))
    assert all(c.min_qty == c.qty for _, c in led.children)  # capped at the child's own size


def test_conditional_waits_for_the_trigger_then_runs_the_inner_algo() -> None:
    prices = [100.0, 100.5, 101.2, 100.8, 99.0, 101.0]
    markets = [MarketSlice(i * MIN, px, 1000.0) for i, px in enumerate(prices)]
    p = parent("conditional", qty=400, end=5 * MIN)
    led = run(make_algo("conditional", {"trigger_price": 101.0, "inner": "twap", "slices": 5}), p, markets)
    # nothing until 101.2 >= 101 at bar 2, where twap catches up (3 of 5 slices); it goes on after the price recedes
    assert [(i, c.qty) for i, c in led.children] == [(2, 240), (3, 80), (4, 80)]
    below = run(make_algo("conditional", {"trigger_price": 99.5, "trigger": "below"}), p, markets)
    assert [(i, c.qty) for i, c in below.children] == [(4, 400)]  # inner market at the first price <= 99.5
    never = make_algo("conditional", {"trigger_price": 200.0})
    assert run(never, p, markets).children == []
    assert never.done(p, ParentProgress(), MarketSlice(5 * MIN + 1, 100.0))
    assert not never.done(p, ParentProgress(), MarketSlice(5 * MIN, 100.0))


# ---------------------------------------------------------------------------------- every algorithm: shared invariants
def every_algo() -> list[tuple[str, dict[str, object], ParentOrder]]:
    curve = VolumeCurve(tod_ns=tuple(range(MIN, 11 * MIN, MIN)), fraction=tuple(np.full(10, 0.1) + np.linspace(
        0.05, -0.05, 10)))
    kw = {"qty": 1537, "end": 9 * MIN}
    return [
        ("market", {}, parent("market", **kw)),
        ("twap", {"slices": 7, "jitter": 0.3}, parent("twap", **kw)),
        ("vwap", {"curve": curve}, parent("vwap", **kw)),
        ("pov", {"rate": 0.15, "min_child": 20, "max_child": 400}, parent("pov", **kw)),
        ("is", {"risk_aversion": 5e-3, "slices": 6}, parent("is", **kw)),
        ("iceberg", {"display_qty": 250}, parent("iceberg", limit_price=101.0, **kw)),
        ("conditional", {"trigger_price": 100.4, "inner": "twap", "slices": 5}, parent("conditional", **kw)),
    ]


def wavy_bars() -> list[MarketSlice]:
    return [MarketSlice(i * MIN, 100 + 0.5 * math.sin(i), 1000.0 + 250 * (i % 3)) for i in range(10)]


def partial(c: ChildSpec, i: int) -> float:
    """A deterministic partial-fill venue: some bars fill 60%, some nothing, the rest everything."""
    return float(math.floor(0.6 * c.qty)) if i % 3 == 1 else (0.0 if i == 4 else c.qty)


@pytest.mark.parametrize("case", every_algo(), ids=lambda c: c[0])
def test_conservation_when_everything_fills(case: tuple[str, dict[str, object], ParentOrder]) -> None:
    name, params, p = case
    led = run(make_algo(name, params), p, wavy_bars())
    assert sum(sizes(led)) == p.qty == sum(led.fills)
    assert all(float(c.qty).is_integer() for _, c in led.children)  # whole shares
    assert make_algo(name, params).done(p, led.progress, wavy_bars()[-1])


@pytest.mark.parametrize("case", every_algo(), ids=lambda c: c[0])
def test_limit_price_makes_every_child_a_limit(case: tuple[str, dict[str, object], ParentOrder]) -> None:
    name, params, p = case
    lp = ParentOrder(**{**{f: getattr(p, f) for f in p.__slots__}, "limit_price": 100.25})  # type: ignore[attr-defined]
    led = run(make_algo(name, params), lp, wavy_bars(), fill=partial)
    assert led.children and all(c.type is OrderType.LIMIT and c.limit_price == 100.25 for _, c in led.children)
    assert sum(led.fills) <= lp.qty


@pytest.mark.parametrize("case", every_algo(), ids=lambda c: c[0])
@pytest.mark.parametrize("cut", [1, 3, 6])
def test_restart_rebuilt_from_the_ledger_sends_the_same_children(
    case: tuple[str, dict[str, object], ParentOrder], cut: int
) -> None:
    name, params, p = case
    markets = wavy_bars()
    whole = run(make_algo(name, params), p, markets, fill=partial)
    again = run(make_algo(name, params), p, markets, fill=partial)
    assert again.children == whole.children  # deterministic
    # crash after slice point `cut - 1`: a fresh algorithm and progress rebuilt from the ledger alone
    before = run(make_algo(name, params), p, markets[:cut], fill=partial)
    resumed = Ledger(children=list(before.children), fills=list(before.fills))
    resumed.progress = before.rebuild(cut, [m.volume for m in markets])
    run(make_algo(name, params), p, markets, fill=partial, ledger=resumed, first=cut)
    assert resumed.children == whole.children and resumed.fills == whole.fills


# ------------------------------------------------------------------------------------------ through the simulated venue
def test_twap_through_simbroker_conserves_shares() -> None:
    """Children become real Orders at SimBroker (participation cap, DAY expiry): every fill belongs to a child of the
    parent, the filled total equals what the venue says, and the parent completes when the volume allows it."""
    table = synthetic(1)
    table = table.filter(pa.compute.equal(table["symbol"], "ALPHA"))
    batches = table.to_batches(max_chunksize=1)
    venue = SimBroker(BrokerConfig(participation_cap=0.05, fee_bps=0.0, slippage_bps=0.0))
    p = parent("twap", qty=60_000, start=0, end=10**19)
    ts0 = int(table["ts"].cast(pa.int64())[0].as_py())
    p = ParentOrder(**{**{f: getattr(p, f) for f in p.__slots__}, "start_ns": ts0,  # type: ignore[attr-defined]
                       "end_ns": ts0 + 40 * 300 * S})
    algo, pr = make_algo("twap", {"slices": 20}), ParentProgress()
    open_ids: set[str] = set()
    fills, lost = [], 0

    def book(events: list[OrderEvent]) -> None:  # what the execution service does with the venue's events
        nonlocal lost
        for e in events:
            if e.kind is EventKind.FILL and e.fill is not None:
                fills.append(e.fill)
                pr.filled_qty += e.fill.qty
                pr.working_qty -= e.fill.qty
            elif e.kind in (EventKind.EXPIRED, EventKind.CANCELED, EventKind.REJECTED):
                st = {s.order.client_order_id: s for s in venue.orders()}[e.client_order_id]
                pr.working_qty -= st.order.qty - st.filled_qty
                lost += 1

    ts_all = np.asarray(table["ts"].cast(pa.int64()))
    for b, ts in zip(batches, ts_all, strict=True):
        book(venue.on_bars(b))
        m = MarketSlice(int(ts), b["close"][0].as_py(), b["volume"][0].as_py())
        orders = []
        for k in algo.children(p, pr, m):
            pr.children += 1
            orders.append(Order(p.child_id(pr.children), p.symbol, p.side, k.qty, k.type, k.tif, k.limit_price,
                                ts_ns=m.ts_ns))
            open_ids.add(orders[-1].client_order_id)
            pr.working_qty += k.qty
        book(venue.submit(orders))
        assert pr.filled_qty + pr.working_qty <= p.qty + 1e-9
    assert fills and all(f.client_order_id.startswith(p.parent_id + ".") for f in fills)
    assert {f.client_order_id for f in fills} <= open_ids
    assert sum(f.qty for f in fills) == pytest.approx(pr.filled_qty)
    venue_total = sum(s.filled_qty for s in venue.orders())
    assert venue_total == pytest.approx(pr.filled_qty) and pr.filled_qty == pytest.approx(p.qty)
    assert lost > 0  # the cap bit: some children expired part-filled and later slices caught up
