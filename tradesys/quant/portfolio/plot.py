"""PNG of the efficient frontier: the curve, the individual assets, the min-variance and max-Sharpe portfolios.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend change), so it is safe inside
servers and workers. The only I/O is writing the PNG to the path it is given.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tradesys.quant.portfolio.optimize import validate_cov, validate_mu


def asset_points(mu: Any, cov: Any) -> pd.DataFrame:
    """Expected return and volatility of each asset on its own, for the scatter behind the frontier."""
    sigma, names = validate_cov(cov)
    m = validate_mu(mu, names)
    return pd.DataFrame({"expected_return": m, "volatility": np.sqrt(np.diag(sigma))}, index=names)


def plot_efficient_frontier(
    frontier: pd.DataFrame,
    path: str | Path,
    assets: pd.DataFrame | tuple[Any, Any] | None = None,
    *,
    title: str = "Efficient frontier",
    capital_market_line: bool = True,
    dpi: int = 120,
) -> Path:
    """Draw `efficient_frontier(...)`'s table to a PNG at `path` and return the path.

    assets: a DataFrame with expected_return and volatility columns (index = asset names), or a (mu, cov) pair.
    The y axis is net return (after transaction costs), the x axis volatility, both in the table's units.
    """
    needed = {"point", "net_return", "volatility"}
    if not isinstance(frontier, pd.DataFrame) or not needed <= set(frontier.columns):
        raise ValueError(f"frontier: a table from efficient_frontier with columns {sorted(needed)}")
    if frontier.empty:
        raise ValueError("frontier: is empty")
    pts = frontier.sort_values("volatility")
    fig = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(pts["volatility"], pts["net_return"], "-", color="tab:blue", lw=2, label="efficient frontier")

    if assets is not None:
        table = asset_points(*assets) if isinstance(assets, tuple) else assets
        if not {"expected_return", "volatility"} <= set(table.columns):
            raise ValueError("assets: needs expected_return and volatility columns (or pass (mu, cov))")
        ax.scatter(table["volatility"], table["expected_return"], s=18, color="0.45", zorder=3, label="assets")
        for name, row in table.iterrows():
            ax.annotate(
                str(name),
                (row["volatility"], row["expected_return"]),
                fontsize=7,
                xytext=(3, 2),
                textcoords="offset points",
                color="0.3",
            )

    mv = pts[pts["point"] == "min_variance"]
    if not mv.empty:
        ax.scatter(
            mv["volatility"],
            mv["net_return"],
            marker="D",
            s=60,
            color="tab:green",
            zorder=4,
            label=f"min variance (vol {mv['volatility'].iloc[0]:.3f})",
        )
    ms = pts[pts["point"] == "max_sharpe"]
    if not ms.empty:
        sharpe = float(ms["sharpe"].iloc[0]) if "sharpe" in ms else float("nan")
        ax.scatter(
            ms["volatility"],
            ms["net_return"],
            marker="*",
            s=160,
            color="tab:red",
            zorder=4,
            label=f"max Sharpe ({sharpe:.2f})",
        )
        rf = float(frontier.attrs.get("risk_free_rate", 0.0))
        if capital_market_line and math.isfinite(sharpe):
            x_max = float(pts["volatility"].max()) * 1.05
            ax.plot(
                [0.0, x_max],
                [rf, rf + sharpe * x_max],
                "--",
                color="tab:red",
                lw=1,
                alpha=0.6,
                label="capital market line",
            )
    ax.set_xlabel("volatility")
    ax.set_ylabel("expected return (net of costs)")
    ax.set_title(title)
    ax.set_xlim(left=0.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png", dpi=dpi)
    return out
