"""PNG plot of a VaR backtest: realised P&L, the -VaR forecast line and the exceptions marked.

Drawn on a bare matplotlib ``Figure`` with the Agg canvas (no pyplot global state, no display needed); the only
I/O is the PNG written to the path the caller gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tradesys.quant.risk.backtest import VarBacktestReport

__all__ = ["plot_var_backtest"]


def plot_var_backtest(report: VarBacktestReport, path: str | Path, *, title: str | None = None, dpi: int = 120) -> Path:
    """Save the backtest chart as a PNG at ``path`` and return the path.

    Realised P&L (grey), -VaR and -ES forecasts (lines; losses are drawn below zero), exceptions (red markers,
    days with loss > VaR), and the test summary (exceptions vs expected, Kupiec and Christoffersen p-values,
    Basel zone) in the title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    f = report.frame
    out = Path(path)
    fig = Figure(figsize=(11, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x: Any = f.index
    ax.plot(x, f["pnl"], color="0.55", lw=0.6, label="realised P&L")
    ax.plot(x, -f["var"], color="tab:blue", lw=1.1, label=f"-VaR {report.alpha:.3g}")
    ax.plot(x, -f["es"], color="tab:purple", lw=0.8, ls="--", label=f"-ES {report.alpha:.3g}")
    exc = f[f["exception"]]
    ax.scatter(exc.index, exc["pnl"], color="tab:red", s=14, zorder=3, label=f"exceptions ({len(exc)})")
    ax.axhline(0.0, color="0.8", lw=0.5)
    ax.set_ylabel("P&L")
    ax.legend(loc="lower left", fontsize=8, ncols=4)
    tl = report.traffic_light
    summary = (
        f"{report.method}, window {report.window}: {report.n_exceptions} exceptions in {report.n_obs} days "
        f"(expected {report.n_obs * (1 - report.alpha):.1f}); Kupiec p={report.kupiec.p_value:.3g}, "
        f"independence p={report.independence.p_value:.3g}, CC p={report.conditional_coverage.p_value:.3g}; "
        f"Basel {tl.zone} ({tl.n_exceptions} in last {tl.n_obs})"
    )
    ax.set_title((title + "\n" if title else "") + summary, fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=dpi)
    return out
