"""Refit GARCH-family volatility models for many symbols in parallel, one Ray task per symbol.

    python jobs/garch_refit.py --model gjr --dist t --out garch.csv
    ray job submit --working-dir . -- python jobs/garch_refit.py --horizon 10

Symbols: skfolio's 20 S&P 500 stocks (daily adjusted closes, 1990-2022) plus the S&P 500 and NASDAQ composite
indices from `arch.data` (1999-2018); returns are 100 x pct_change (percent), the scale arch is tuned for. The
fits themselves are `tradesys.quant.risk.garch.fit_vol_model`, so a parallel refit returns exactly what a serial
`refit_many` does. Inside a Ray job RAY_ADDRESS points at the cluster; otherwise a local Ray is started.
The table is printed (and written as CSV, or JSON if the path ends in .json, with --out).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from tradesys.quant.risk.garch import DISTS, MEANS, MODELS, VolFit, fit_one_symbol


@ray.remote(num_cpus=1)
def _fit_task(symbol: str, returns: pd.Series, kw: dict[str, Any]) -> VolFit:
    return fit_one_symbol(symbol, returns, **kw)


def refit_parallel(returns_by_symbol: Mapping[str, pd.Series], **kw: Any) -> dict[str, VolFit]:
    """`refit_many` on Ray: one task per symbol on an already initialised Ray (ray.init() first, or inside a job).

    Keyword arguments go to `fit_vol_model`. Results come back in the input's symbol order; a symbol whose fit
    fails gets a failed `VolFit` (``ok == False``) with the reason, as in the serial version.
    """
    if not ray.is_initialized():
        raise RuntimeError("refit_parallel: Ray is not initialised; call ray.init() first")
    refs = {sym: _fit_task.remote(sym, series, dict(kw)) for sym, series in returns_by_symbol.items()}
    fits = ray.get(list(refs.values()))
    return dict(zip(refs.keys(), fits, strict=True))


def load_default_returns() -> dict[str, pd.Series]:
    """Percent daily returns: skfolio's 20 S&P 500 stocks and arch's S&P 500 / NASDAQ indices."""
    from arch.data import nasdaq, sp500
    from skfolio.datasets import load_sp500_dataset

    out: dict[str, pd.Series] = {}
    prices = load_sp500_dataset()
    for sym in prices.columns:
        out[str(sym)] = (100.0 * prices[sym].dropna().pct_change()).dropna().rename(str(sym))
    for name, mod in (("SP500", sp500), ("NASDAQ", nasdaq)):
        out[name] = (100.0 * mod.load()["Adj Close"].pct_change()).dropna().rename(name)
    return out


def summary_table(fits: Mapping[str, VolFit], horizon: int = 10) -> pd.DataFrame:
    """One row per symbol: parameters, log-likelihood, persistence and the `horizon`-day vol forecast (annualised)."""
    rows = []
    for sym, fit in fits.items():
        row: dict[str, Any] = {"symbol": sym, "ok": fit.ok, "nobs": fit.nobs, "loglik": fit.loglik}
        row.update({k: float(v) for k, v in fit.params.items()})
        row["persistence"] = fit.persistence
        if fit.ok:
            fc = fit.forecast(horizon)
            row[f"vol_{horizon}d_ann"] = fc.annualised_vol
        else:
            row[f"vol_{horizon}d_ann"] = math.nan
        row["reason"] = fit.reason or ""
        rows.append(row)
    return pd.DataFrame(rows).set_index("symbol")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=MODELS, default="garch")
    ap.add_argument("--dist", choices=DISTS, default="normal")
    ap.add_argument("--mean", choices=MEANS, default="constant")
    ap.add_argument("--horizon", type=int, default=10, help="forecast horizon in trading days")
    ap.add_argument("--symbols", default="", help="comma-separated subset (default: all 22)")
    ap.add_argument("--out", type=Path, default=None, help="write the table here (.csv or .json)")
    args = ap.parse_args(argv)

    data = load_default_returns()
    if args.symbols:
        wanted = [s.strip() for s in args.symbols.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(data))
        if unknown:
            print(f"symbols: unknown {unknown}; choose from {sorted(data)}", file=sys.stderr)
            return 2
        data = {s: data[s] for s in wanted}
    if not ray.is_initialized():
        # inside `ray job submit` RAY_ADDRESS names the cluster; otherwise start a local Ray
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False)
    fits = refit_parallel(data, model=args.model, dist=args.dist, mean=args.mean)
    table = summary_table(fits, args.horizon)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(table)
    if args.out is not None:
        if args.out.suffix == ".json":
            args.out.write_text(json.dumps({s: f.to_dict() for s, f in fits.items()}, indent=1))
        else:
            table.to_csv(args.out)
    return 0 if all(f.ok for f in fits.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
