"""The tear sheet as files: one self-contained HTML page (PNG charts embedded as base64) plus the PNGs.

Shared by `tradesys report RUN` and the HTTP routes `/v1/runs/{id}/...`: finding a run's ledger (a URL, a file,
or a run id under the runs folders), finding its bars, and drawing. The numbers come from
`tradesys.backtest.tearsheet` (pure); this module does the I/O.

Where the bars come from (a ledger does not record its data source):
1. the run's configuration, when given (`--config`/`--set`) or saved in the run folder as `config.json` (a
   `TradesysConfig` dump) or `config.toml` (a sweep trial's folder: the sweep's `spec.json` base configuration,
   unless the sweep varies `data.*`): its data section (source, symbols) is replayed over the ledger's dates;
2. otherwise inferred: when every symbol the ledger traded belongs to one packaged real source (`sp500_stocks`,
   `us_indices`), that source for those symbols over the ledger's dates; the benchmark is then the traded
   symbols only, and the sheet says so;
3. otherwise (synthetic data, an external feed) no bars: the sheet has no benchmark, slippage or gross exposure,
   and says why.

Charts are drawn with matplotlib's object API on the Agg canvas (no pyplot state), so concurrent requests in
the API's worker threads do not share figures.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradesys.backtest.tearsheet import DEFAULT_PARTICIPATION, DEFAULT_ROLLING_WINDOW, TearSheet, tear_sheet
from tradesys.config import DataConfig, TradesysConfig

RUN_ID_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
"""A run id: names separated by single dots; no '/', no '..', no leading dot (so never a path out of the folder)."""
_RUN_ID = re.compile(RUN_ID_PATTERN)
LEDGER_FILE = "ledger.db"
CONFIG_FILES = ("config.json", "config.toml")
PNG_NAMES = ("equity", "monthly", "rolling", "exposure", "pnl_by_symbol")


class RunNotFound(LookupError):
    """No ledger for the run; the message names the argument (`RUN` or `id`) and where it looked."""


# --- finding a run ------------------------------------------------------------------------------------------------


def default_runs_dirs() -> list[Path]:
    """Where run ids are looked up: `$TRADESYS_RUNS_DIR` (else `~/tradesys/runs`: Ray jobs' durable runs), then
    `./runs` (`ledger.runs_dir`'s default for `tradesys live`)."""
    first = Path(os.environ.get("TRADESYS_RUNS_DIR") or Path.home() / "tradesys" / "runs").expanduser()
    dirs = [first, Path("runs")]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def check_run_id(run_id: str, field: str = "id") -> str:
    """The id if it is a plain run id; ValueError naming `field` otherwise (path separators, '..', empty)."""
    if not run_id or len(run_id) > 200 or not _RUN_ID.match(run_id):
        raise ValueError(f"{field}: {run_id!r} is not a run id (letters, digits, '_', '-', single dots; no '/' or "
                         "'..')")
    return run_id


def find_run(run_id: str, runs_dirs: Sequence[Path], field: str = "id") -> Path:
    """The ledger file of run `run_id` (`<runs dir>/<id>/ledger.db`, first folder that has it). A sweep trial is
    `<sweep id>.<trial>`: `<runs dir>/<sweep id>/trials/<trial>/ledger.db` (trial 7 or 00007)."""
    check_run_id(run_id, field)
    sweep, dot, trial = run_id.partition(".")
    for d in runs_dirs:
        path = Path(d) / run_id / LEDGER_FILE
        if path.is_file():
            return path
        if dot and "." not in trial:
            for name in dict.fromkeys((trial, f"{int(trial):05d}" if trial.isdigit() else trial)):
                path = Path(d) / sweep / "trials" / name / LEDGER_FILE
                if path.is_file():
                    return path
    raise RunNotFound(f"{field}: no run {run_id!r} (looked for {LEDGER_FILE} under "
                      f"{', '.join(str(d) for d in runs_dirs)})")


@dataclass(frozen=True, slots=True)
class RunRef:
    url: str  # the ledger URL (sqlite file URLs absolute)
    name: str  # a short name for titles
    folder: Path | None  # the run's folder (a file ledger's folder), where a saved config may be


def resolve_run(run: str, runs_dirs: Sequence[Path], field: str = "RUN") -> RunRef:
    """RUN as a ledger URL (sqlite:///..., postgresql://...), a ledger file, or a run id under `runs_dirs`."""
    from tradesys.ledger import redact_url
    from tradesys.ledger.sqlite import sqlite_path

    run = run.strip()
    if not run:
        raise ValueError(f"{field}: empty")
    if run.startswith(("postgresql://", "postgres://")):
        from urllib.parse import urlsplit

        return RunRef(run, urlsplit(run).path.strip("/") or "postgresql", None)  # the database's name
    if run.startswith("sqlite:"):
        try:
            path = Path(sqlite_path(run))
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from None
        if str(path) == ":memory:":
            raise ValueError(f"{field}: an in-memory ledger ends with its process: nothing to report")
        if not path.is_file():
            raise RunNotFound(f"{field}: no ledger file at {path}")
        path = path.resolve()
        return RunRef(f"sqlite:///{path}", _name(path), path.parent)
    if "://" in run:
        raise ValueError(f"{field}: unsupported URL scheme in {redact_url(run)!r}: expected sqlite:///path, "
                         "postgresql://..., a ledger file or a run id")
    path = Path(run).expanduser()
    if path.is_file():
        path = path.resolve()
        return RunRef(f"sqlite:///{path}", _name(path), path.parent)
    if path.is_dir() and (path / LEDGER_FILE).is_file():
        path = (path / LEDGER_FILE).resolve()
        return RunRef(f"sqlite:///{path}", path.parent.name, path.parent)
    if not _RUN_ID.match(run):
        raise RunNotFound(f"{field}: {run!r} is neither a ledger file nor a run id")
    ledger = find_run(run, runs_dirs, field).resolve()
    return RunRef(f"sqlite:///{ledger}", run, ledger.parent)


def _name(ledger_file: Path) -> str:
    """A run folder's name for `<run>/ledger.db`, else the file's own stem (`bt.db` -> `bt`)."""
    return ledger_file.parent.name if ledger_file.name == LEDGER_FILE and ledger_file.parent.name else ledger_file.stem


def saved_config(folder: Path | None) -> tuple[TradesysConfig | None, str]:
    """The run's configuration saved in its folder (config.json, else config.toml), and where it came from.

    A sweep trial's folder (`<sweep>/trials/<n>/`) without one falls back to the sweep's `spec.json` base
    configuration: its data section is the trial's unless the sweep varies `data.*` (then none is used).
    """
    from tradesys.config import ConfigError, load_config

    if folder is None:
        return None, ""
    for name in CONFIG_FILES:
        p = folder / name
        if not p.is_file():
            continue
        try:
            if name.endswith(".json"):
                tree = json.loads(p.read_text())
                tree = tree.get("config", tree) if isinstance(tree, dict) else tree
                if not isinstance(tree, dict):
                    raise ValueError("expected a JSON object")
                cfg = load_config(overrides=tree)  # top-level sections as overrides: errors name the field
            else:
                cfg = load_config(p)
        except (ConfigError, ValueError) as exc:
            raise ValueError(f"{p}: not a readable run configuration: {' '.join(str(exc).split())}") from None
        return cfg, f" saved in {p}"
    spec = folder.parent.parent / "spec.json"
    if folder.parent.name == "trials" and spec.is_file():
        try:
            tree = json.loads(spec.read_text())
            swept = [k for k in (tree.get("params") or {}) if str(k).startswith("data.")]
            if not swept and isinstance(tree.get("base_config"), dict):
                return TradesysConfig.model_validate(tree["base_config"]), f" (the sweep's base configuration, {spec})"
        except ValueError:  # not the sweep's spec as written by tradesys: no configuration from it
            return None, ""
    return None, ""


# --- the bars -----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class BarData:
    closes: pd.DataFrame  # int64 ns x symbols
    volumes: pd.DataFrame
    universe: list[str]  # the benchmark's symbols
    note: str  # where the bars came from, for the report


def _wide(table: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A BAR_SCHEMA Arrow table -> (closes, volumes), int64 ns index, one column per symbol."""
    df = table.select(["ts", "symbol", "close", "volume"]).to_pandas()
    ts = df["ts"]
    df["ts"] = ts.to_numpy("int64") if ts.dtype.kind in "iu" else pd.DatetimeIndex(ts).as_unit("ns").asi8
    closes = df.pivot(index="ts", columns="symbol", values="close")
    volumes = df.pivot(index="ts", columns="symbol", values="volume")
    closes.columns.name = volumes.columns.name = None
    return closes, volumes


def _source_table(data: DataConfig, start_ns: int, end_ns: int) -> Any:
    """The configured source's bars between two timestamps (inclusive), as one Arrow table."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tradesys.data import make_source

    src = make_source(data)
    table = getattr(src, "table", None)
    if table is None:  # any DataSource: stack its batches
        table = pa.Table.from_batches(list(src.batches()))
    ts = pc.cast(table.column("ts"), pa.int64())
    keep = pc.and_(pc.greater_equal(ts, start_ns), pc.less_equal(ts, end_ns))
    return table.filter(keep)


def bars_for_run(
    traded: Sequence[str], start_ns: int, end_ns: int, cfg: TradesysConfig | None, cfg_origin: str = ""
) -> tuple[BarData | None, str]:
    """The run's bars (see the module docstring), or None and the reason."""
    from tradesys.data.check import available_symbols

    if cfg is not None:
        data = cfg.data
        table = _source_table(data, start_ns, end_ns)
        if table.num_rows == 0:
            return None, f"the configured source {data.source} has no bars in the ledger's dates"
        closes, volumes = _wide(table)
        universe = list(data.symbols) if data.symbols else sorted(closes.columns)
        return BarData(closes, volumes, universe, f"bars: {data.source} from the run's configuration{cfg_origin}"), ""
    if not traded:
        return None, "no bar data: the ledger has no orders, so its symbols are unknown (pass the run's --config)"
    for source in ("sp500_stocks", "us_indices"):
        have = set(available_symbols(source) or [])
        if set(traded) <= have:
            data = DataConfig(source=source, symbols=list(traded), start=None, end=None)
            closes, volumes = _wide(_source_table(data, start_ns, end_ns))
            note = (f"bars: {source}, inferred from the ledger's symbols (no saved configuration); the benchmark "
                    f"holds the {len(traded)} traded symbols only")
            return BarData(closes, volumes, list(traded), note), ""
    shown = ", ".join(list(traded)[:8]) + (", ..." if len(traded) > 8 else "")
    return None, (f"no bar data: the symbols ({shown}) are not all in one packaged source and the run's "
                  "configuration is not saved (pass --config): no benchmark, slippage or gross exposure")


def load_tear_sheet(
    ref: RunRef,
    cfg: TradesysConfig | None = None,
    *,
    rolling_window: int = DEFAULT_ROLLING_WINDOW,
    participation: float = DEFAULT_PARTICIPATION,
    cfg_origin: str = "",
) -> TearSheet:
    """Read the run's ledger (no writes, no migration) and its bars, and compute the tear sheet.

    `cfg`: the run's configuration; None: the one saved in the run folder, else inferred (module docstring).
    """
    from tradesys.ledger import open_ledger

    ledger = open_ledger(ref.url)
    try:
        if ledger.schema_version() == 0:
            raise ValueError(f"RUN: {ref.name!r} is not a tradesys ledger (no schema)")
        curve, fills, orders = ledger.equity_curve(), ledger.fills(), ledger.orders()
        marks = {str(p["symbol"]): float(p["mark"]) for p in ledger.positions()}
    finally:
        ledger.close()
    if not curve:
        raise ValueError(f"RUN: the ledger of {ref.name!r} has no equity rows yet (no step booked)")
    if cfg is None:
        cfg, cfg_origin = saved_config(ref.folder)
    traded = sorted({str(o["symbol"]) for o in orders} | {str(f["symbol"]) for f in fills})
    ts = [int(r["ts_ns"]) for r in curve]
    bars, why = bars_for_run(traded, min(ts), max(ts), cfg, cfg_origin)
    return tear_sheet(
        curve, fills, orders,
        closes=None if bars is None else bars.closes,
        volumes=None if bars is None else bars.volumes,
        marks=marks,
        benchmark_symbols=None if bars is None else bars.universe,
        rolling_window=rolling_window,
        participation=participation,
        bars_note=bars.note if bars is not None else why,
    )


# --- charts -------------------------------------------------------------------------------------------------------


def _figure(rows: int = 1, height: float = 3.2) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    # fixed margins: a constrained layout measures every artist before drawing, which doubled the drawing time
    inches = height * rows
    fig = Figure(figsize=(10, inches), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.97, top=1 - 0.35 / inches, bottom=0.45 / inches, hspace=0.15)
    axes = fig.subplots(rows, 1, sharex=rows > 1, squeeze=False)[:, 0]
    return fig, axes


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render_pngs(sheet: TearSheet) -> dict[str, bytes]:
    """The five charts as PNG bytes, by name (PNG_NAMES)."""
    out: dict[str, bytes] = {}
    eq = sheet.equity
    bench = sheet.benchmark.get("label", "benchmark")

    fig, (a1, a2) = _figure(2)
    a1.plot(eq.index, eq["equity"], label="strategy", color="tab:blue")
    if "benchmark" in eq:
        a1.plot(eq.index, eq["benchmark"], label=bench, color="tab:gray", alpha=0.8)
    a1.set_ylabel("equity")
    a1.legend(loc="upper left")
    a1.set_title("Equity and drawdown")
    a2.fill_between(eq.index, eq["drawdown"] * 100, 0, color="tab:red", alpha=0.4, label="strategy")
    if "benchmark_drawdown" in eq:
        a2.plot(eq.index, eq["benchmark_drawdown"] * 100, color="tab:gray", label="benchmark")
    a2.set_ylabel("drawdown %")
    a2.legend(loc="lower left")
    out["equity"] = _png(fig)

    m = sheet.monthly
    months = m[[c for c in m.columns if c != "year"]] if len(m) else pd.DataFrame(columns=range(1, 13))
    fig, (ax,) = _figure(1, max(2.0, 0.45 * len(months) + 1.2))
    values = months.to_numpy(float) * 100 if len(months) else np.zeros((1, 12)) * np.nan
    lim = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    im = ax.imshow(values, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(months)), [str(y) for y in months.index])
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=8)
    ax.set_title("Monthly returns (%)")
    fig.colorbar(im, ax=ax)
    out["monthly"] = _png(fig)

    fig, (a1, a2) = _figure(2)
    a1.plot(sheet.rolling.index, sheet.rolling["sharpe"], color="tab:blue")
    a1.axhline(0, color="black", lw=0.5)
    a1.set_ylabel("Sharpe")
    a1.set_title(f"Rolling Sharpe and volatility ({sheet.rolling_window} steps, annualised)")
    a2.plot(sheet.rolling.index, sheet.rolling["volatility"] * 100, color="tab:orange")
    a2.set_ylabel("volatility %")
    out["rolling"] = _png(fig)

    fig, (a1, a2) = _figure(2)
    ex = sheet.exposure
    if ex["gross"].notna().any():
        a1.plot(ex.index, ex["gross"], label="gross", color="tab:purple")
    a1.plot(ex.index, ex["net"], label="net", color="tab:green")
    a1.axhline(0, color="black", lw=0.5)
    a1.set_ylabel("x equity")
    a1.legend(loc="upper left")
    a1.set_title("Exposure and turnover")
    a2.vlines(ex.index, 0, ex["turnover"] * 100, color="tab:brown", lw=1.0)  # one collection, not a bar per step
    a2.set_ylabel("turnover % of equity")
    out["exposure"] = _png(fig)

    ps = sheet.per_symbol.sort_values("total")
    fig, (ax,) = _figure(1, max(2.0, 0.3 * len(ps) + 1.2))
    y = np.arange(len(ps))
    ax.barh(y - 0.2, ps["realized"], height=0.4, label="realised", color="tab:blue")
    ax.barh(y + 0.2, ps["unrealized"], height=0.4, label="unrealised", color="tab:orange")
    ax.scatter(ps["total"], y, color="black", zorder=3, label="total, net of fees")
    ax.set_yticks(y, list(ps.index))
    ax.axvline(0, color="black", lw=0.5)
    ax.legend(loc="lower right")
    ax.set_title("P&L by symbol")
    out["pnl_by_symbol"] = _png(fig)
    return out


# --- HTML ---------------------------------------------------------------------------------------------------------

_LABELS = {
    "total_return": ("Total return", "pct"), "annual_return": ("Annual return", "pct"),
    "annual_volatility": ("Annual volatility", "pct"), "sharpe": ("Sharpe", "num"), "sortino": ("Sortino", "num"),
    "calmar": ("Calmar", "num"), "max_drawdown": ("Max drawdown", "pct"),
    "max_drawdown_duration_days": ("Max drawdown duration (days)", "int"),
    "max_drawdown_recovered": ("Max drawdown recovered", "str"),
    "longest_drawdown_days": ("Longest drawdown (days)", "int"), "trades": ("Closed trades", "int"),
    "hit_rate": ("Hit rate", "pct"), "profit_factor": ("Profit factor", "num"), "avg_win": ("Average win", "money"),
    "avg_loss": ("Average loss", "money"), "win_loss_ratio": ("Win/loss ratio", "num"),
    "avg_holding_days": ("Average holding (days)", "num"), "fees": ("Fees paid", "money"),
    "slippage": ("Slippage vs decision close", "money"), "turnover_annual": ("Turnover (x equity / year)", "num"),
    "avg_gross_exposure": ("Average gross exposure", "pct"), "avg_net_exposure": ("Average net exposure", "pct"),
    "time_in_market": ("Time in market", "pct"), "capacity": ("Capacity estimate (equity)", "money"),
    "alpha": ("Alpha (annual, vs benchmark)", "pct"), "beta": ("Beta (vs benchmark)", "num"),
    "initial_cash": ("Initial cash", "money"), "final_equity": ("Final equity", "money"),
    "start": ("Start", "str"), "end": ("End", "str"), "steps": ("Steps", "int"),
}


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value) and not np.isinf(value)):
        return "n/a"
    if isinstance(value, float) and np.isinf(value):
        return "inf"
    if kind == "pct":
        return f"{float(value) * 100:,.2f}%"
    if kind == "money":
        return f"{float(value):,.2f}"
    if kind == "num":
        return f"{float(value):,.3f}"
    if kind == "int":
        return f"{float(value):,.0f}"
    return html.escape(str(value))


def _kv_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='kv'>{body}</table>"


def _frame_table(df: pd.DataFrame, fmt: dict[str, str], index_name: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [index_name, *df.columns])
    rows = []
    for idx, row in df.iterrows():
        cells = "".join(f"<td>{_fmt(row[c], fmt.get(str(c), 'num'))}</td>" for c in df.columns)
        rows.append(f"<tr><th>{html.escape(str(idx))}</th>{cells}</tr>")
    return f"<table class='grid'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


MAX_HTML_TRADES = 500

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:right;font-size:13px}th{text-align:left;font-weight:600}img{max-width:100%;display:block;margin:1em 0}
.note{color:#555;font-size:13px}.kv td{min-width:9em}"""


def render_html(sheet: TearSheet, pngs: dict[str, bytes], title: str) -> str:
    """One self-contained page: no external script, style sheet or image (charts as data: URIs)."""
    s = sheet.stats
    stats_rows = [(label, _fmt(s.get(key), kind)) for key, (label, kind) in _LABELS.items() if key in s]
    b = sheet.benchmark
    if b.get("available"):
        bs = b["stats"]
        bench = _kv_table([
            ("Benchmark", html.escape(b["label"] + ": " + ", ".join(b["symbols"]))),
            ("Total return", _fmt(bs["total_return"], "pct")), ("Annual return", _fmt(bs["annual_return"], "pct")),
            ("Annual volatility", _fmt(bs["annual_volatility"], "pct")), ("Sharpe", _fmt(bs["sharpe"], "num")),
            ("Max drawdown", _fmt(bs["max_drawdown"], "pct")),
            ("Strategy minus benchmark, total return", _fmt(b["excess_total_return"], "pct")),
        ])
    else:
        bench = f"<p class='note'>No benchmark: {html.escape(str(b.get('reason', '')))}</p>"
    c = sheet.costs
    costs = _kv_table([
        ("Fees", _fmt(c["fees"], "money")), ("Slippage vs decision close", _fmt(c["slippage"], "money")),
        ("Total costs", _fmt(c["total"], "money")), ("Traded notional", _fmt(c["traded_notional"], "money")),
        ("Costs, bps of notional", _fmt(c["cost_bps_of_notional"], "num")),
    ])
    cap = sheet.capacity
    capacity = _kv_table([
        ("Participation of bar volume", _fmt(cap["participation"], "pct")),
        ("Equity at which the largest fill hits it", _fmt(cap["capacity"], "money")),
        ("... the 95th-percentile fill", _fmt(cap["capacity_p95"], "money")),
        ("Fills with a known bar volume", _fmt(cap["fills_with_volume"], "int")),
    ]) + (f"<p class='note'>{html.escape(cap['reason'])}</p>" if cap.get("reason") else "")
    monthly = sheet.monthly.copy()
    monthly.columns = [str(x) for x in monthly.columns]
    trades = sheet.trades.head(MAX_HTML_TRADES).copy()
    for col in ("entry_ts_ns", "exit_ts_ns"):
        trades[col] = pd.to_datetime(trades[col], utc=True).dt.strftime("%Y-%m-%d %H:%M")
    trades = trades.rename(columns={"entry_ts_ns": "entry", "exit_ts_ns": "exit"})
    trade_fmt = {"symbol": "str", "direction": "str", "entry": "str", "exit": "str", "qty": "int",
                 "entry_price": "money", "exit_price": "money", "gross_pnl": "money", "fees": "money",
                 "pnl": "money", "return": "pct"}
    more = (f"<p class='note'>First {MAX_HTML_TRADES} of {len(sheet.trades)} trades; all are in trades.csv.</p>"
            if len(sheet.trades) > MAX_HTML_TRADES else "")
    imgs = {k: f"<img alt='{k}' src='data:image/png;base64,{base64.b64encode(v).decode()}'>" for k, v in pngs.items()}
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in sheet.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body><h1>{html.escape(title)}</h1>
<ul class="note">{notes}</ul>
<h2>Statistics</h2>{_kv_table(stats_rows)}
<h2>Equity and drawdown</h2>{bench}{imgs.get("equity", "")}
<h2>Monthly returns</h2>{imgs.get("monthly", "")}{_frame_table(monthly, {}, "year").replace("n/a", "")}
<h2>Rolling Sharpe and volatility</h2>{imgs.get("rolling", "")}
<h2>Exposure and turnover</h2>{imgs.get("exposure", "")}
<h2>P&amp;L by symbol</h2>{imgs.get("pnl_by_symbol", "")}
{_frame_table(sheet.per_symbol, {"qty": "int", "mark": "money", "realized": "money", "unrealized": "money",
                                 "fees": "money", "total": "money"}, "symbol")}
<h2>Costs</h2>{costs}
<h2>Capacity</h2>{capacity}
<h2>Trades (closed, FIFO)</h2>{more}{_frame_table(trades.set_index("symbol"), trade_fmt, "symbol")}
</body></html>
"""


def write_report(sheet: TearSheet, out_dir: Path, title: str) -> dict[str, Path]:
    """report.html, the PNGs, stats.json and trades.csv in `out_dir` (created); returns the paths by name."""
    from tradesys.core.jsonsafe import dumps

    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = render_pngs(sheet)
    paths: dict[str, Path] = {}
    for name, data in pngs.items():
        p = out_dir / f"{name}.png"
        p.write_bytes(data)
        paths[name] = p
    paths["html"] = out_dir / "report.html"
    paths["html"].write_text(render_html(sheet, pngs, title), encoding="utf-8")
    paths["stats"] = out_dir / "stats.json"
    paths["stats"].write_text(dumps(sheet.to_dict()) + "\n")
    paths["trades"] = out_dir / "trades.csv"
    sheet.trades.to_csv(paths["trades"], index=False)
    return paths
