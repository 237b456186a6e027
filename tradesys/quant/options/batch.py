"""Column-in, column-out entry points shared by the HTTP routes and the CLI.

A request (a JSON object, an Arrow record batch, a CSV file, command-line lists) arrives as named columns;
`coerce_columns` turns it into float64/bool arrays of one length (scalars broadcast) or raises ValueError naming
the field and the reason. The pricing functions then return named output columns with an `OptionError` code per
row: one bad row is NaN plus its code, never a failure of the batch. Keeping this layer here, pure, means the
HTTP API and the command line cannot drift apart.

The option type column (``is_call``: true/false or 1/0; or ``type``: C/P/call/put) is carried as float 1.0/0.0.
`coerce_columns` refuses any other value by default (``flags="refuse"``, the HTTP schema's rule) or, with
``flags="code"``, keeps it so that every entry point (price, implied vol, American) returns that row NaN with code
BAD_OPTION_TYPE: never a call. Every output row is finite with code OK, or NaN with a non-OK code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tradesys.quant.options.american import METHODS as AMERICAN_METHODS
from tradesys.quant.options.american import american_price
from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.european import GREEK_NAMES, black76_greeks, bsm_greeks
from tradesys.quant.options.implied_vol import implied_vol, implied_vol_black76

Model = Literal["bsm", "black76"]
MODELS: tuple[str, ...] = ("bsm", "black76")

_CALL_WORDS = {"c": True, "call": True, "p": False, "put": False}
FlagMode = Literal["refuse", "code"]
FLAG_MODES: tuple[str, ...] = ("refuse", "code")


@dataclass(frozen=True)
class Column:
    """One input column: its name, whether it is a float or the call/put flag, and a default if optional."""

    name: str
    kind: Literal["float", "flag"] = "float"
    default: float | None = None
    doc: str = ""


# spot-like first column depends on the model: S for BSM, F for Black-76
def option_columns(model: Model, *, price: bool = False, vol: bool = True) -> list[Column]:
    """The input columns of a pricing (vol=True) or implied-vol (price=True) request for `model`."""
    underlying = Column("S", doc="spot") if model == "bsm" else Column("F", doc="forward or futures price")
    cols = [Column("price", doc="option price")] if price else []
    cols += [underlying, Column("K", doc="strike"), Column("T", doc="years to expiry (ACT/365)")]
    cols += [Column("r", default=0.0, doc="continuously compounded rate")]
    if model == "bsm":
        cols += [Column("q", default=0.0, doc="continuous dividend yield")]
    if vol:
        cols += [Column("sigma", doc="volatility, 0.2 = 20%")]
    cols += [Column("is_call", kind="flag", doc="true/false, or type C/P/call/put")]
    return cols


_BAD_FLAG = -1.0  # an option type that is neither a call nor a put: a coded bad row, never a call


def _as_flag(name: str, values: np.ndarray, mode: FlagMode = "refuse") -> np.ndarray:
    """The call/put column as float64 1.0 (call) / 0.0 (put).

    ``mode="refuse"`` (the HTTP schema's rule: the field is a boolean or C/P): any other value is a ValueError
    naming the field. ``mode="code"``: any other value (7, 0.5, 'X') stays a non-0/1 number and NaN stays NaN, so
    the pricing functions code that row (BAD_OPTION_TYPE / NAN_INPUT); never a call either way.
    """
    if mode not in FLAG_MODES:
        raise ValueError(f"flags: must be one of {', '.join(FLAG_MODES)}, got {mode!r}")
    if values.dtype == bool:
        return values.astype(np.float64)
    if values.dtype.kind in "OUS":
        out = []
        for v in values.tolist():
            if isinstance(v, (bool, np.bool_, int, float, np.number)):
                out.append(float(v))
                continue
            word = str(v).strip().lower()
            if word not in _CALL_WORDS and mode == "refuse":
                raise ValueError(f"{name}: {word!r} is not one of C, P, call, put")
            out.append(float(_CALL_WORDS.get(word, _BAD_FLAG)))
        flags = np.asarray(out, dtype=np.float64)
    elif values.dtype.kind in "iuf":
        if mode == "refuse" and values.dtype.kind == "f":
            raise ValueError(f"{name}: must be a boolean or C/P")
        flags = values.astype(np.float64)
    else:
        raise ValueError(f"{name}: must be a boolean or C/P")
    if mode == "refuse" and not np.isin(flags, (0.0, 1.0)).all():
        raise ValueError(f"{name}: must be true/false (or 1/0)")
    return flags


def _split_flag(cols: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean bool flags for pricers that take only calls and puts, rows with a NaN flag, rows with a bad flag)."""
    flag = np.asarray(cols["is_call"], dtype=np.float64)
    nan = ~np.isfinite(flag)
    bad = ~nan & (flag != 0.0) & (flag != 1.0)
    return flag == 1.0, nan, bad


def _code_flags(out: dict[str, Any], nan: np.ndarray, bad: np.ndarray) -> dict[str, Any]:
    """Code the rows whose option type is NaN (NAN_INPUT, first as in european) or not a call/put (BAD_OPTION_TYPE,
    unless another check already failed), then any row still OK with a non-finite output (OVERFLOW: a pricer that
    left float range on extreme finite inputs), and NaN all outputs of every coded row: the module's contract holds
    whatever the pricer behind it does."""
    ok = int(OptionError.OK)
    code = out["code"]
    code = np.where(nan, int(OptionError.NAN_INPUT), code)
    code = np.where(bad & (code == ok), int(OptionError.BAD_OPTION_TYPE), code)
    nonfinite = np.zeros(code.shape, dtype=bool)
    for k, v in out.items():
        if k != "code":
            nonfinite |= ~np.isfinite(np.asarray(v, dtype=np.float64))
    code = np.where(nonfinite & (code == ok), int(OptionError.OVERFLOW), code).astype(np.int8)
    failed = code != ok
    for k, v in out.items():
        if k != "code":
            out[k] = np.where(failed, np.nan, np.asarray(v, dtype=np.float64))
    out["code"] = code
    return out


def _as_float(name: str, values: np.ndarray) -> np.ndarray:
    if values.dtype == bool or values.dtype.kind not in "iuf":
        try:
            values = np.asarray(values.tolist(), dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: must be numbers") from None
    return values.astype(np.float64, copy=False)


def coerce_columns(
    raw: Mapping[str, Any], spec: Iterable[Column], *, max_rows: int | None = None, flags: FlagMode = "refuse"
) -> dict[str, Any]:
    """Named inputs -> equal-length arrays (length-1 and scalar inputs broadcast), or ValueError 'field: reason'.

    `flags`: what a call/put value other than true/false, 1/0 or C/P/call/put does: ``"refuse"`` the request
    (the HTTP schema's rule) or ``"code"`` that row BAD_OPTION_TYPE (batch files, where one bad row must not sink
    the others).

    `type` (C/P/call/put) is accepted in place of `is_call`. Unknown fields are refused, so a typo such as
    `sigam` is an error instead of a silently ignored default. NaN values are not refused here: they come back
    as NaN rows with the NAN_INPUT code.
    """
    spec = list(spec)
    raw = dict(raw)
    if "type" in raw and any(c.kind == "flag" for c in spec):
        if "is_call" in raw:
            raise ValueError("type: give either is_call or type, not both")
        raw["is_call"] = raw.pop("type")
    known = {c.name for c in spec}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field (expected {', '.join(sorted(known))})")
    arrays: dict[str, np.ndarray] = {}
    for col in spec:
        if col.name not in raw or raw[col.name] is None:
            if col.default is None:
                raise ValueError(f"{col.name}: required ({col.doc})" if col.doc else f"{col.name}: required")
            arrays[col.name] = np.array([col.default])
            continue
        values = np.asarray(raw[col.name])
        if values.ndim > 1:
            raise ValueError(f"{col.name}: must be a number or a flat list")
        values = values.reshape(-1)
        if values.size == 0:
            raise ValueError(f"{col.name}: empty")
        arrays[col.name] = _as_flag(col.name, values, flags) if col.kind == "flag" else _as_float(col.name, values)
    n = max(a.size for a in arrays.values())
    for name, a in arrays.items():
        if a.size not in (1, n):
            longest = next(k for k, v in arrays.items() if v.size == n)
            raise ValueError(f"{name}: has {a.size} values but {longest} has {n} (lengths must match, or be 1)")
    if max_rows is not None and n > max_rows:
        raise ValueError(f"rows: {n} rows exceed the limit of {max_rows} for this encoding")
    return {k: np.broadcast_to(v, (n,)) if v.size == 1 else v for k, v in arrays.items()}


def _with_codes(out: dict[str, Any], codes: Any) -> dict[str, Any]:
    out["code"] = np.asarray(codes, dtype=np.int8)
    return out


def price_columns(cols: Mapping[str, np.ndarray], model: Model = "bsm", greeks: Iterable[str] = ()) -> dict[str, Any]:
    """Price (and the named Greeks, or every one with 'all') of each row; output columns price, <greeks>, code."""
    wanted = list(greeks)
    if wanted == ["all"]:
        wanted = [g for g in GREEK_NAMES if g != "price" and not (model == "black76" and g == "rho_q")]
    bad = [g for g in wanted if g not in GREEK_NAMES or g == "price"]
    if bad:
        raise ValueError(f"greeks: unknown Greek {bad[0]!r} (choose from {', '.join(GREEK_NAMES[1:])} or all)")
    which = ["price", *wanted]
    if model == "bsm":
        g = bsm_greeks(cols["S"], cols["K"], cols["T"], cols["r"], cols["q"], cols["sigma"], cols["is_call"],
                       which=which)
    elif model == "black76":
        g = black76_greeks(cols["F"], cols["K"], cols["T"], cols["r"], cols["sigma"], cols["is_call"], which=which)
    else:
        raise ValueError(f"model: must be one of {', '.join(MODELS)}")
    _, nan, bad = _split_flag(cols)  # european codes these itself; the same rule here keeps every entry point alike
    return _code_flags(_with_codes({name: np.asarray(g[name]) for name in which}, g.codes), nan, bad)


def iv_columns(cols: Mapping[str, np.ndarray], model: Model = "bsm") -> dict[str, Any]:
    """Implied vol of each row; output columns iv, code."""
    call, nan, bad = _split_flag(cols)
    if model == "bsm":
        iv, codes = implied_vol(cols["price"], cols["S"], cols["K"], cols["T"], cols["r"], cols["q"], call)
    elif model == "black76":
        iv, codes = implied_vol_black76(cols["price"], cols["F"], cols["K"], cols["T"], cols["r"], call)
    else:
        raise ValueError(f"model: must be one of {', '.join(MODELS)}")
    return _code_flags(_with_codes({"iv": np.asarray(iv)}, codes), nan, bad)


# per-method knobs a caller may set, with sane ceilings so one request cannot occupy a replica for minutes
AMERICAN_LIMITS: dict[str, tuple[str, int, int]] = {
    "lr": ("steps", 201, 5_001),
    "crr": ("steps", 201, 5_001),
    "fd": ("space_steps", 400, 4_001),
    "lsm": ("paths", 50_000, 1_000_000),
}


def american_columns(
    cols: Mapping[str, np.ndarray],
    method: str = "lr",
    *,
    resolution: int | None = None,
    style: Literal["american", "bermudan", "european"] = "american",
    exercise_per_year: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """American (or Bermudan) price per row, plus delta/gamma where the method gives them and LSM's standard error.

    `resolution` is the method's size knob (tree steps, FD space steps, LSM paths; see AMERICAN_LIMITS).
    """
    if method not in AMERICAN_METHODS:
        raise ValueError(f"method: must be one of {', '.join(AMERICAN_METHODS)}")
    knob, default, ceiling = AMERICAN_LIMITS[method]
    size = default if resolution is None else int(resolution)
    if not 2 <= size <= ceiling:
        raise ValueError(f"resolution: {knob} must be between 2 and {ceiling} for method {method}")
    if style == "bermudan" and exercise_per_year is None:
        raise ValueError("exercise_per_year: required for bermudan style")
    if exercise_per_year is not None and not exercise_per_year > 0:
        raise ValueError("exercise_per_year: must be > 0")
    kw: dict[str, Any] = {knob: size}
    if method == "lsm":
        kw["seed"] = seed
    call, nan, bad = _split_flag(cols)
    res = american_price(cols["S"], cols["K"], cols["T"], cols["r"], cols["q"], cols["sigma"], call,
                         method=method, style=style, exercise_per_year=exercise_per_year, **kw)  # type: ignore[arg-type]
    out: dict[str, Any] = {"price": np.asarray(res.price)}
    for name in ("delta", "gamma", "stderr"):
        value = getattr(res, name)
        if value is not None:
            out[name] = np.asarray(value, dtype=np.float64)
    return _code_flags(_with_codes(out, res.codes), nan, bad)


def reasons(codes: np.ndarray) -> dict[str, str]:
    """{code: message} for each non-OK code present: the legend a client needs for the `code` column."""
    present = sorted({int(c) for c in np.unique(codes)} - {int(OptionError.OK)})
    return {str(c): f"{OptionError(c).name}: {OptionError(c).message}" for c in present}
