"""`tradesys data ...`: generate synthetic streams, replay data onto Kafka, inspect topics, backfill features.

Every long command shows a progress bar; every bad input is one red line naming the field, exit code 2.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pyarrow as pa
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(no_args_is_help=True, help="Market data: generate, replay to Kafka, inspect topics, backfill.")
console = Console()

SymbolsOpt = Annotated[str, typer.Option(help="comma-separated symbols")]
Bootstrap = Annotated[str, typer.Option(envvar="TRADESYS_KAFKA_BOOTSTRAP", help="Kafka host:port")]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def _fail(exc: Exception) -> typer.Exit:
    """One line on stderr (never wrapped, no traceback); the caller raises the returned Exit(2)."""
    typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
    return typer.Exit(2)


def _symbols(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise ValueError("symbols: at least one symbol")
    return names


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Parquet dataset directory to write")],
    kind: Annotated[str, typer.Option(help="trades, quotes or book (L2 updates)")] = "trades",
    symbols: SymbolsOpt = "ALPHA,BRAVO,CHARLIE",
    days: Annotated[int, typer.Option(min=1, help="sessions (trades/quotes)")] = 1,
    events: Annotated[int, typer.Option(min=100, help="order-flow events per symbol (book)")] = 20_000,
    seed: int = 7,
) -> None:
    """Generate a seeded synthetic stream and record it as a partitioned Parquet dataset (replayable)."""
    from tradesys.data.parquet import ParquetRecorder

    try:
        names = _symbols(symbols)
        if kind in ("trades", "quotes"):
            from tradesys.data.ticks import SyntheticTicks

            chunks: Any = SyntheticTicks(names, days=days, seed=seed).iter_chunks()
            pick = 2 if kind == "trades" else 3
            total = None
        elif kind == "book":
            from tradesys.data.orderbook import SyntheticL2Source

            chunks = SyntheticL2Source(names, seed=seed, events_per_symbol=events).iter_chunks()
            pick = 2
            total = None
        else:
            raise ValueError(f"kind: {kind!r} is not one of trades, quotes, book")
        rows = 0
        with _progress() as bar, ParquetRecorder(out) as rec:
            task = bar.add_task(f"generating {kind}", total=total)
            for chunk in chunks:
                table = chunk[pick]
                if table.num_rows:
                    rec.write(table)
                    rows += table.num_rows
                bar.advance(task)
    except ValueError as exc:
        raise _fail(exc) from None
    console.print(f"wrote {rows:,} {kind} rows for {len(names)} symbols to {out}")


@app.command()
def replay(
    topic: Annotated[str, typer.Option(help="Kafka topic to publish to")],
    bootstrap: Bootstrap = "",
    parquet: Annotated[Path | None, typer.Option(help="replay this recorded dataset")] = None,
    source: Annotated[str, typer.Option(help="else a source: sp500_stocks, us_indices, synthetic")] = "sp500_stocks",
    start: Annotated[str | None, typer.Option(help="first date")] = None,
    end: Annotated[str | None, typer.Option(help="last date")] = None,
    speed: Annotated[float, typer.Option(help="batches per second (0: as fast as possible)")] = 0.0,
    by_symbol: Annotated[bool, typer.Option(help="one message per symbol (ticks) instead of per time step")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to wait for the broker to answer first")] = 10.0,
) -> None:
    """Publish recorded or configured data onto a Kafka topic, paced, with a progress bar.

    Per-time-step messages (the default) are what the live loop reads with `data.bus = kafka, data.publish = false`.
    """
    from kafka.errors import KafkaError

    from tradesys.bus import publish_batch
    from tradesys.bus.kafka import KafkaBus
    from tradesys.data.busfeed import publish_batches
    from tradesys.data.replay import Replay

    try:
        if not bootstrap:
            raise ValueError("bootstrap: give --bootstrap or set TRADESYS_KAFKA_BOOTSTRAP")
        if parquet is not None:
            from tradesys.data.parquet import ParquetReplay

            src: Any = ParquetReplay(parquet, start=start, end=end)
        else:
            from tradesys.config import load_config
            from tradesys.data import make_source

            over = [f"data.source={source}"] + ([f"data.start={start}"] if start else []) + (
                [f"data.end={end}"] if end else [])
            src = make_source(load_config(None, over).data)
        n = len(src)
        bus = KafkaBus(bootstrap, connect_timeout_s=timeout)
        bus.create_topic(topic)
        producer = bus.producer()
        sent = 0
        with _progress() as bar:
            task = bar.add_task(f"replaying to {topic}", total=n)
            paced = Replay(src, speed)

            def tick(batches: Any) -> Any:
                for b in batches:
                    yield b
                    bar.advance(task)

            if by_symbol:
                for b in tick(paced):
                    sent += publish_batch(producer, topic, b)
                producer.flush()
            else:
                sent = publish_batches(producer, topic, tick(paced))
        producer.close()
        bus.close()
    except ValueError as exc:
        raise _fail(exc) from None
    except KafkaError as exc:  # unreachable broker, refused request: one line naming the flag, not a traceback
        raise _fail(ValueError(f"--bootstrap: broker {bootstrap} failed: {' '.join(str(exc).split())}")) from None
    console.print(f"published {sent:,} messages to {topic} on {bootstrap}")


@app.command()
def topics(
    bootstrap: Bootstrap = "",
    group: Annotated[str | None, typer.Option(help="also show this consumer group's committed offsets and lag")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print the rows as JSON on stdout")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to wait for the broker")] = 5.0,
) -> None:
    """List topics with their partitions and end offsets (and a consumer group's committed offsets and lag)."""
    from kafka.errors import KafkaError

    from tradesys.bus.kafka import BrokerUnavailable, topic_offsets

    if not bootstrap:
        raise _fail(ValueError("--bootstrap: give --bootstrap or set TRADESYS_KAFKA_BOOTSTRAP"))
    try:
        rows = topic_offsets(bootstrap, group, timeout_s=timeout)
    except (BrokerUnavailable, KafkaError) as exc:
        raise _fail(exc) from None
    if json_:
        from tradesys.commands.output import dumps

        typer.echo(dumps(rows))
        return
    table = Table(title=f"topics on {bootstrap}" + (f", group {group}" if group else ""))
    for col in ("topic", "partition", "end offset", *(["committed", "lag"] if group else [])):
        table.add_column(col, justify="right")
    for r in rows:
        cells = [r["topic"], str(r["partition"]), f"{r['end_offset']:,}"]
        if group:
            cells += ["-" if r["committed"] is None else f"{r['committed']:,}",
                      "-" if r["lag"] is None else f"{r['lag']:,}"]
        table.add_row(*cells)
    console.print(table)


TECHNICAL = {"sma20": "float64", "ema20": "float64", "rsi14": "float64", "atr14": "float64", "vol20": "float64"}


def technical_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The backfilled feature set from daily bars of one or more symbols (TA-Lib conventions; see tradesys.features)."""
    import pandas as pd  # here, not at the top: `import tradesys.cli` (every command) does not pay for pandas

    from tradesys.features import technical as ta

    out = []
    for sym, g in bars.sort_values("ts").groupby("symbol", sort=False):
        c, h, lo = (g[k].to_numpy(dtype=float) for k in ("close", "high", "low"))
        out.append(pd.DataFrame({
            "symbol": sym, "ts": g["ts"].to_numpy(),
            "sma20": ta.sma(c, 20), "ema20": ta.ema(c, 20), "rsi14": ta.rsi(c, 14), "atr14": ta.atr(h, lo, c, 14),
            "vol20": ta.realized_vol(c, 20),
        }))
    return pd.concat(out, ignore_index=True)


@app.command()
def backfill(
    store: Annotated[Path, typer.Option(help="feature store root directory")],
    feature: Annotated[str, typer.Option(help="feature name to write")] = "technical_daily",
    version: int = 1,
    source: Annotated[str, typer.Option(help="sp500_stocks or us_indices")] = "sp500_stocks",
    start: Annotated[str, typer.Option(help="first day written")] = "2018-01-01",
    end: Annotated[str, typer.Option(help="last day written")] = "2018-12-31",
    warmup_days: Annotated[int, typer.Option(help="history read before start to warm the indicators up")] = 120,
) -> None:
    """Compute the technical feature set over real bars and backfill it into the offline store, day by day
    (idempotent: a rerun rewrites the same partitions)."""
    import pandas as pd

    from tradesys.config import load_config
    from tradesys.data import make_source
    from tradesys.featurestore import FeatureDefinition, OfflineStore

    try:
        d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
        first = (pd.Timestamp(d0) - pd.Timedelta(days=warmup_days)).date()
        src = make_source(load_config(None, [f"data.source={source}", f"data.start={first}", f"data.end={d1}"]).data)
        bars = pa.Table.from_batches(list(src.batches())).to_pandas()
        feats = technical_features(bars)
        feats = feats[np.isfinite(feats["sma20"])]
        defn = FeatureDefinition(feature, version, TECHNICAL, transform="tradesys.commands.data.technical_features v1",
                                 description="SMA20, EMA20, RSI14, ATR14, 20-day realised vol of daily bars")
        offline = OfflineStore(store)
        offline.register(defn)
        by_day = {d: g for d, g in feats.groupby(feats["ts"].dt.date)}
        days = (d1 - d0).days + 1
        with _progress() as bar:
            task = bar.add_task(f"backfilling {feature} v{version}", total=days)

            def rows_for(day: date) -> pd.DataFrame:
                bar.advance(task)
                return by_day.get(day, feats.iloc[0:0])

            written = offline.backfill(defn, version, rows_for, d0, d1)
    except ValueError as exc:
        raise _fail(exc) from None
    console.print(f"backfilled {written:,} rows of {feature} v{version} into {store}")
