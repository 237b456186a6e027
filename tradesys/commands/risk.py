"""`tradesys risk ...`: VaR, VaR backtests, GARCH, stress tests, optimisation, attribution and regimes on real data.

Data come from the sets shipped in installed packages (`tradesys.data.returns`: sp500, nasdaq, stocks,
sp500_index, ff) or a CSV of prices. Every command prints a summary, `--json` prints the full result, and the
commands with a picture take `--plot file.png`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="Risk and allocation on real data: VaR, backtests, GARCH, stress, ...")
console = Console()

DATA_DEFAULT = "stocks"
"""The one default data set of every `risk` command, so `--symbols AAPL,JPM` means the same stocks in each."""
Data = Annotated[str, typer.Option(help="stocks (20 S&P 500 stocks, 1990-2022), sp500, nasdaq, sp500_index, or a "
                                        "CSV of prices")]
Symbols = Annotated[str | None, typer.Option(help="comma-separated columns to keep")]
Start = Annotated[str | None, typer.Option(help="first date (YYYY-MM-DD)")]
End = Annotated[str | None, typer.Option(help="last date (YYYY-MM-DD)")]
Json = Annotated[bool, typer.Option("--json", help="print the full result as JSON")]
Plot = Annotated[Path | None, typer.Option("--plot", help="write a PNG chart here")]


# library errors start with the parameter's name; the user typed a flag
FLAGS = {"data": "--data", "symbols": "--symbols", "start": "--start", "end": "--end", "method": "--method",
         "alpha": "--alpha", "window": "--window", "weights": "--weights", "horizon": "--horizon", "book": "--book",
         "historical": "--historical", "hypothetical": "--hypothetical", "reverse": "--reverse-loss",
         "objective": "--objective", "model": "--model", "dist": "--dist", "states": "--states", "upper": "--upper",
         "target": "--target", "value": "--value"}


def _one_line(exc: Exception) -> str:
    """`field: reason` with the field as its flag; a pydantic error becomes `loc: msg; loc: msg` on one line."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        parts = []
        for e in exc.errors():
            loc = [str(p) for p in e["loc"]]
            head = FLAGS.get(loc[0], loc[0]) if loc else "input"
            parts.append(f"{head}{': ' + '.'.join(loc[1:]) if loc[1:] else ''}: {e['msg']}")
        text = "; ".join(dict.fromkeys(parts))
    else:
        text = str(exc)
        field, sep, rest = text.partition(": ")
        if sep and field in FLAGS:
            text = f"{FLAGS[field]}: {rest}"
    return " ".join(text.split())


def _run(fn: Callable[[], Any]) -> Any:
    """Library ValueErrors ('field: reason') become one line naming the flag, exit code 2, never a traceback."""
    try:
        with console.status("working..."):
            return fn()
    except ValueError as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(2) from None


def _returns(data: str, symbols: str | None, start: str | None, end: str | None) -> Any:
    from tradesys.data.returns import load_returns

    names = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    return load_returns(data, names, start=start, end=end)


def _table(title: str, rows: list[tuple[str, Any]]) -> Table:
    t = Table(title=title, show_header=False)
    t.add_column("", style="bold")
    t.add_column("", justify="right")
    for k, v in rows:
        t.add_row(k, f"{v:,.6g}" if isinstance(v, float) else str(v))
    return t


def _emit_json(obj: Any) -> None:
    """Strict JSON on stdout: NaN/inf become null (the shared `--json` contract)."""
    from tradesys.commands.output import dumps

    typer.echo(dumps(obj))


@app.command()
def var(
    data: Data = DATA_DEFAULT,
    symbols: Symbols = None,
    start: Start = None,
    end: End = None,
    weights: Annotated[str | None, typer.Option(help="comma-separated weights (default: equal)")] = None,
    value: Annotated[float, typer.Option(help="portfolio value")] = 1_000_000.0,
    method: Annotated[str, typer.Option(help="historical, age_weighted, evt, fhs, normal, student_t, "
                                        "cornish_fisher, ewma, mc_normal, mc_t")] = "historical",
    alpha: float = 0.99,
    horizon: Annotated[int, typer.Option(help="days")] = 1,
    as_json: Json = False,
) -> None:
    """VaR and expected shortfall of a portfolio of real assets."""
    from tradesys.quant.risk.var import estimate_var

    def go() -> Any:
        r = _returns(data, symbols, start, end)
        w = (np.array([float(x) for x in weights.split(",")]) if weights else np.full(r.shape[1], 1.0 / r.shape[1]))
        return r, estimate_var(r, w, alpha=alpha, horizon_days=horizon, method=method, value=value)

    r, est = _run(go)
    if as_json:
        _emit_json(est.to_dict())
        return
    console.print(_table(f"{method} VaR, {len(r.columns)} assets, {r.index[0].date()}..{r.index[-1].date()}", [
        (f"VaR {alpha:.1%} {horizon}d", est.var), (f"ES {alpha:.1%} {horizon}d", est.es),
        ("VaR / value", f"{est.var / value:.3%}"), ("observations", est.n_obs)]))


@app.command()
def backtest(
    data: Data = DATA_DEFAULT,
    symbols: Symbols = None,
    start: Start = None,
    end: End = None,
    method: str = "historical",
    alpha: float = 0.99,
    window: Annotated[int, typer.Option(help="estimation window, days")] = 500,
    plot: Plot = None,
    as_json: Json = False,
) -> None:
    """Rolling one-day VaR backtest: Kupiec, Christoffersen, Basel traffic light (and a PNG of the exceptions)."""
    from tradesys.quant.risk.backtest import rolling_var_backtest

    def go() -> Any:
        r = _returns(data, symbols, start, end)
        w = np.full(r.shape[1], 1.0 / r.shape[1])
        return rolling_var_backtest(r, w if r.shape[1] > 1 else None, method=method, alpha=alpha, window=window)

    report = _run(go)
    s = report.summary()
    if plot is not None:
        from tradesys.quant.risk.plot import plot_var_backtest

        plot_var_backtest(report, plot)
    if as_json:
        _emit_json(s)
        return
    console.print(_table(f"VaR backtest: {method} {alpha:.1%}, window {window}, {s['start'][:10]}..{s['end'][:10]}", [
        ("days", s["n_obs"]), ("exceptions", s["n_exceptions"]), ("expected", s["expected_exceptions"]),
        ("Kupiec LR (p)", f"{s['kupiec']['statistic']:.4f} ({s['kupiec']['p_value']:.4f})"),
        ("Christoffersen ind. LR (p)", f"{s['independence']['statistic']:.4f} ({s['independence']['p_value']:.4f})"),
        ("conditional coverage LR (p)",
         f"{s['conditional_coverage']['statistic']:.4f} ({s['conditional_coverage']['p_value']:.4f})"),
        ("Basel zone (last 250 days)", s["traffic_light"]["zone"])]))
    if plot is not None:
        console.print(f"chart: {plot}")


@app.command()
def garch(
    data: Data = DATA_DEFAULT,
    symbols: Symbols = None,
    start: Start = None,
    end: End = None,
    model: Annotated[str, typer.Option(help="garch, gjr or egarch")] = "garch",
    dist: Annotated[str, typer.Option(help="normal or t")] = "normal",
    horizon: int = 10,
    as_json: Json = False,
) -> None:
    """Fit a GARCH-family model (via arch) to each column and forecast its volatility."""
    from tradesys.quant.risk.garch import refit_many

    def go() -> Any:
        r = _returns(data, symbols, start, end)
        fits = refit_many({str(c): r[c] for c in r.columns}, model=model, dist=dist)
        return {k: (f, f.forecast(horizon) if f.ok else None) for k, f in fits.items()}

    out = _run(go)
    if as_json:
        _emit_json({k: {**f.to_dict(), "forecast": None if fc is None else {
            "horizon_vol": fc.horizon_vol, "annualised_vol": fc.annualised_vol}} for k, (f, fc) in out.items()})
        return
    t = Table(title=f"{model} ({dist}) fits, {horizon}-day forecast")
    for col in ("symbol", "omega", "alpha", "beta", "persistence", "loglik", f"ann. vol {horizon}d"):
        t.add_column(col, justify="right")
    for k, (f, fc) in out.items():
        p = f.params
        t.add_row(k, *(f"{p.get(n, float('nan')):.4g}" for n in ("omega", "alpha[1]", "beta[1]")),
                  f"{f.persistence:.4f}", f"{f.loglik:,.1f}", "-" if fc is None else f"{fc.annualised_vol:.2%}")
    console.print(t)


@app.command()
def stress(
    book: Annotated[Path, typer.Option(help="JSON: {linear: [...], options: [...], spots, rate, dividend_yields}")],
    historical: Annotated[str, typer.Option(help="scenario names, comma-separated, or all")] = "all",
    hypothetical: Annotated[str, typer.Option(help="shock names, comma-separated, or all")] = "all",
    reverse_loss: Annotated[float | None, typer.Option(help="also find the smallest move losing this much")] = None,
    as_json: Json = False,
) -> None:
    """Stress a book of stocks and options: historical windows, hypothetical factor shocks, reverse stress."""
    from tradesys.serve.risk import StressRequest, _stress

    def go() -> Any:
        try:
            spec = json.loads(book.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"book: cannot read {book} ({exc})") from None
        body: dict[str, Any] = {"book": spec}
        for key, text in (("historical", historical), ("hypothetical", hypothetical)):
            names = "all" if text.strip() == "all" else [s.strip() for s in text.split(",") if s.strip()]
            if names:  # an empty flag means none of that kind
                body[key] = names
        if reverse_loss is not None:
            body["reverse"] = {"loss": reverse_loss}
        if len(body) == 1:
            raise ValueError("historical: give at least one of --historical, --hypothetical or --reverse-loss")
        req = StressRequest.model_validate(body)
        try:
            return _stress(req)
        except ValueError as exc:  # errors about the book's contents name its field: put them under --book
            head = str(exc).partition(":")[0].split("[")[0].split(".")[0]
            if head in FLAGS:
                raise
            raise ValueError(f"book: {exc}") from None

    out = _run(go)
    proxied = default_beta_symbols(out["results"])
    if as_json:
        _emit_json({**out, "default_beta_symbols": proxied})
        return
    t = Table(title="stress results")
    for col in ("scenario", "kind", "P&L", "note"):
        t.add_column(col, justify="right")
    for r in out["results"]:
        d = r.get("details") or {}
        note = d.get("frequency", "") if r["kind"] == "historical" else ""
        if r["kind"] == "reverse":
            note = "breach found" if d.get("found") else "no shock in range loses that much (worst shown)"
        t.add_row(r["name"], r["kind"], f"{r['pnl']:,.2f}", note)
    console.print(t)
    if proxied:
        console.print(f"[yellow]proxied:[/yellow] no price history for {', '.join(proxied)}: the historical "
                      "scenarios move them as the market index with beta 1.0 (an assumption, not data)")
    if any(r["kind"] == "hypothetical" for r in out["results"]):
        console.print("hypothetical equity shocks move every symbol by the shock x beta 1.0 (no betas given)")


def default_beta_symbols(results: list[dict[str, Any]]) -> list[str]:
    """Symbols a historical scenario had no data for, so it moved them as the index with the default beta 1."""
    out: set[str] = set()
    for r in results:
        for sym, how in ((r.get("details") or {}).get("mapping") or {}).items():
            if "default: no data" in str(how):
                out.add(str(sym))
    return sorted(out)


@app.command()
def optimize(
    data: Data = DATA_DEFAULT,
    symbols: Symbols = None,
    start: Start = None,
    end: End = None,
    objective: Annotated[str, typer.Option(help="min_variance, max_sharpe, target_return, target_risk, "
                                           "max_utility, risk_parity, hrp")] = "max_sharpe",
    upper: Annotated[float | None, typer.Option(help="max weight per asset")] = None,
    target: Annotated[float | None, typer.Option(help="target return or risk (annual)")] = None,
    risk_free_rate: float = 0.0,
    plot: Annotated[Path | None, typer.Option("--plot", help="efficient frontier PNG")] = None,
    as_json: Json = False,
) -> None:
    """Optimal weights on real returns (annualised), optionally with the efficient frontier plotted."""
    from tradesys.quant.portfolio import PortfolioConstraints, efficient_frontier, optimize_portfolio

    def go() -> Any:
        r = _returns(data, symbols, start, end)
        c = PortfolioConstraints(upper=upper)
        res = optimize_portfolio(r, objective, constraints=c, risk_free_rate=risk_free_rate,  # type: ignore[arg-type]
                                 target_return=target if objective == "target_return" else None,
                                 target_risk=target if objective == "target_risk" else None)
        frontier = efficient_frontier(r, constraints=c, risk_free_rate=risk_free_rate) if plot else None
        return r, res, frontier

    r, res, frontier = _run(go)
    if plot is not None and frontier is not None:
        from tradesys.quant.portfolio.plot import plot_efficient_frontier

        plot_efficient_frontier(frontier, plot, assets=(r.mean() * 252, r.cov() * 252))
    if as_json:
        _emit_json(res.to_dict())
        return
    t = Table(title=f"{objective}: return {res.expected_return:.2%}, vol {res.volatility:.2%}, "
                    f"Sharpe {res.sharpe:.2f} ({res.status})")
    t.add_column("asset")
    t.add_column("weight", justify="right")
    for k, w in res.weights.sort_values(ascending=False).items():
        if abs(w) > 1e-6:
            t.add_row(str(k), f"{w:.2%}")
    console.print(t)
    if plot is not None:
        console.print(f"chart: {plot}")


@app.command()
def attribution(
    symbols: Symbols = "AAPL,JPM,XOM,KO",
    start: Start = "1995-01-01",
    end: End = None,
    as_json: Json = False,
) -> None:
    """Fama-French three-factor attribution of an equal-weight portfolio of real stocks (monthly, 1990-2018)."""
    from tradesys.data.returns import fama_french_monthly, load_returns
    from tradesys.quant.risk.attribution import factor_attribution

    def go() -> Any:
        names = [s for s in (symbols or "").split(",") if s]
        daily = load_returns("stocks", names, start=start, end=end)
        monthly = (1 + daily).resample("ME").prod() - 1
        ff = fama_french_monthly()
        both = monthly.join(ff, how="inner")
        if len(both) < 24:
            raise ValueError("start: fewer than 24 months overlap the Fama-French data (it ends in 2018-11)")
        port = both[names].mean(axis=1)
        return factor_attribution(port, both[["Mkt-RF", "SMB", "HML", "RF"]], rf="RF")

    res = _run(go)
    d = res.to_dict()
    if as_json:
        _emit_json(d)
        return
    rows: list[tuple[str, Any]] = [("alpha (monthly)", d["alpha"])]
    rows += [(f"beta {k}", v) for k, v in d["betas"].items()]
    rows += [("R^2", d.get("r_squared", float("nan")))]
    console.print(_table("Fama-French attribution (Newey-West errors)", rows))


@app.command()
def regimes(
    data: Data = DATA_DEFAULT,
    symbols: Symbols = None,
    start: Start = None,
    end: End = None,
    states: int = 2,
    plot: Plot = None,
    as_json: Json = False,
) -> None:
    """Market regimes by a Gaussian hidden Markov model (states ordered by volatility), with a PNG of the regimes."""
    from tradesys.quant.risk.regimes import fit_hmm_regimes, plot_regimes

    def go() -> Any:
        r = _returns(data, symbols, start, end).iloc[:, 0]
        return r, fit_hmm_regimes(r, n_states=states)

    r, fit = _run(go)
    if plot is not None:
        prices = (1 + r).cumprod()
        plot_regimes(prices, fit.states, plot, probabilities=fit.smoothed.iloc[:, -1])
    if as_json:
        _emit_json(fit.to_dict())
        return
    t = Table(title=f"{states}-state HMM on {r.name}: {r.index[0].date()}..{r.index[-1].date()}")
    for col in ("state", "daily mean", "daily vol", "expected duration (days)"):
        t.add_column(col, justify="right")
    for i in range(states):
        stay = fit.transmat[i, i]
        t.add_row(str(i), f"{fit.state_means[i]:.4%}", f"{fit.state_vols[i]:.3%}", f"{1 / (1 - stay):,.0f}")
    console.print(t)
    if plot is not None:
        console.print(f"chart: {plot}")
