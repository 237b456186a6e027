"""`tradesys price ...`: the option analytics on the command line, through the same column layer as the HTTP API.

Every numeric option takes one value or a comma-separated list (lists broadcast against single values), or
`--csv FILE` supplies the columns (S/F, K, T, r, q, sigma, price, is_call or type). Output is a table, or CSV
(`--out file.csv`) or JSON (`--json`) for scripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from tradesys.quant.options.batch import (
    american_columns,
    coerce_columns,
    iv_columns,
    option_columns,
    price_columns,
    reasons,
)

app = typer.Typer(no_args_is_help=True, help="Price options, Greeks, implied vols, American exercise, vol surfaces.")
console = Console()

Values = Annotated[str | None, typer.Option(help="a number or a comma-separated list")]
Csv = Annotated[Path | None, typer.Option("--csv", help="read the input columns from this CSV file")]
Out = Annotated[Path | None, typer.Option("--out", help="write the results as CSV")]
Json = Annotated[bool, typer.Option("--json", help="print the results as JSON")]
ModelOpt = Annotated[str, typer.Option(help="bsm (spot, dividend yield) or black76 (forward)")]


def _parse(name: str, text: str) -> list[Any]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError(f"{name}: empty")
    if name == "is_call":
        return items
    try:
        return [float(s) for s in items]
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a number or a list of numbers") from None


def _inputs(csv: Path | None, given: dict[str, str | None]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if csv is not None:
        frame = pd.read_csv(csv)
        raw.update({str(c): frame[c].to_numpy() for c in frame.columns})
    raw.update({k: _parse(k, v) for k, v in given.items() if v is not None})
    return raw


def _fail(exc: ValueError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


def _emit(inputs: dict[str, Any], outputs: dict[str, Any], out: Path | None, as_json: bool) -> None:
    frame = pd.DataFrame({**{k: np.asarray(v) for k, v in inputs.items()}, **outputs})
    if out is not None:
        frame.to_csv(out, index=False)
        console.print(f"wrote {len(frame)} rows to {out}")
    elif as_json:
        typer.echo(json.dumps({"rows": json.loads(frame.to_json(orient="records", double_precision=15)),
                               "reasons": reasons(outputs["code"])}, indent=2))
    else:
        table = Table(show_lines=False)
        for col in frame.columns:
            table.add_column(col, justify="right")
        for row in frame.itertuples(index=False):
            table.add_row(*(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row))
        console.print(table)
    legend = reasons(outputs["code"])
    if legend and not as_json:
        console.print("codes: " + "; ".join(f"{k} = {v}" for k, v in legend.items()))


@app.command()
def european(
    spot: Values = None,
    forward: Values = None,
    strike: Values = None,
    expiry: Annotated[str | None, typer.Option(help="years to expiry (ACT/365); list allowed")] = None,
    rate: Values = None,
    div: Annotated[str | None, typer.Option(help="continuous dividend yield (bsm)")] = None,
    vol: Values = None,
    type_: Annotated[str | None, typer.Option("--type", help="C/P/call/put; list allowed")] = None,
    model: ModelOpt = "bsm",
    greeks: Annotated[str, typer.Option(help="comma-separated Greeks, or all")] = "delta,gamma,vega,theta",
    csv: Csv = None,
    out: Out = None,
    as_json: Json = False,
) -> None:
    """Black-Scholes-Merton (or Black-76) prices and Greeks. Example: --spot 100 --strike 90,100,110 --expiry 0.5
    --vol 0.2 --type C."""
    given = {"S": spot, "F": forward, "K": strike, "T": expiry, "r": rate, "q": div, "sigma": vol, "is_call": type_}
    try:
        raw = _inputs(csv, given)
        cols = coerce_columns(raw, option_columns(model))  # type: ignore[arg-type]
        outputs = price_columns(cols, model, [g for g in greeks.split(",") if g])  # type: ignore[arg-type]
    except ValueError as exc:
        raise _fail(exc) from None
    _emit(cols, outputs, out, as_json)


@app.command()
def iv(
    price: Values = None,
    spot: Values = None,
    forward: Values = None,
    strike: Values = None,
    expiry: Values = None,
    rate: Values = None,
    div: Values = None,
    type_: Annotated[str | None, typer.Option("--type", help="C/P/call/put; list allowed")] = None,
    model: ModelOpt = "bsm",
    csv: Csv = None,
    out: Out = None,
    as_json: Json = False,
) -> None:
    """Implied volatility to machine precision; prices outside the no-arbitrage bounds show NaN and a code."""
    given = {"price": price, "S": spot, "F": forward, "K": strike, "T": expiry, "r": rate, "q": div,
             "is_call": type_}
    try:
        cols = coerce_columns(_inputs(csv, given), option_columns(model, price=True, vol=False))  # type: ignore[arg-type]
        outputs = iv_columns(cols, model)  # type: ignore[arg-type]
    except ValueError as exc:
        raise _fail(exc) from None
    _emit(cols, outputs, out, as_json)


@app.command()
def american(
    spot: Values = None,
    strike: Values = None,
    expiry: Values = None,
    rate: Values = None,
    div: Values = None,
    vol: Values = None,
    type_: Annotated[str | None, typer.Option("--type", help="C/P/call/put; list allowed")] = None,
    method: Annotated[str, typer.Option(help="lr, crr, fd or lsm")] = "lr",
    resolution: Annotated[int | None, typer.Option(help="tree steps, FD space steps or LSM paths")] = None,
    style: Annotated[str, typer.Option(help="american, bermudan or european")] = "american",
    exercise_per_year: Annotated[float | None, typer.Option(help="Bermudan exercise dates per year")] = None,
    csv: Csv = None,
    out: Out = None,
    as_json: Json = False,
) -> None:
    """American or Bermudan vanilla prices by tree, finite differences or Longstaff-Schwartz."""
    given = {"S": spot, "K": strike, "T": expiry, "r": rate, "q": div, "sigma": vol, "is_call": type_}
    try:
        cols = coerce_columns(_inputs(csv, given), option_columns("bsm"))
        outputs = american_columns(cols, method, resolution=resolution, style=style,  # type: ignore[arg-type]
                                   exercise_per_year=exercise_per_year)
    except ValueError as exc:
        raise _fail(exc) from None
    _emit(cols, outputs, out, as_json)


@app.command()
def surface(
    chain: Annotated[Path, typer.Argument(help="CSV: strike, expiry, bid, ask, type, underlying, rate, dividend")],
    model: Annotated[str, typer.Option(help="svi or sabr")] = "svi",
    valuation_date: Annotated[str | None, typer.Option(help="when expiry holds dates")] = None,
    beta: Annotated[float, typer.Option(help="SABR beta")] = 1.0,
    plot: Annotated[Path | None, typer.Option("--plot", help="write the surface and smiles as a PNG")] = None,
    query_strike: Annotated[str | None, typer.Option(help="strikes to query, comma-separated")] = None,
    query_expiry: Annotated[str | None, typer.Option(help="expiries (years) for the queried strikes")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="write the fitted surface as JSON")] = None,
) -> None:
    """Fit an arbitrage-checked volatility surface to an option chain; print the fit and the arbitrage report."""
    from tradesys.quant.vol import fit_chain

    try:
        frame = pd.read_csv(chain)
        with console.status("fitting the surface..."):
            fitted = fit_chain(frame, model=model, valuation_date=valuation_date, beta=beta)  # type: ignore[arg-type]
        queries = None
        if query_strike is not None:
            K = np.array(_parse("query_strike", query_strike), dtype=float)
            T = np.broadcast_to(np.array(_parse("query_expiry", query_expiry or ""), dtype=float), K.shape)
            queries = (K, T, np.asarray(fitted.vol(K, T), dtype=float))
    except (ValueError, OSError) as exc:
        raise _fail(ValueError(str(exc))) from None
    table = Table(title=f"{model.upper()} surface: {len(fitted.expiries)} expiries, spot {fitted.spot:g}")
    for col in ("expiry (y)", "forward", "forward from", "fit RMSE (vol pts)", "quotes used"):
        table.add_column(col, justify="right")
    used = fitted.quotes.groupby("T")["used"].sum() if "T" in fitted.quotes else {}
    for T in fitted.expiries:
        table.add_row(f"{T:.4f}", f"{fitted.forwards[T]:.4f}", str(fitted.forward_source.get(T, "")),
                      f"{fitted.fit_errors[T]:.3f}", str(int(used.get(T, 0))) if len(used) else "")
    console.print(table)
    report = fitted.report
    console.print(f"arbitrage report: surface {'clean' if report.surface_ok else 'ARBITRAGE'}, "
                  f"quotes {'clean' if report.quotes_ok else 'violations'} (details with --out)")
    if queries is not None:
        qt = Table(title="vol(K, T)")
        for col in ("K", "T", "vol"):
            qt.add_column(col, justify="right")
        for k, t, v in zip(*queries, strict=True):
            qt.add_row(f"{k:g}", f"{t:g}", f"{v:.4%}")
        console.print(qt)
    if out is not None:
        out.write_text(json.dumps(fitted.to_dict(include_quotes=False), indent=2))
        console.print(f"surface JSON: {out}")
    if plot is not None:
        from tradesys.quant.vol.plot import plot_surface

        plot_surface(fitted, plot)
        console.print(f"chart: {plot}")
