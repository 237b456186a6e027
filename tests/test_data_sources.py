"""Market data sources, checked against independent references: the packaged frames themselves (arch,
skfolio), the synthetic model's own parameters (statistically), and a fake clock for replay pacing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tradesys.config import DataConfig
from tradesys.core.schemas import BAR_SCHEMA
from tradesys.data import (
    DataSource,
    Replay,
    ReplayCursor,
    Sp500StocksSource,
    SyntheticIntradaySource,
    SyntheticParams,
    TableSource,
    UsIndicesSource,
    bars_from_closes,
    bars_table,
    make_source,
)
from tradesys.data.historical import us_indices_table

NS = 10**9
ONE_DAY_NS = 86_400 * NS


def _ns(day: str, hour: int = 21) -> int:
    return int(pd.Timestamp(day, tz="UTC").value) + hour * 3600 * NS


def _frame(src: TableSource) -> pd.DataFrame:
    df = src.table.to_pandas()
    df["ts_ns"] = pc.cast(src.table.column("ts"), pa.int64()).to_numpy()
    return df


def _log_returns(src: TableSource) -> pd.DataFrame:
    """Close-to-close log returns, one column per symbol."""
    closes = _frame(src).pivot(index="ts_ns", columns="symbol", values="close")
    return np.log(closes).diff().dropna()


def _excess_kurtosis(x: np.ndarray) -> float:
    z = x - x.mean()
    return float((z**4).mean() / (z**2).mean() ** 2 - 3.0)


# ---------------------------------------------------------------------------------------------------------
# Fixtures: one instance per source per module (loading the packaged data takes about a second)


@pytest.fixture(scope="module")
def arch_frames() -> dict[str, pd.DataFrame]:
    """The independent reference: arch's own frames, loaded directly (not through our cache)."""
    from arch.data import nasdaq, sp500

    return {"SP500": sp500.load(), "NASDAQ": nasdaq.load()}


@pytest.fixture(scope="module")
def skfolio_prices() -> pd.DataFrame:
    from skfolio.datasets import load_sp500_dataset

    return load_sp500_dataset()


@pytest.fixture(scope="module")
def indices() -> UsIndicesSource:
    return UsIndicesSource()


@pytest.fixture(scope="module")
def stocks() -> Sp500StocksSource:
    return Sp500StocksSource(start=date(2020, 1, 1), end=date(2022, 12, 31))


@pytest.fixture(scope="module")
def synthetic() -> SyntheticIntradaySource:
    return SyntheticIntradaySource(["AAA", "BBB", "CCC"], days=3, bar_seconds=300, seed=11)


# ---------------------------------------------------------------------------------------------------------
# The DataSource contract, for every source


@pytest.mark.parametrize("which", ["indices", "stocks", "synthetic"])
def test_every_source_honours_the_batch_contract(which: str, request: pytest.FixtureRequest) -> None:
    src = request.getfixturevalue(which)
    if isinstance(src, UsIndicesSource):
        src = UsIndicesSource(start=date(2015, 1, 1))  # a shorter window keeps the per-batch loop quick
    assert isinstance(src, DataSource)
    previous = None
    n = 0
    for batch in src.batches():
        n += 1
        assert batch.schema.equals(BAR_SCHEMA, check_metadata=True)
        ts = pc.cast(batch.column("ts"), pa.int64()).to_numpy()
        assert batch.num_rows > 0 and (ts == ts[0]).all(), "one timestamp per batch"
        assert previous is None or ts[0] > previous, "strictly increasing across batches"
        previous = ts[0]
        syms = batch.column("symbol").to_pylist()
        assert len(set(syms)) == len(syms), "no duplicate symbol in a batch"
        assert set(syms) <= set(src.symbols)
    assert n == len(src) > 0
    # a fresh iterator per call
    assert sum(1 for _ in src.batches()) == n
    # zero-copy: a batch's columns point into the source table's buffers
    first = next(src.batches())
    close_buffer = src.table.column("close").chunk(0).buffers()[1]
    assert first.column("close").buffers()[1].address == close_buffer.address


# ---------------------------------------------------------------------------------------------------------
# UsIndicesSource vs arch


def test_us_indices_match_arch(indices: UsIndicesSource, arch_frames: dict[str, pd.DataFrame]) -> None:
    assert indices.symbols == ["NASDAQ", "SP500"]
    df = _frame(indices)
    rng = np.random.default_rng(0)
    for sym, ref in arch_frames.items():
        mine = df[df.symbol == sym].set_index("ts_ns")
        assert len(mine) == len(ref)
        for day in rng.choice(ref.index, size=25, replace=False):
            row, want = mine.loc[_ns(str(pd.Timestamp(day).date()))], ref.loc[day]
            assert row.close == pytest.approx(want["Adj Close"], rel=1e-12)
            ratio = want["Adj Close"] / want["Close"]
            assert row.open == pytest.approx(want["Open"] * ratio, rel=1e-12)
            assert row.high == pytest.approx(want["High"] * ratio, rel=1e-12)
            assert row.low == pytest.approx(want["Low"] * ratio, rel=1e-12)
            if want["Volume"] > 0:
                assert row.volume == want["Volume"]
        # arch has two NASDAQ days with Volume == 0 (a data error): they become NaN, "unknown"
        zero = ref.index[ref["Volume"] == 0]
        for day in zero:
            assert np.isnan(mine.loc[_ns(str(day.date())), "volume"])
        positive = ref["Volume"].to_numpy() > 0
        np.testing.assert_array_equal(mine["volume"].to_numpy()[positive], ref["Volume"].to_numpy()[positive])
    assert (df.low <= df[["open", "close"]].min(axis=1)).all()
    assert (df.high >= df[["open", "close"]].max(axis=1)).all()


def test_us_indices_window_and_subset(arch_frames: dict[str, pd.DataFrame]) -> None:
    src = UsIndicesSource(symbols=["SP500"], start=date(2008, 9, 1), end="2009-03-31")
    ref = arch_frames["SP500"]
    in_window = ref[(ref.index >= "2008-09-01") & (ref.index <= "2009-03-31")]
    assert len(src) == len(in_window)
    assert src.symbols == ["SP500"]
    assert set(src.table.column("symbol").to_pylist()) == {"SP500"}
    assert src.timestamps[0] == _ns(str(in_window.index[0].date()))
    assert src.timestamps[-1] == _ns(str(in_window.index[-1].date()))  # the end date is inclusive


def test_adjustment_scales_the_whole_bar() -> None:
    """Close 10 but adjusted close 5: open/high/low halve too, so the bar stays consistent."""
    idx = pd.DatetimeIndex(["2020-01-02", "2020-01-03"])
    frame = pd.DataFrame(
        {"Open": [12, 8], "High": [13, 11], "Low": [9, 7], "Close": [10, 10], "Adj Close": [5, 10], "Volume": [1, 2]},
        index=idx,
    )
    got = us_indices_table({"X": frame}).to_pandas()
    assert got[["open", "high", "low", "close", "volume"]].to_numpy().tolist() == [
        [6.0, 6.5, 4.5, 5.0, 1.0],
        [8.0, 11.0, 7.0, 10.0, 2.0],
    ]
    assert got.ts.tolist() == [pd.Timestamp("2020-01-02 21:00", tz="UTC"), pd.Timestamp("2020-01-03 21:00", tz="UTC")]


# ---------------------------------------------------------------------------------------------------------
# Sp500StocksSource vs skfolio


def test_sp500_closes_match_skfolio(stocks: Sp500StocksSource, skfolio_prices: pd.DataFrame) -> None:
    ref = skfolio_prices.loc["2020-01-01":"2022-12-31"]
    assert stocks.symbols == sorted(skfolio_prices.columns)
    assert len(stocks) == len(ref)
    mine = _frame(stocks).pivot(index="ts_ns", columns="symbol", values="close")
    np.testing.assert_array_equal(mine.index.to_numpy(), [_ns(str(d.date())) for d in ref.index])
    np.testing.assert_allclose(mine[ref.columns].to_numpy(), ref.to_numpy(), rtol=0, atol=0)
    df = _frame(stocks)
    assert df.volume.isna().all(), "no volume in the data set: NaN means unknown"
    assert (df.low <= df[["open", "close"]].min(axis=1)).all()
    assert (df.high >= df[["open", "close"]].max(axis=1)).all()
    # open is the previous close (inside the window too; the window's first open is the prior day's close)
    aapl = skfolio_prices["AAPL"]
    opens = df[df.symbol == "AAPL"].open.to_numpy()
    np.testing.assert_array_equal(opens, aapl.shift(1).loc["2020-01-01":"2022-12-31"].to_numpy())


def test_sp500_subset_window_and_unknown_symbol(skfolio_prices: pd.DataFrame) -> None:
    src = Sp500StocksSource(symbols=["MSFT", "AAPL"], start=date(2021, 3, 1), end=date(2021, 3, 31))
    assert src.symbols == ["MSFT", "AAPL"]
    ref = skfolio_prices.loc["2021-03-01":"2021-03-31", ["AAPL", "MSFT"]]
    assert len(src) == len(ref)
    for batch, (_, row) in zip(src.batches(), ref.iterrows(), strict=True):
        assert batch.column("symbol").to_pylist() == ["AAPL", "MSFT"]
        assert batch.column("close").to_pylist() == [row["AAPL"], row["MSFT"]]
    with pytest.raises(ValueError, match=r"unknown symbol.*NOPE"):
        Sp500StocksSource(symbols=["AAPL", "NOPE"])
    with pytest.raises(ValueError, match="no bars between"):
        Sp500StocksSource(start=date(2030, 1, 1), end=date(2031, 1, 1))


def test_close_only_bars_drop_missing_prices_per_symbol() -> None:
    """A NaN price means the symbol did not trade that day: it is absent from that batch, and its next open
    is its own previous traded close."""
    closes = pd.DataFrame(
        {"A": [10.0, np.nan, 12.0, 11.0], "B": [np.nan, 20.0, 21.0, 19.0]},
        index=pd.DatetimeIndex(["2020-01-06", "2020-01-07", "2020-01-08", "2020-01-09"]),
    )
    src = TableSource(bars_from_closes(closes))
    batches = [b.to_pydict() for b in src.batches()]
    assert [b["symbol"] for b in batches] == [["A"], ["B"], ["A", "B"], ["A", "B"]]
    assert batches[1]["open"] == [20.0]  # B's first day: open = close
    assert batches[2]["open"] == [10.0, 20.0]  # A skipped a day: open = its last traded close
    assert batches[2]["high"] == [12.0, 21.0] and batches[2]["low"] == [10.0, 20.0]
    assert batches[3]["high"] == [12.0, 21.0] and batches[3]["low"] == [11.0, 19.0]


# ---------------------------------------------------------------------------------------------------------
# The shared table helper


def test_bars_table_sorts_and_rejects_duplicates() -> None:
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2020-01-02 15:00", "2020-01-02 14:00", "2020-01-02 14:00"]).tz_localize(
                "America/New_York"
            ),
            "symbol": ["B", "B", "A"],
            "open": [1.0, 2.0, 3.0],
            "high": [1.0, 2.0, 3.0],
            "low": [1.0, 2.0, 3.0],
            "close": [1.0, 2.0, 3.0],
            "volume": [1, 2, 3],
        }
    )
    table = bars_table(frame)
    assert table.schema.equals(BAR_SCHEMA, check_metadata=True)
    assert table.column("symbol").to_pylist() == ["A", "B", "B"]
    assert table.column("ts")[0].value == _ns("2020-01-02", 19)  # 14:00 New York (EST) = 19:00 UTC
    src = TableSource(table)
    assert len(src) == 2 and [b.num_rows for b in src.batches()] == [2, 1]
    with pytest.raises(ValueError, match=r"duplicate row for symbol 'B'"):
        bars_table(pd.concat([frame, frame.iloc[[0]]]))
    with pytest.raises(ValueError, match="missing column"):
        bars_table(frame.drop(columns="volume"))


def test_table_source_window_bounds() -> None:
    src = UsIndicesSource(start=datetime(2018, 12, 27, 21, 0), end=_ns("2018-12-31"))
    assert len(src) == 3  # 27th (inclusive, exact instant), 28th, 31st
    with pytest.raises(ValueError, match="after end"):
        UsIndicesSource(start=date(2018, 2, 1), end=date(2018, 1, 1))


# ---------------------------------------------------------------------------------------------------------
# Synthetic intraday data


def test_synthetic_is_deterministic_by_seed(synthetic: SyntheticIntradaySource) -> None:
    again = SyntheticIntradaySource(["AAA", "BBB", "CCC"], days=3, bar_seconds=300, seed=11)
    other = SyntheticIntradaySource(["AAA", "BBB", "CCC"], days=3, bar_seconds=300, seed=12)
    assert synthetic.table.equals(again.table)
    assert not synthetic.table.column("close").equals(other.table.column("close"))
    assert synthetic.table.column("ts").equals(other.table.column("ts"))


def test_synthetic_calendar_and_ohlc(synthetic: SyntheticIntradaySource) -> None:
    # 2024-01-05 is a Friday: sessions Fri, Mon, Tue
    src = SyntheticIntradaySource(["X", "Y"], days=3, bar_seconds=300, seed=1, start=date(2024, 1, 5))
    stamps = pd.to_datetime(src.timestamps, utc=True)
    assert sorted({d.date() for d in stamps}) == [date(2024, 1, 5), date(2024, 1, 8), date(2024, 1, 9)]
    assert len(src) == 3 * 78  # 6.5 h / 5 min
    minutes = stamps.hour * 60 + stamps.minute
    assert minutes.min() == 14 * 60 + 35 and minutes.max() == 21 * 60  # bars stamped at their end
    df = _frame(synthetic)
    assert (df.low <= df[["open", "close"]].min(axis=1)).all()
    assert (df.high >= df[["open", "close"]].max(axis=1)).all()
    assert (df.low > 0).all() and (df.volume > 0).all()
    # open is the previous close, across the overnight gap too
    for _, g in df.groupby("symbol"):
        np.testing.assert_array_equal(g.open.to_numpy()[1:], g.close.to_numpy()[:-1])
        assert g.open.iloc[0] == 100.0


def test_synthetic_volume_is_u_shaped() -> None:
    src = SyntheticIntradaySource(["X", "Y", "Z"], days=10, bar_seconds=60, seed=3)
    df = _frame(src)
    minute = (df.ts.dt.hour * 60 + df.ts.dt.minute).to_numpy()  # bar end, UTC
    first = df.volume[(minute > 14 * 60 + 30) & (minute <= 15 * 60)].mean()
    last = df.volume[(minute > 20 * 60 + 30) & (minute <= 21 * 60)].mean()
    midday = df.volume[(minute > 17 * 60 + 15) & (minute <= 17 * 60 + 45)].mean()  # 12:15-12:45 New York
    assert first > 1.5 * midday and last > 1.5 * midday


def test_synthetic_volatility_matches_sigma_without_jumps() -> None:
    """Estimated annualised vol within 6% of the configured sigma, per symbol. With n = 10 x 390 = 3900
    Gaussian bar returns the relative standard error of a sample std is 1/sqrt(2n) = 1.1%, so 6% is over
    5 standard errors: a failure means a wrong scale (e.g. annualisation), not bad luck."""
    sigmas = [0.10, 0.25, 0.40]
    src = SyntheticIntradaySource(["A", "B", "C"], days=10, bar_seconds=60, seed=5, sigma=sigmas, jump_intensity=0.0)
    rets = _log_returns(src)
    assert len(rets) == 10 * 390 - 1
    est = rets.std(ddof=1).to_numpy() * np.sqrt(src.bars_per_year)
    np.testing.assert_allclose(est, sigmas, rtol=0.06)
    assert src.bars_per_year == 252 * 390
    # and Gaussian: excess kurtosis near 0 (standard error sqrt(24 / n) = 0.08 per symbol; pooled 0.045)
    assert abs(_excess_kurtosis((rets / rets.std()).to_numpy().ravel())) < 0.3


def test_synthetic_jumps_fatten_the_tails() -> None:
    """Jumps of ~0.5% about once every 50 bars against a bar sigma of ~0.06%: theory gives excess
    kurtosis in the tens; the no-jump run above stays within 0.3 of zero."""
    src = SyntheticIntradaySource(
        ["A", "B"], days=5, bar_seconds=60, seed=5, jump_intensity=2000.0, jump_mean=0.0, jump_std=0.005
    )
    rets = _log_returns(src)
    for sym in rets:
        assert _excess_kurtosis(rets[sym].to_numpy()) > 3.0


def test_synthetic_correlation() -> None:
    """Sample correlation within 0.05 of rho = 0.6 (standard error (1 - rho^2) / sqrt(n) = 0.007)."""
    src = SyntheticIntradaySource(["A", "B"], days=10, bar_seconds=60, seed=9, correlation=0.6, jump_intensity=0)
    rets = _log_returns(src)
    assert rets["A"].corr(rets["B"]) == pytest.approx(0.6, abs=0.05)
    independent = SyntheticIntradaySource(["A", "B"], days=10, bar_seconds=60, seed=9, correlation=0.0)
    r0 = _log_returns(independent)
    assert abs(r0["A"].corr(r0["B"])) < 0.05


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"days": 0}, "days"),
        ({"bar_seconds": 30_000}, "bar_seconds"),
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": [0.1, 0.2]}, "sigma"),
        ({"start_price": 0.0}, "start_price"),
        ({"correlation": 1.0}, "correlation"),
        ({"correlation": [[1.0, 0.9, 0.0], [0.9, 1.0, 0.9], [0.0, 0.9, 1.0]]}, "correlation"),
        ({"jump_intensity": -1.0}, "jump_intensity"),
        ({"jump_std": float("nan")}, "jump_std"),
        ({"substeps": 0}, "substeps"),
        ({"volume_base": 0}, "volume_base"),
        ({"symbols": ["A", "A", "B"]}, "symbols"),
    ],
)
def test_synthetic_validation_names_the_parameter(kwargs: dict[str, object], name: str) -> None:
    args: dict[str, object] = {"symbols": ("A", "B", "C"), **kwargs}
    with pytest.raises(ValueError, match=rf"^{name}: "):
        SyntheticParams(**args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# Replay


class FakeClock:
    """A clock that only moves when slept on (or when the test says work took time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_replay_paces_at_speed(synthetic: SyntheticIntradaySource) -> None:
    clock = FakeClock()
    replay = Replay(synthetic, speed=10, clock=clock, sleep=clock.sleep)
    got = [b for _, b in zip(range(6), replay, strict=False)]
    assert len(got) == 6
    # the first bar at once, then one every 0.1 s
    assert clock.sleeps == pytest.approx([0.1] * 5)
    assert clock.now == pytest.approx(1000.5)

    # time the consumer spends between bars is deducted from the wait; a slow step is not followed by a burst
    clock = FakeClock()
    it = iter(Replay(synthetic, speed=10, clock=clock, sleep=clock.sleep))
    for work in (0.03, 0.03, 0.25, 0.0):
        next(it)
        clock.now += work
    next(it)
    assert clock.sleeps == pytest.approx([0.07, 0.07, 0.1])


def test_replay_speed_zero_never_sleeps(synthetic: SyntheticIntradaySource) -> None:
    def no_sleep(_: float) -> None:
        raise AssertionError("speed 0 must not sleep")

    def no_clock() -> float:
        raise AssertionError("speed 0 needs no clock")

    replay = Replay(synthetic, speed=0, clock=no_clock, sleep=no_sleep)
    assert sum(1 for _ in replay) == len(synthetic) == len(replay)
    with pytest.raises(ValueError, match=r"^speed: "):
        Replay(synthetic, speed=-1)


class _PlainSource:
    """A DataSource with nothing but the protocol (no table, no seek), to test the generic path."""

    name = "plain"

    def __init__(self, inner: TableSource) -> None:
        self._inner = inner

    @property
    def symbols(self) -> list[str]:
        return self._inner.symbols

    def batches(self) -> Iterator[pa.RecordBatch]:
        return self._inner.batches()

    def __len__(self) -> int:
        return len(self._inner)


@pytest.mark.parametrize("plain", [False, True])
def test_resume_skips_seen_timestamps(synthetic: SyntheticIntradaySource, plain: bool) -> None:
    src: DataSource = _PlainSource(synthetic) if plain else synthetic
    stamps = [int(b.column("ts")[0].value) for b in src.batches()]
    replay = Replay(src, speed=0)
    seen = stamps[40]
    resumed = [int(b.column("ts")[0].value) for b in replay.resume_after(seen)]
    assert resumed == stamps[41:]
    assert replay.last_ts == stamps[-1]
    assert replay.remaining_after(seen) == len(stamps) - 41
    assert replay.remaining_after(stamps[40] + 1) == len(stamps) - 41  # between bars
    assert [int(b.column("ts")[0].value) for b in replay.resume_after(-1)] == stamps

    # a cursor: consume some, "crash", rebuild from the persisted last_ts, carry on without overlap
    cursor = ReplayCursor(src)
    first = [cursor.next_batch() for _ in range(5)]
    assert cursor.last_ts == stamps[4] and all(b is not None for b in first)
    restarted = ReplayCursor(src, last_ts=cursor.last_ts)
    assert restarted.remaining() == len(stamps) - 5
    rest = [int(b.column("ts")[0].value) for b in restarted]
    assert rest == stamps[5:]
    assert restarted.next_batch() is None
    assert ReplayCursor(src, last_ts=stamps[-1]).next_batch() is None


def test_resume_paces_from_the_resume_point(synthetic: SyntheticIntradaySource) -> None:
    clock = FakeClock()
    replay = Replay(synthetic, speed=4, clock=clock, sleep=clock.sleep)
    after = int(synthetic.timestamps[-4])
    assert len(list(replay.resume_after(after))) == 3
    assert clock.sleeps == pytest.approx([0.25, 0.25])


# ---------------------------------------------------------------------------------------------------------
# make_source


def test_make_source_maps_the_config() -> None:
    s = make_source(
        DataConfig(source="sp500_stocks", symbols=["KO", "PEP"], start=date(2019, 1, 1), end=date(2019, 6, 30))
    )
    assert isinstance(s, Sp500StocksSource) and s.symbols == ["KO", "PEP"]
    first, last = pd.Timestamp(int(s.timestamps[0]), tz="UTC"), pd.Timestamp(int(s.timestamps[-1]), tz="UTC")
    assert first.date() == date(2019, 1, 2) and last.date() == date(2019, 6, 28)

    i = make_source(DataConfig(source="us_indices", start=date(2018, 1, 1), end=date(2018, 12, 31)))
    assert isinstance(i, UsIndicesSource) and i.symbols == ["NASDAQ", "SP500"] and len(i) == 251

    cfg = DataConfig(
        source="synthetic", seed=3, synthetic_days=2, synthetic_bar_seconds=600, start=date(2024, 3, 1), end=None
    )
    y = make_source(cfg)
    assert isinstance(y, SyntheticIntradaySource)
    assert len(y) == 2 * 39 and y.params.seed == 3 and len(y.symbols) == 5
    assert pd.Timestamp(int(y.timestamps[0]), tz="UTC") == pd.Timestamp("2024-03-01 14:40", tz="UTC")
    assert y.table.equals(make_source(cfg).table)
    assert not y.table.equals(make_source(cfg.model_copy(update={"seed": 4})).table)
    # end truncates the synthetic sessions
    cut = make_source(cfg.model_copy(update={"end": date(2024, 3, 1)}))
    assert len(cut) == 39


def test_sources_pickle_compactly() -> None:
    """Sources travel to Ray actors: a pickled window carries only its own rows and still works."""
    import pickle

    window = Sp500StocksSource(start=date(2022, 1, 1))
    blob = pickle.dumps(window)
    assert len(blob) < 0.05 * len(pickle.dumps(Sp500StocksSource(start=None, end=None)))
    back = pickle.loads(blob)
    assert back.symbols == window.symbols and len(back) == len(window)
    pd.testing.assert_frame_equal(pa.Table.from_batches(list(back.batches())).to_pandas(), window.table.to_pandas())
