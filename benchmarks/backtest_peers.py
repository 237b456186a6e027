"""Peer backtest engines for `benchmarks/backtest_engines.py`, run in the peers' own virtual environment.

vectorbt, backtrader and nautilus_trader pin versions that clash with the project's (pandas < 3, plotly < 6), so
the harness runs this script with the peers' interpreter, passes the bars as a Parquet file (long columns: ts,
symbol, open, high, low, close, volume) and reads one JSON object back. The peer libraries are imported inside
the functions that use them: the harness imports `positions_opened` from here, so that every engine's position
count comes from the same rule.

The strategy, written once per engine in its own idiom: per symbol, direction = sign(SMA_fast - SMA_slow) of the
closes, known once `slow` closes are seen; on a change of direction the engine moves to
direction * floor(weight * cash / close) whole shares, filled at that bar's close (market order), with fees and
slippage in bps of notional. Always in the market after warm-up, long or short, so every crossover opens a
position.

    /work/peers-venv/bin/python benchmarks/backtest_peers.py --data bars.parquet --engine vectorbt --out r.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

ENGINES = ("vectorbt", "backtrader", "nautilus")


@dataclass(frozen=True)
class Params:
    fast: int
    slow: int
    weight: float  # fraction of the initial cash per position
    cash: float
    fee_bps: float
    slippage_bps: float

    def __post_init__(self) -> None:
        if not 1 < self.fast < self.slow:
            raise ValueError(f"fast, slow: need 1 < fast < slow, got {self.fast}, {self.slow}")
        if not 0 < self.weight <= 1:
            raise ValueError(f"weight: must be in (0, 1], got {self.weight}")
        if not self.cash > 0:
            raise ValueError(f"cash: must be > 0, got {self.cash}")
        if self.fee_bps < 0 or self.slippage_bps < 0:
            raise ValueError(f"fee_bps, slippage_bps: must be >= 0, got {self.fee_bps}, {self.slippage_bps}")

    @property
    def value(self) -> float:
        """Notional of one position when it opens."""
        return self.weight * self.cash


def positions_opened(fills: Iterable[tuple[str, float]]) -> int:
    """Positions opened by a stream of (symbol, signed quantity) fills in time order: a fill opens one when the
    symbol's net position goes from flat, or from the other side, to non-zero. A reversal in one fill or in two
    (close, then open) counts once; partial fills of one entry count once."""
    pos: dict[str, float] = {}
    opened = 0
    for sym, qty in fills:
        before = pos.get(sym, 0.0)
        after = before + qty
        if abs(after) < 1e-9:
            after = 0.0
        if after != 0.0 and (before == 0.0 or (before > 0) != (after > 0)):
            opened += 1
        pos[sym] = after
    return opened


def _load(path: str) -> Any:
    import pandas as pd

    df = pd.read_parquet(path)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    # bars with unknown volume (NaN, the real S&P 500 closes): volume that never limits a fill
    df["volume"] = df["volume"].fillna(1e9)
    return df


def _wide(df: Any, column: str) -> Any:
    return df.pivot(index="ts", columns="symbol", values=column).sort_index()


# ------------------------------------------------------------------------------------------------ vectorbt


def run_vectorbt(df: Any, p: Params, repeats: int) -> dict[str, Any]:
    """`Portfolio.from_signals` on the whole close matrix, one shared cash account; timed from closes to a
    portfolio (moving averages included), after one untimed warm call that compiles the numba kernels."""
    import numpy as np
    import vectorbt as vbt

    close = _wide(df, "close")

    def once() -> Any:
        fast = close.vbt.rolling_mean(p.fast, minp=p.fast)
        slow = close.vbt.rolling_mean(p.slow, minp=p.slow)
        up, down = fast > slow, fast < slow
        flat = (fast == slow) & slow.notna()
        return vbt.Portfolio.from_signals(
            close,
            entries=up,
            exits=flat,
            short_entries=down,
            short_exits=flat,
            size=p.value,
            size_type="value",
            size_granularity=1.0,
            fees=p.fee_bps / 1e4,
            slippage=p.slippage_bps / 1e4,
            init_cash=p.cash,
            cash_sharing=True,
            group_by=True,
            accumulate=False,
            upon_opposite_entry="reverse",
            freq="1D",
        )

    once()  # warm call: numba compilation
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pf = once()
        times.append(time.perf_counter() - t0)
    rec = pf.orders.values
    order = np.lexsort((rec["col"], rec["idx"]))
    names = list(close.columns)
    signed = np.where(rec["side"] == 0, rec["size"], -rec["size"])
    fills = [(names[rec["col"][i]], float(signed[i])) for i in order]
    return {
        "version": vbt.__version__,
        "times_s": times,
        "fills": len(fills),
        "positions_opened": positions_opened(fills),
        "final_equity": float(pf.value().iloc[-1]),
    }


# ------------------------------------------------------------------------------------------------ backtrader


def run_backtrader(df: Any, p: Params, repeats: int) -> dict[str, Any]:
    """Cerebro with one PandasData feed per symbol, SMA indicators, orders filled at the signal bar's close
    (cheat-on-close); timed from the bars in memory to the finished run (feeds built inside the timing)."""
    import backtrader as bt

    class MaCross(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            self.fast = [bt.indicators.SMA(d.close, period=p.fast) for d in self.datas]
            self.slow = [bt.indicators.SMA(d.close, period=p.slow) for d in self.datas]
            self.dir = [0] * len(self.datas)
            self.fills: list[tuple[str, float]] = []
            self.pending: dict[int, tuple[str, float]] = {}

        def next(self) -> None:
            for i, d in enumerate(self.datas):
                f, s = self.fast[i][0], self.slow[i][0]
                new = 1 if f > s else -1 if f < s else 0
                if new != self.dir[i]:
                    self.dir[i] = new
                    order = self.order_target_size(d, target=new * math.floor(p.value / d.close[0]))
                    if order is not None:
                        self.pending[order.ref] = (d._name, float(order.created.size))

        def notify_order(self, order: Any) -> None:
            if order.status == order.Completed:
                self.fills.append((order.data._name, float(order.executed.size)))
            if not order.alive():
                self.pending.pop(order.ref, None)

    frames = {sym: g.set_index("ts")[["open", "high", "low", "close", "volume"]] for sym, g in df.groupby("symbol")}

    def once() -> tuple[float, Any, Any]:
        t0 = time.perf_counter()
        cerebro = bt.Cerebro(stdstats=False)
        for sym, frame in frames.items():
            cerebro.adddata(bt.feeds.PandasData(dataname=frame, openinterest=None), name=sym)
        cerebro.addstrategy(MaCross)
        cerebro.broker.setcash(p.cash)
        cerebro.broker.setcommission(commission=p.fee_bps / 1e4)
        cerebro.broker.set_slippage_perc(p.slippage_bps / 1e4)
        cerebro.broker.set_coc(True)
        strat = cerebro.run(runonce=True, preload=True)[0]
        return time.perf_counter() - t0, strat, cerebro

    times = []
    for _ in range(repeats):
        dt, strat, cerebro = once()
        times.append(dt)
    # backtrader fills a cheat-on-close order in the broker's next cycle, so an order sent on the last bar never
    # fills: counted apart, so the position check can tell that from a different signal
    unfilled = list(strat.pending.values())
    return {
        "version": bt.__version__,
        "times_s": times,
        "fills": len(strat.fills),
        "positions_opened": positions_opened(strat.fills),
        "unfilled_at_end": len(unfilled),
        "positions_opened_with_unfilled": positions_opened([*strat.fills, *unfilled]),
        "final_equity": float(cerebro.broker.getvalue()),
    }


# ------------------------------------------------------------------------------------------------ nautilus


def run_nautilus(df: Any, p: Params, repeats: int) -> dict[str, Any]:
    """BacktestEngine with one simulated venue (netting, margin account), one Equity and one daily bar stream
    per symbol, a strategy with SMA indicators per instrument sending market orders. Timed twice: build (bars
    wrangled from the frame, venue, instruments, data, strategy) plus `run()`, and `run()` alone.

    Costs: the taker fee is fee_bps. Nautilus' FillModel slips by whole ticks with a probability, not by bps, so
    no slippage is applied here (a one-tick slip at the 1e-6 tick used here would be no cost at all)."""
    from decimal import Decimal

    import nautilus_trader
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.backtest.models import FillModel
    from nautilus_trader.config import LoggingConfig, RiskEngineConfig, StrategyConfig
    from nautilus_trader.indicators import SimpleMovingAverage
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.data import Bar, BarType
    from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
    from nautilus_trader.model.events import OrderFilled
    from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
    from nautilus_trader.model.instruments import Equity
    from nautilus_trader.model.objects import Money, Price, Quantity
    from nautilus_trader.persistence.wranglers import BarDataWrangler
    from nautilus_trader.trading.strategy import Strategy

    venue = Venue("XNAS")
    precision = 6  # prices kept to 1e-6, so the moving averages see (almost) the same closes as the other engines

    class MaCrossConfig(StrategyConfig, frozen=True):  # type: ignore[call-arg,misc]
        bar_types: list[str]
        fast: int
        slow: int
        value: float

    class MaCross(Strategy):  # type: ignore[misc]
        def __init__(self, config: MaCrossConfig) -> None:
            super().__init__(config)
            self.fills: list[tuple[str, float]] = []
            self.ind: dict[Any, tuple[Any, Any]] = {}
            self.dir: dict[Any, int] = {}

        def on_start(self) -> None:
            for text in self.config.bar_types:
                bar_type = BarType.from_str(text)
                fast, slow = SimpleMovingAverage(self.config.fast), SimpleMovingAverage(self.config.slow)
                self.register_indicator_for_bars(bar_type, fast)
                self.register_indicator_for_bars(bar_type, slow)
                self.ind[bar_type.instrument_id] = (fast, slow)
                self.dir[bar_type.instrument_id] = 0
                self.subscribe_bars(bar_type)

        def on_bar(self, bar: Bar) -> None:
            iid = bar.bar_type.instrument_id
            fast, slow = self.ind[iid]
            if not slow.initialized:
                return
            new = 1 if fast.value > slow.value else -1 if fast.value < slow.value else 0
            if new == self.dir[iid]:
                return
            self.dir[iid] = new
            target = new * math.floor(self.config.value / bar.close.as_double())
            delta = target - float(self.portfolio.net_position(iid))
            if delta == 0:
                return
            side = OrderSide.BUY if delta > 0 else OrderSide.SELL
            self.submit_order(self.order_factory.market(iid, side, Quantity.from_int(int(abs(delta)))))

        def on_order_filled(self, event: OrderFilled) -> None:
            qty = event.last_qty.as_double()
            self.fills.append((event.instrument_id.symbol.value, qty if event.order_side == OrderSide.BUY else -qty))

    frames = {sym: g.set_index("ts")[["open", "high", "low", "close", "volume"]] for sym, g in df.groupby("symbol")}
    fee = Decimal(str(p.fee_bps / 1e4))

    def build() -> tuple[Any, Any]:
        # the pre-trade checks stay on; the order-rate limit (100 a second by default) is raised, as tradesys's
        # is in the harness: at the first signal bar every symbol sends an order at once
        engine = BacktestEngine(config=BacktestEngineConfig(
            logging=LoggingConfig(bypass_logging=True),
            risk_engine=RiskEngineConfig(max_order_submit_rate="1000000/00:00:01"),
        ))
        engine.add_venue(
            venue=venue,
            oms_type=OmsType.NETTING,
            account_type=AccountType.MARGIN,
            base_currency=USD,
            starting_balances=[Money(p.cash, USD)],
            default_leverage=Decimal(1),
            fill_model=FillModel(prob_fill_on_limit=1.0, prob_slippage=0.0, random_seed=42),
        )
        bar_types = []
        syms = list(frames)
        for k, sym in enumerate(syms):
            inst = Equity(
                instrument_id=InstrumentId(Symbol(sym), venue),
                raw_symbol=Symbol(sym),
                currency=USD,
                price_precision=precision,
                price_increment=Price(10.0**-precision, precision),
                lot_size=Quantity.from_int(1),
                ts_event=0,
                ts_init=0,
                maker_fee=fee,
                taker_fee=fee,
            )
            engine.add_instrument(inst)
            bar_type = BarType.from_str(f"{sym}.{venue}-1-DAY-LAST-EXTERNAL")
            bars = BarDataWrangler(bar_type, inst).process(frames[sym].round(precision))
            engine.add_data(bars, sort=k == len(syms) - 1)  # sort once, after the last stream
            bar_types.append(str(bar_type))
        strat = MaCross(MaCrossConfig(bar_types=bar_types, fast=p.fast, slow=p.slow, value=p.value))
        engine.add_strategy(strat)
        return engine, strat

    times, run_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine, strat = build()
        t1 = time.perf_counter()
        engine.run()
        t2 = time.perf_counter()
        times.append(t2 - t0)
        run_times.append(t2 - t1)
        account = engine.trader.generate_account_report(venue)
        equity = float(account["total"].iloc[-1]) if len(account) else float("nan")
        fills = list(strat.fills)
        engine.dispose()
    return {
        "version": nautilus_trader.__version__,
        "times_s": times,
        "run_times_s": run_times,
        "fills": len(fills),
        "positions_opened": positions_opened(fills),
        "final_equity": equity,  # cash balance only: nautilus' margin account report excludes open positions' P&L
    }


RUNNERS = {"vectorbt": run_vectorbt, "backtrader": run_backtrader, "nautilus": run_nautilus}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="Parquet file of long bars (ts, symbol, OHLC, volume)")
    ap.add_argument("--engine", required=True, choices=ENGINES)
    ap.add_argument("--fast", type=int, default=20)
    ap.add_argument("--slow", type=int, default=100)
    ap.add_argument("--weight", type=float, required=True, help="fraction of the initial cash per position")
    ap.add_argument("--cash", type=float, default=10_000_000.0)
    ap.add_argument("--fee-bps", type=float, default=0.5)
    ap.add_argument("--slippage-bps", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", required=True, help="JSON result file")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats: must be >= 1")
    params = Params(args.fast, args.slow, args.weight, args.cash, args.fee_bps, args.slippage_bps)
    df = _load(args.data)
    result = RUNNERS[args.engine](df, params, args.repeats)
    result.update(engine=args.engine, params=asdict(params), python=sys.version.split()[0])
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
