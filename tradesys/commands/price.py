"""`tradesys price ...`: the option analytics on the command line, through the same column layer as the HTTP API.

Every numeric option takes one value or a comma-separated list (lists broadcast against single values), or
`--csv FILE` supplies the columns (S/F, K, T, r, q, sigma, price, is_call or type). Output is a table, or CSV
(`--out file.csv`) or JSON (`--json`) for scripts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

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
        import pandas as pd  # here, not at the top: `import tradesys.cli` (every command) does not pay for pandas

        try:
            frame = pd.read_csv(csv)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ValueError(f"--csv: cannot read {csv} ({exc})") from None
        raw.update({str(c): frame[c].to_numpy() for c in frame.columns})
    raw.update({k: _parse(k, v) for k, v in given.items() if v is not None})
    return raw


# The column layer names inputs as the library does (S, K, sigma, ...); the user typed flags: errors name those.
FLAGS = {"S": "--spot", "F": "--forward", "K": "--strike", "T": "--expiry", "r": "--rate", "q": "--div",
         "sigma": "--vol", "is_call": "--type", "type": "--type", "price": "--price", "model": "--model",
         "greeks": "--greeks", "method": "--method", "resolution": "--resolution", "style": "--style",
         "exercise_per_year": "--exercise-per-year", "query_strike": "--query-strike",
         "query_expiry": "--query-expiry", "beta": "--beta", "valuation_date": "--valuation-date"}

# Units of each output column, as the library computes them (conventions in tradesys/quant/options/__init__.py):
# plain partial derivatives per 1.00 of vol and rate, time derivatives per year of calendar time.
UNITS = {
    "price": "per unit",
    "iv": "0.2 = 20%",
    "delta": "per 1 S",
    "gamma": "per 1 S",
    "vega": "per 1.00 vol",
    "theta": "per year",
    "rho": "per 1.00 r",
    "rho_q": "per 1.00 q",
    "vanna": "per 1.00 vol",
    "charm": "per year",
    "vomma": "per 1.00 vol",
    "veta": "per year",
    "speed": "per 1 S",
    "zomma": "per 1.00 vol",
    "color": "per year",
    "ultima": "per 1.00 vol",
}


def _flag_message(text: str) -> str:
    """`K: required` -> `--strike: required`; other column names in the text are replaced by their flags too."""
    head, sep, rest = text.partition(": ")
    if sep and head in FLAGS:
        text = f"{FLAGS[head]}: {rest}"
    return re.sub(r"\b(but|and) (S|F|K|T|r|q|sigma|is_call) has", lambda m: f"{m[1]} {FLAGS[m[2]]} has", text)


def _fail(exc: Exception) -> typer.Exit:
    """One line on stderr naming the flag (never a traceback); the caller raises the returned Exit(2)."""
    typer.echo(f"error: {' '.join(_flag_message(str(exc)).split())}", err=True)
    return typer.Exit(2)


def _emit(inputs: dict[str, Any], outputs: dict[str, Any], out: Path | None, as_json: bool) -> None:
    import pandas as pd

    from tradesys.quant.options.batch import reasons

    frame = pd.DataFrame({**{k: np.asarray(v) for k, v in inputs.items()}, **outputs})
    if out is not None:
        frame.to_csv(out, index=False)
        console.print(f"wrote {len(frame)} rows to {out}")
    elif as_json:
        units = {k: v for k, v in UNITS.items() if k in outputs}
        typer.echo(json.dumps({"rows": json.loads(frame.to_json(orient="records", double_precision=15)),
                               "units": units, "reasons": reasons(outputs["code"])}, indent=2))
    else:
        console.print(_table(frame, inputs, outputs))
    legend = reasons(outputs["code"])
    if legend and not as_json:
        console.print("codes: " + "; ".join(f"{k} = {v}" for k, v in legend.items()))
    if not as_json and out is None and any(c in outputs for c in ("vega", "theta", "rho")):
        console.print("units: vol and rates as decimals (0.2 = 20%): divide vega or rho by 100 for one vol or rate "
                      "point, theta by 365 for one calendar day")


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _table(frame: pd.DataFrame, inputs: dict[str, Any], outputs: dict[str, Any]) -> Table:
    """Inputs that are the same on every row go to the caption, so the outputs fit a terminal; each output column
    is labelled with its unit (second header line); the code column only appears when a row has one."""
    if len(frame) == 1:  # one row: one line per field, with its unit
        table = Table(show_header=True)
        for col, justify in (("field", "left"), ("value", "right"), ("unit", "left")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for col in frame.columns:
            table.add_row(col, _fmt(frame[col].iloc[0]), UNITS.get(col, "") if col in outputs else "input")
        return table
    const = [c for c in inputs if c in frame and frame[c].nunique(dropna=False) == 1]
    shown = [c for c in frame.columns if c not in const and not (c == "code" and not frame[c].astype(bool).any())]
    caption = ", ".join(f"{c} = {_fmt(frame[c].iloc[0])}" for c in const) or None
    table = Table(caption=caption, caption_justify="left")
    for col in shown:
        header = f"{col}\n{UNITS[col]}" if col in outputs and col in UNITS else col
        table.add_column(header, justify="right", overflow="fold")
    for row in frame[shown].itertuples(index=False):
        table.add_row(*(_fmt(v) for v in row))
    return table


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
    from tradesys.quant.options.batch import coerce_columns, option_columns, price_columns

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
    from tradesys.quant.options.batch import coerce_columns, iv_columns, option_columns

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
    from tradesys.quant.options.batch import american_columns, coerce_columns, option_columns

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
    import pandas as pd

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
        from tradesys.commands.output import write_json

        write_json(out, fitted.to_dict(include_quotes=False))
        console.print(f"surface JSON: {out}")
    if plot is not None:
        from tradesys.quant.vol.plot import plot_surface

        plot_surface(fitted, plot)
        console.print(f"chart: {plot}")
