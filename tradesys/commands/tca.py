"""`tradesys tca RUN`: transaction cost analysis of a run's ledger, per parent order and in total.

RUN is what `tradesys report` takes (a ledger URL, a ledger file, a run folder or a run id under the runs folders);
the bars for the benchmarks come from `--config`/`--set`, else the configuration saved in the run folder, else the
packaged source that has every traded symbol (`tradesys.backtest.report.bars_for_run`). The numbers come from the
pure `tradesys.execution.tca`; this module reads the run, draws the plot and prints. `load_tca` is shared with the
HTTP route `GET /v1/tca` (`tradesys.serve.tca`).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from tradesys.backtest.report import RunRef
    from tradesys.config import TradesysConfig
    from tradesys.execution.tca import TcaReport

PNG_NAME = "tca.png"
JSON_NAME = "tca.json"
MAX_TABLE_ROWS = 50


def _parents_version() -> int:
    """The ledger schema version that added the parent_orders table (0: this tree has none); an older ledger is
    read without migrating it, so its orders are their own parents."""
    from tradesys.ledger.migrations import MIGRATIONS

    return next((m.version for m in MIGRATIONS if any("CREATE TABLE parent_orders" in st for st in m.statements)),
                0)


def load_tca(ref: RunRef, cfg: TradesysConfig | None = None, cfg_origin: str = "") -> TcaReport:
    """Read the run's ledger (no writes, no migration) and its bars, and compute the TCA report.

    Parent rows come from `Ledger.parent_orders()` where the ledger has them; ValueError("RUN: ...") for a ledger
    that is not tradesys's, has no orders, or whose bars cannot be found.
    """
    from tradesys.backtest.report import bars_for_run, saved_config
    from tradesys.execution.tca import tca_from_ledger
    from tradesys.ledger import open_ledger

    ledger = open_ledger(ref.url)
    try:
        if ledger.schema_version() == 0:
            raise ValueError(f"RUN: {ref.name!r} is not a tradesys ledger (no schema)")
        orders, fills = ledger.orders(), ledger.fills()
        since = _parents_version()
        reader = getattr(ledger, "parent_orders", None)
        parents = list(reader()) if callable(reader) and since and ledger.schema_version() >= since else []
    finally:
        ledger.close()
    if not orders and not parents:
        raise ValueError(f"RUN: the ledger of {ref.name!r} has no orders: nothing to analyse")
    if cfg is None:
        cfg, cfg_origin = saved_config(ref.folder)
    traded = sorted({str(o["symbol"]) for o in orders} | {str(p["symbol"]) for p in parents})
    stamps = [int(o["ts_ns"]) for o in orders] + [int(f["ts_ns"]) for f in fills]
    stamps += [int(p.get(k) or 0) for p in parents for k in ("ts_ns", "start_ns", "end_ns") if p.get(k)]
    stamps += [int(o.get("updated_ts_ns") or 0) for o in orders if o.get("updated_ts_ns")]
    bars, why = bars_for_run(traded, min(stamps), max(stamps), cfg, cfg_origin)
    if bars is None:
        raise ValueError(f"RUN: TCA needs the run's bars for its benchmarks: {why}")
    report = tca_from_ledger(orders, fills, bars.closes, bars.volumes, parents)
    report.notes.insert(0, bars.note.split("; the benchmark")[0])  # the tear sheet's benchmark is not TCA's
    return report


def render_png(report: TcaReport, title: str) -> bytes:
    """Two panels: the total shortfall split into its parts (bps), and each parent's arrival shortfall (bps)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from tradesys.execution.tca import COST_PARTS

    fig = Figure(figsize=(10, 6.4), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.93, bottom=0.08, hspace=0.45)
    a1, a2 = fig.subplots(2, 1)
    bps = report.total["bps"]
    labels = [*COST_PARTS, "total"]
    values = [float(bps[k]) for k in COST_PARTS] + [float(bps["shortfall_decision"])]
    bottoms, run = [], 0.0
    for v in values[:-1]:  # a waterfall: each part starts where the previous ended; the total from zero
        bottoms.append(run if v >= 0 else run + v)
        run += v
    bottoms.append(min(0.0, values[-1]))
    colors = ["tab:red" if v > 0 else "tab:green" for v in values[:-1]] + ["tab:blue"]
    a1.bar(labels, np.abs(values), bottom=bottoms, color=colors)
    a1.axhline(0, color="black", lw=0.5)
    a1.margins(y=0.1)
    a1.set_ylabel("bps of decision notional")
    a1.set_title(f"{title}: implementation shortfall vs decision price, by part (cost > 0)")
    per = np.array([p.bps["shortfall_arrival"] for p in report.parents], dtype=float)
    per = per[np.isfinite(per)]
    if per.size:
        spread = float(per.max() - per.min())
        a2.hist(per, bins=min(40, max(5, per.size // 3)) if spread >= 1.0 else 1, color="tab:gray")
        a2.axvline(float(np.mean(per)), color="tab:blue", lw=1, label=f"mean {np.mean(per):.2f} bps")
        a2.legend(loc="upper right")
        mid = 0.5 * float(per.min() + per.max())
        if float(per.max() - per.min()) < 1.0:  # all alike: a 2 bps wide axis, not one of rounding noise
            a2.set_xlim(mid - 1.0, mid + 1.0)
    a2.set_xlabel("shortfall vs arrival price (bps), per parent order")
    a2.set_ylabel("parents")
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _fmt(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None or v != v else f"{round(float(v), digits) + 0.0:,.{digits}f}"  # no "-0.00"


def tca(
    run: Annotated[str, typer.Argument(metavar="RUN", help="ledger URL, ledger file, run folder or run id")],
    out: Annotated[Path | None, typer.Option("--out", help="folder for tca.png and tca.json (default: the run "
                                                          "folder; ./ for a PostgreSQL ledger)")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print the analysis as JSON on stdout")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="the run's TOML config (for its bars)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override: section.field=value")] = None,
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="folder of run folders, for a run id")] = None,
) -> None:
    """Transaction cost analysis per parent order: shortfall vs decision and arrival, VWAP slippage, and the
    Perold split into delay, impact, timing, fees and opportunity; writes tca.png and tca.json."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from tradesys.backtest.report import resolve_run
    from tradesys.commands.output import dumps, write_json
    from tradesys.commands.report import run_config, run_errors, runs_dirs
    from tradesys.execution.tca import COST_PARTS

    cfg = run_config(config, set_)
    dirs = runs_dirs(runs_dir)
    shown = Console(stderr=True) if json_ else Console()
    with run_errors(out):
        ref = resolve_run(run, dirs, field="RUN")
        report = load_tca(ref, cfg, " (--config/--set)" if cfg is not None else "")
        folder = out if out is not None else (ref.folder if ref.folder else Path("."))
        folder.mkdir(parents=True, exist_ok=True)
        png = folder / PNG_NAME
        png.write_bytes(render_png(report, f"run {ref.name}"))
        result = {"run": ref.name, **report.to_dict(), "files": {"png": str(png), "json": str(folder / JSON_NAME)}}
        write_json(folder / JSON_NAME, result)

    if json_:
        typer.echo(dumps(result))
        return
    cols = ("shortfall_decision", *COST_PARTS, "shortfall_arrival", "vwap_slippage")
    heads = ("IS decision", "delay", "impact", "timing", "fees", "opport.", "IS arrival", "vs VWAP")
    table = Table(title=f"transaction costs: {ref.name} (bps; currency in the total rows)", box=box.SIMPLE_HEAD)
    # a parent is named by its symbol and the start of its window (ids are long; the JSON has them)
    for h in ("started (UTC)", "symbol", "side", "qty", "filled", "avg px"):
        table.add_column(h, justify="left" if h in ("started (UTC)", "symbol", "side") else "right")
    for h in heads:
        table.add_column(h, justify="right")
    for p in report.parents[:MAX_TABLE_ROWS]:
        table.add_row(_started(p.start_ns), p.symbol, p.side, _fmt(p.qty, 0), _fmt(p.filled_qty, 0),
                      _fmt(p.avg_price), *(_fmt(p.bps[c]) for c in cols))
    t = report.total
    table.add_section()
    table.add_row("total (bps)", "", "", _fmt(t["qty"], 0), _fmt(t["filled_qty"], 0), "",
                  *(_fmt(t["bps"][c]) for c in cols), style="bold")
    table.add_row("total (currency)", "", "", "", "", "", *(_fmt(t[c]) for c in cols), style="bold")
    shown.print(table)
    if len(report.parents) > MAX_TABLE_ROWS:
        shown.print(f"[dim]first {MAX_TABLE_ROWS} of {len(report.parents)} parents; all are in "
                    f"{result['files']['json']}[/dim]", highlight=False)
    for note in report.notes:
        shown.print(f"[dim]{note}[/dim]", highlight=False)
    shown.print(f"Plot written to {result['files']['png']}", highlight=False, soft_wrap=True)


def _started(start_ns: int) -> str:
    """The start of a parent's window as UTC minutes ("-" for a parent never sliced)."""
    if start_ns <= 0:
        return "-"
    return datetime.fromtimestamp(start_ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M")
