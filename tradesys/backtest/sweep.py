"""Parameter sweeps, the pure part: parse a search space, generate trials, build each trial's config, tabulate results.

No Ray and no I/O beyond reading a spec file: the Ray shell (`tradesys.backtest.distributed`) runs the trials.

Space syntax (one dimension per field, on the command line as `--param FIELD=SPEC` or in a spec file):

* `strategy.fast=10,20,50`: a list of values (each parsed as TOML, so `limit` and `"limit"` are both strings);
* `strategy.slow=range(50,200,25)`: Python's `range` (integers, stop excluded);
* `risk.var_limit_pct=uniform(0.01,0.1)`, `loguniform(1e-3,1e-1)`, `randint(5,40)` (both ends included):
  distributions, for random search only.

Only `strategy.*`, `risk.*` and `broker.*` fields can be swept. Each value is checked against the field's own rules
before anything runs (an unknown field or a bad value is one `ConfigError` line naming the field); a combination
that only fails as a whole (e.g. `fast >= slow`) becomes a trial with status `invalid` and its reason, never dropped.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ValidationError

from tradesys.config import ConfigError, TradesysConfig, load_config, parse_override

SWEEPABLE = ("strategy", "risk", "broker")
SEARCHES = ("grid", "random")
MAX_TRIALS = 100_000
# the deterministic scalars of `RunSummary` (wall-clock latencies are not: they differ run to run)
METRICS: tuple[str, ...] = (
    "total_return", "sharpe", "max_drawdown", "equity", "steps", "orders", "fills", "rejected",
)
Status = Literal["ok", "failed", "invalid", "cancelled"]
ENGINES = ("event", "vectorized", "auto")
# the vectorised engine (`tradesys.backtest.vectorized`) runs these strategies, with market orders only
VECTORIZED_STRATEGIES = ("trend", "weights")
# the risk fields it models (the strategy sizes within them); the others are the pre-trade gate's, which it does not
VECTORIZED_RISK = frozenset({"max_position_notional", "max_order_qty", "max_order_notional", "max_gross_leverage",
                             "max_net_leverage"})


@dataclass(frozen=True, slots=True)
class Choice:
    """A finite list of values (grid or random search)."""

    values: tuple[Any, ...]

    def text(self) -> str:
        return ",".join(json.dumps(v) if isinstance(v, str) else str(v) for v in self.values)


@dataclass(frozen=True, slots=True)
class Distribution:
    """A continuous or integer distribution (random search only)."""

    kind: Literal["uniform", "loguniform", "randint"]
    low: float
    high: float

    def text(self) -> str:
        return f"{self.kind}({self.low:g},{self.high:g})"

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "randint":
            return int(rng.integers(int(self.low), int(self.high) + 1))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


Dimension = Choice | Distribution


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """What to search: the space (field -> dimension, in the order given) and how."""

    params: dict[str, Dimension]
    search: Literal["grid", "random"] = "grid"
    trials: int | None = None
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        """JSON-ready form (for the run dir and MLflow)."""
        return {"search": self.search, "trials": self.trials, "seed": self.seed,
                "params": {k: d.text() for k, d in self.params.items()}}


@dataclass(frozen=True, slots=True)
class Trial:
    index: int
    params: dict[str, Any]


@dataclass(slots=True)
class TrialResult:
    """One row of the results table."""

    trial: Trial
    status: Status
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    ledger_path: str | None = None
    attempts: int | None = None
    seconds: float | None = None
    engine: str | None = None


_CALL = re.compile(r"^\s*(range|uniform|loguniform|randint)\s*\((.*)\)\s*$", re.IGNORECASE)


def _number(fld: str, text: str, what: str) -> float:
    try:
        v = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        v = None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{fld}: {what} expects numbers, got {text.strip()!r}")
    return v


def parse_dimension(fld: str, spec: Any) -> Dimension:
    """A dimension from its text (`a,b,c`, `range(...)`, `uniform(...)`, ...) or a list of values (spec files)."""
    if isinstance(spec, list | tuple):
        if not spec:
            raise ConfigError(f"{fld}: no values")
        return Choice(tuple(spec))
    if not isinstance(spec, str):
        return Choice((spec,))
    if not spec.strip():
        raise ConfigError(f"{fld}: no values")
    m = _CALL.match(spec)
    if m is None:
        return Choice(tuple(parse_override(f"x={part.strip()}")[1] for part in _split(fld, spec)))
    kind, args = m.group(1).lower(), [a for a in m.group(2).split(",")]
    nums = [_number(fld, a, f"{kind}()") for a in args]
    if kind == "range":
        if not 1 <= len(nums) <= 3 or not all(isinstance(n, int) for n in nums):
            raise ConfigError(f"{fld}: range() takes 1 to 3 integers (start, stop, step), got {spec.strip()!r}")
        if len(nums) == 3 and nums[2] == 0:
            raise ConfigError(f"{fld}: range() step must not be zero")
        values = tuple(range(*[int(n) for n in nums]))
        if not values:
            raise ConfigError(f"{fld}: {spec.strip()} is empty")
        return Choice(values)
    if len(nums) != 2:
        raise ConfigError(f"{fld}: {kind}() takes 2 numbers (low, high), got {spec.strip()!r}")
    low, high = nums
    if not low < high:
        raise ConfigError(f"{fld}: {kind}() needs low < high, got {spec.strip()!r}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{fld}: loguniform() needs low > 0, got {spec.strip()!r}")
    if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"{fld}: randint() takes integers, got {spec.strip()!r}")
    return Distribution(kind, low, high)  # type: ignore[arg-type]


def _split(fld: str, text: str) -> list[str]:
    """Split `a,b,"c,d",[1,2]` on top-level commas (quotes and brackets kept whole)."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    if any(not p.strip() for p in parts):
        raise ConfigError(f"{fld}: empty value in {text.strip()!r}")
    return parts


def parse_param(text: str) -> tuple[str, Dimension]:
    """`strategy.fast=10,20,50` -> ("strategy.fast", Choice((10, 20, 50)))."""
    if "=" not in text:
        raise ConfigError(f"--param {text!r}: expected section.field=values, e.g. strategy.fast=10,20,50")
    fld, spec = (s.strip() for s in text.split("=", 1))
    return fld, parse_dimension(fld, spec)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON spec file: `params` (dotted keys or nested tables), optional `search`, `trials`, `seed`.

    Returns the raw pieces (params as field -> Dimension); `make_spec` merges them with the command line's.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--spec: {str(p)!r} is not a file")
    try:
        raw = json.loads(p.read_text()) if p.suffix.lower() == ".json" else tomllib.loads(p.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--spec {p}: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--spec {p}: expected a table with a params section")
    unknown = sorted(set(raw) - {"params", "search", "trials", "seed"})
    if unknown:
        raise ConfigError(f"--spec {p}: unknown key {unknown[0]!r} (have: params, search, trials, seed)")
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        raise ConfigError(f"--spec {p}: params: a table of field = values is required")
    out = dict(raw)
    out["params"] = {k: parse_dimension(k, v) for k, v in _flatten(params).items()}
    return out


def make_spec(
    params: Iterable[tuple[str, Dimension]],
    *,
    search: str | None = None,
    trials: int | None = None,
    seed: int | None = None,
    file: Mapping[str, Any] | None = None,
) -> SweepSpec:
    """Merge a spec file's pieces with the command line's (the command line wins for search, trials, seed)."""
    file = file or {}
    space: dict[str, Dimension] = dict(file.get("params", {}))
    for fld, dim in params:
        if fld in space:
            raise ConfigError(f"{fld}: given twice")
        space[fld] = dim
    if not space:
        raise ConfigError("--param: at least one parameter to sweep (e.g. --param strategy.fast=10,20,50)")
    search = search or file.get("search") or "grid"
    if search not in SEARCHES:
        raise ConfigError(f"search: must be grid or random, got {search!r}")
    trials = trials if trials is not None else file.get("trials")
    seed = seed if seed is not None else file.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed: must be an integer, got {seed!r}")
    if search == "grid":
        if trials is not None:
            raise ConfigError("trials: only with search = random (a grid runs every point)")
        for fld, dim in space.items():
            if isinstance(dim, Distribution):
                raise ConfigError(f"{fld}: {dim.text()} is a distribution: a grid needs values (a,b,c or range(...))"
                                  "; use search = random")
    elif not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"trials: search = random needs a number of trials >= 1, got {trials!r}")
    return SweepSpec(space, search, trials, seed)  # type: ignore[arg-type]


def _field_errors(section: BaseModel, name: str, value: Any) -> list[str]:
    """Errors of `value` for field `name` alone (rules across fields are the trial's business)."""
    try:
        type(section).model_validate({**section.model_dump(), name: value})
    except ValidationError as exc:
        return [e["msg"].removeprefix("Value error, ") + (f" (got {value!r})" if e["type"] != "value_error" else "")
                for e in exc.errors() if tuple(e["loc"][:1]) == (name,)]
    return []


def check_space(spec: SweepSpec, base: TradesysConfig, fixed: Iterable[str] = ()) -> None:
    """Every field exists and is sweepable, every value is valid for its field alone; ConfigError names the field.

    `fixed` are the fields the base configuration's `--set` overrides pin (sweeping one of them is ambiguous).
    """
    pinned = set(fixed)
    for fld, dim in spec.params.items():
        section_name, _, name = fld.partition(".")
        if section_name not in SWEEPABLE or not name or "." in name:
            raise ConfigError(f"{fld}: not a sweepable field (section.field in {', '.join(SWEEPABLE)})")
        section = getattr(base, section_name)
        if name not in type(section).model_fields:
            have = ", ".join(type(section).model_fields)
            raise ConfigError(f"{fld}: unknown field (the {section_name} section has: {have})")
        if fld in pinned:
            raise ConfigError(f"{fld}: both --set and --param give it; drop one")
        probes = dim.values if isinstance(dim, Choice) else (dim.low, dim.high, (dim.low + dim.high) / 2 + 1e-9)
        if isinstance(dim, Distribution) and dim.kind == "randint":
            probes = (int(dim.low), int(dim.high))
        for value in probes:
            errors = _field_errors(section, name, value)
            if errors:
                what = f"{dim.text()} draws values that fail: " if isinstance(dim, Distribution) else ""
                raise ConfigError(f"{fld}: {what}{errors[0]}")


def space_size(spec: SweepSpec) -> int | None:
    """Distinct points of an all-list space (None if it has a distribution)."""
    if any(isinstance(d, Distribution) for d in spec.params.values()):
        return None
    return math.prod(len(d.values) for d in spec.params.values())  # type: ignore[union-attr]


def generate_trials(spec: SweepSpec) -> list[Trial]:
    """The grid in row-major order (last field fastest), or `trials` random draws reproducible from `seed`.

    A random search over lists only draws distinct points (without replacement), so no configuration runs twice.
    """
    names = list(spec.params)
    size = space_size(spec)
    if spec.search == "grid":
        assert size is not None  # make_spec refuses distributions in a grid
        if size > MAX_TRIALS:
            raise ConfigError(f"params: the grid has {size:,} points (over {MAX_TRIALS:,}): narrow it or search random")
        lists = [spec.params[n].values for n in names]  # type: ignore[union-attr]
        return [Trial(i, dict(zip(names, combo, strict=True))) for i, combo in enumerate(itertools.product(*lists))]
    n = int(spec.trials or 0)
    if n > MAX_TRIALS:
        raise ConfigError(f"trials: {n:,} is over {MAX_TRIALS:,}")
    rng = np.random.default_rng(spec.seed)
    if size is not None:
        if n > size:
            raise ConfigError(f"trials: {n} exceeds the {size} distinct points of the space; use search = grid")
        shape = [len(spec.params[k].values) for k in names]  # type: ignore[union-attr]
        picks = rng.choice(size, size=n, replace=False)
        out = []
        for i, flat in enumerate(picks):
            idx = np.unravel_index(int(flat), shape)
            out.append(Trial(i, {k: spec.params[k].values[int(j)] for k, j in zip(names, idx, strict=True)}))  # type: ignore[union-attr]
        return out
    trials = []
    for i in range(n):
        params = {}
        for k in names:
            dim = spec.params[k]
            if isinstance(dim, Distribution):
                params[k] = dim.sample(rng)
            else:
                params[k] = dim.values[int(rng.integers(len(dim.values)))]
        trials.append(Trial(i, params))
    return trials


def trial_config(config_path: str | Path | None, overrides: Sequence[str], params: Mapping[str, Any]) -> TradesysConfig:
    """The base configuration (file and `--set` overrides) with the trial's parameters; ConfigError if invalid."""
    merged = dict(parse_override(o) for o in overrides)
    merged.update(params)
    return load_config(config_path, merged)


def swept_value(cfg: TradesysConfig, fld: str) -> Any:
    """The validated value of a swept field in a trial's config (e.g. risk limit `off` -> None)."""
    section, _, name = fld.partition(".")
    return getattr(getattr(cfg, section), name)


def _column(values: list[Any]) -> pa.Array:
    """An Arrow column; mixed types (e.g. a list of numbers and strings) fall back to text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def results_table(results: Sequence[TrialResult], fields: Sequence[str]) -> pa.Table:
    """One row per trial, in trial order: trial, status, the swept fields, the metrics (null unless ok), error,
    attempts, seconds, engine and ledger path."""
    rows = sorted(results, key=lambda r: r.trial.index)
    cols: dict[str, pa.Array] = {
        "trial": pa.array([r.trial.index for r in rows], pa.int64()),
        "status": pa.array([r.status for r in rows], pa.string()),
    }
    for f in fields:
        cols[f] = _column([r.trial.params.get(f) for r in rows])
    for m in METRICS:
        vals = [r.metrics.get(m) if r.status == "ok" else None for r in rows]
        kind = pa.int64() if m in ("steps", "orders", "fills", "rejected") else pa.float64()
        cols[m] = pa.array([None if v is None else (int(v) if kind == pa.int64() else float(v)) for v in vals], kind)
    cols["error"] = pa.array([r.error for r in rows], pa.string())
    cols["attempts"] = pa.array([r.attempts for r in rows], pa.int64())
    cols["seconds"] = pa.array([r.seconds for r in rows], pa.float64())
    cols["engine"] = pa.array([r.engine for r in rows], pa.string())
    cols["ledger_path"] = pa.array([r.ledger_path for r in rows], pa.string())
    return pa.table(cols)


def best(results: Sequence[TrialResult], metric: str = "sharpe", n: int = 5) -> list[TrialResult]:
    """The `n` ok trials with the highest finite `metric` (max_drawdown: the lowest), best first."""
    if metric not in METRICS:
        raise ConfigError(f"--rank-by: must be one of {', '.join(METRICS)}, got {metric!r}")
    sign = 1.0 if metric == "max_drawdown" else -1.0
    ok = [r for r in results if r.status == "ok" and _finite(r.metrics.get(metric))]
    return sorted(ok, key=lambda r: (sign * float(r.metrics[metric]), r.trial.index))[:n]


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(float(v))


def gate_fields(fields: Iterable[str]) -> list[str]:
    """The swept fields the vectorised engine does not model (the pre-trade gate's limits)."""
    return [f for f in fields if f.startswith("risk.") and f.removeprefix("risk.") not in VECTORIZED_RISK]


def check_engine(engine: str, fields: Iterable[str], cfg: TradesysConfig | None = None) -> None:
    """`engine` is known, and `vectorized` is not asked to sweep what it does not model (ConfigError naming it)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
    fields = list(fields)
    if engine == "vectorized" and ((cfg is not None and cfg.broker.impact != "flat") or "broker.impact" in fields):
        raise ConfigError("broker.impact: the vectorised engine models the flat cost model only (sqrt impact runs "
                          "on the event engine); use --engine event (or auto)")
    if engine == "vectorized" and ((cfg is not None and cfg.execution.algo) or "execution.algo" in fields):
        raise ConfigError("execution.algo: the vectorised engine sends every order as is (execution algorithms run "
                          "on the event engine); use --engine event (or auto)")
    gate = gate_fields(fields)
    if engine == "vectorized" and gate:
        raise ConfigError(f"{gate[0]}: the vectorised engine does not model the pre-trade gate, so sweeping it would "
                          "change nothing; use --engine event (or auto)")


def trial_engine(engine: str, cfg: TradesysConfig, fields: Iterable[str]) -> tuple[str, str | None]:
    """(engine that runs this trial, why the vectorised one cannot, if it cannot).

    `auto`: vectorised for trend and weights strategies with market orders and the flat cost model when no
    pre-trade gate field is swept, else event-driven. `vectorized`: the reason makes the trial invalid.
    """
    if engine == "event":
        return "event", None
    reason = None
    if cfg.strategy.name not in VECTORIZED_STRATEGIES:
        reason = f"strategy.name: the vectorised engine runs trend or weights strategies, got {cfg.strategy.name!r}"
    elif cfg.strategy.order_type != "market":
        reason = ("strategy.order_type: the vectorised engine models market orders only, got "
                  f"{cfg.strategy.order_type!r}")
    elif gate_fields(fields):
        reason = f"{gate_fields(fields)[0]}: the vectorised engine does not model the pre-trade gate"
    elif cfg.broker.impact != "flat":
        reason = f"broker.impact: the vectorised engine models the flat cost model only, got {cfg.broker.impact!r}"
    elif cfg.broker.kind == "routed":
        reason = "broker.kind: the vectorised engine models one simulated venue, not routing across venues"
    elif cfg.execution.algo:
        reason = f"execution.algo: the vectorised engine sends every order as is, got {cfg.execution.algo!r}"
    if reason is None:
        return "vectorized", None
    return ("event", None) if engine == "auto" else ("vectorized", reason)
