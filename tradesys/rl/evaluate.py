"""Honest out-of-sample evaluation of the PPO agent: several training seeds against simple baselines on the TEST period.

Why this shape: one good PPO run proves little (seed luck, selection among many checkpoints, costs ignored). Here
every training seed's selected policy and every baseline trade the same test bars through the same environment
(`tradesys.rl.env`: the backtest's fees, slippage, sizing and limits), the test period is loaded only now, and the
verdict against each baseline is a paired bootstrap test, not a comparison of point estimates.

* Test period: the walk-forward split's test dates (never loaded by training or selection: `tradesys.rl.train`);
  the env slice starts ``window - 1`` bars early so the first decision is on the test period's first bar. The data
  are loaded from the train period's start so recursive features (RSI, MACD) match what training saw.
* Agent: each run's selected checkpoint, deterministic (`RLPolicy`), one whole-period episode (no random start).
* Baselines, long-only, fully invested at their rebalances, stepped through the env in ``clip`` action mode (target
  weight = action x max_weight: the same limits, sizing and costs; only the action-to-weight map differs) and
  holding their shares between rebalances (target = current shares; should costs leave cash below zero, the env's
  gross-leverage limit trims the holding as it would any strategy's):
  ``buy_and_hold`` (equal weights bought on the first bar, never traded again), ``equal_weight`` (back to 1/A every
  ``rebalance_every`` bars), ``trend`` (`tradesys.backtest.vectorized.trend_target_weights` with the default
  `StrategyConfig`, every bar; shorts only in the env's long/short mode), ``min_variance`` and ``max_sharpe``
  (`tradesys.quant.portfolio.optimize_portfolio`, long-only, weight <= max_weight, every ``rebalance_every`` bars
  on the simple returns of the ``estimation_window`` bars BEFORE the rebalance bar: data at or after it never
  enter; the first window lies wholly before the test period). Max Sharpe falls back to min variance when no
  long-only portfolio has a positive expected return (counted in ``fallbacks``).
* Statistics on per-bar log returns of equity: annualised Sharpe with a stationary-bootstrap (Politis-Romano,
  `arch.bootstrap.StationaryBootstrap`, seeded; block length by Politis-White) percentile interval; PSR against 0
  and DSR (`tradesys.backtest.overfit`) given the number of configurations tried: every checkpoint scored on the
  selection period in the evaluated runs (or ``n_trials`` given, e.g. from a Tune run), with the variance of their
  per-bar selection Sharpes when known (else of the seeds' test Sharpes); a baseline is a single untuned trial, so
  its DSR is its PSR. Max drawdown, turnover (traded notional / equity, per year), costs (fees + slippage over the
  initial cash), total return.
* Verdict per baseline: the same bootstrap draws resample all paths together; the agent beats a baseline iff the
  interval of (mean over seeds of the agent's Sharpe) - (the baseline's Sharpe) lies wholly above 0 (a one-sided
  test at (1 - confidence) / 2). Otherwise the report says "does not beat", whatever the point estimates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from tradesys.rl.env import PortfolioEnv, RLEnvConfig
from tradesys.rl.market import MarketData

__all__ = [
    "BASELINES",
    "EvalSettings",
    "StrategyPath",
    "WeightRule",
    "baseline_rules",
    "bootstrap_indices",
    "estimation_returns",
    "evaluate_runs",
    "evaluate_strategies",
    "markdown_table",
    "max_sharpe_rule",
    "min_variance_rule",
    "period_slice",
    "plot_equity",
    "run_agent",
    "run_weights",
    "sharpe_annual",
]

BASELINES = ("buy_and_hold", "equal_weight", "trend", "min_variance", "max_sharpe")
_DAY_NS = 86_400 * 10**9
_HOLD = 1.0 + 1e-9  # target = current shares: floor(q * (1 + 1e-9)) == q for any q < 1e9 shares

# (absolute bar index t, closes of bars 0..t inclusive) -> target weights (A,), or None to hold the current shares
WeightRule = Callable[[int, np.ndarray], np.ndarray | None]


@dataclass(frozen=True)
class EvalSettings:
    """How the evaluation runs; validated (errors name the field)."""

    rebalance_every: int = 21  # bars between rebalances of equal weight, min variance and max Sharpe
    estimation_window: int = 252  # bars of returns (before the rebalance bar) the optimisers estimate from
    bootstrap_reps: int = 1000
    confidence: float = 0.90  # two-sided interval; the verdict is one-sided at (1 - confidence) / 2
    block_size: float | None = None  # mean block of the stationary bootstrap; None: Politis-White on the paths
    seed: int = 0  # bootstrap seed
    periods_per_year: float = 252.0
    baselines: tuple[str, ...] = BASELINES

    def __post_init__(self) -> None:
        for name, low in (("rebalance_every", 1), ("estimation_window", 2), ("bootstrap_reps", 100), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
                raise ValueError(f"{name}: must be an integer >= {low}, got {v!r}")
        if not (isinstance(self.confidence, float | int) and 0.5 <= float(self.confidence) < 1.0):
            raise ValueError(f"confidence: must be in [0.5, 1), got {self.confidence!r}")
        if self.block_size is not None and not (math.isfinite(self.block_size) and self.block_size >= 1):
            raise ValueError(f"block_size: must be >= 1 or None, got {self.block_size!r}")
        if not (math.isfinite(self.periods_per_year) and self.periods_per_year > 0):
            raise ValueError(f"periods_per_year: must be > 0, got {self.periods_per_year!r}")
        b = tuple(self.baselines)
        unknown = [x for x in b if x not in BASELINES]
        if unknown or not b or len(set(b)) != len(b):
            raise ValueError(f"baselines: {list(b)} must be distinct names among {list(BASELINES)}")
        object.__setattr__(self, "baselines", b)


@dataclass
class StrategyPath:
    """One strategy's pass over the test period: equity before the first decision and after each step."""

    name: str
    kind: str  # "agent" or "baseline"
    ts: np.ndarray  # (n + 1,) bar times (ns): the first decision bar, then each step's mark bar
    equity: np.ndarray  # (n + 1,)
    turnover: np.ndarray  # (n,) traded notional / equity before the step
    costs: float  # fees + slippage paid, currency
    seed: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def returns(self) -> np.ndarray:
        """Per-bar log returns of equity (net of every cost)."""
        return np.diff(np.log(np.maximum(self.equity, 1e-300)))


# ------------------------------------------------------------------------------------------- the test slice


def _ns(d: date | str) -> int:
    return int(np.datetime64(str(d), "ns").astype(np.int64))


def _iso(ts_ns: int) -> str:
    return str(np.datetime64(int(ts_ns), "ns").astype("datetime64[D]"))


def period_slice(market: MarketData, test_start: date | str, test_end: date | str, window: int) -> tuple[MarketData,
                                                                                                        int]:
    """(the env's market for the test period, the absolute index of its first bar): bars from ``window - 1`` before
    the first test bar to the last one, so the first decision falls on the test period's first bar."""
    ts = market.ts
    idx = np.flatnonzero((ts >= _ns(test_start)) & (ts < _ns(test_end) + _DAY_NS))
    if idx.size < 3:
        raise ValueError(f"split.test: {idx.size} bars between {test_start} and {test_end}; need at least 3")
    lo = int(idx[0]) - (window - 1)
    if lo < 0:
        raise ValueError(f"split.test: the look-back window of {window} bars starts before the data")
    return market.slice(lo, int(idx[-1]) + 1), lo


# ------------------------------------------------------------------------------------------- stepping


def _step_path(cfg: RLEnvConfig, market: MarketData, decide: Callable[[np.ndarray, int, np.ndarray, float],
                                                                           np.ndarray]) -> tuple[np.ndarray, ...]:
    """One whole-period episode; ``decide(obs, t, shares, equity)`` gives the action at env bar t."""
    env = PortfolioEnv(replace(cfg, episode_length=None, data=None), market=market)
    obs, info = env.reset(seed=0)
    t = int(info["bar"])
    eq = [float(info["equity"])]
    ts = [int(market.ts[t])]
    qty = np.zeros(market.n_assets)
    turnover, costs = [], 0.0
    done = False
    while not done:
        a = np.asarray(decide(obs, t, qty, eq[-1]), dtype=np.float64).reshape(env.action_space.shape)
        obs, _, term, trunc, info = env.step(a)
        qty = qty + np.asarray(info["fill_qty"]) + np.asarray(info["rest_fill_qty"])
        t += 1
        eq.append(float(info["equity"]))
        ts.append(int(market.ts[t]))
        turnover.append(float(info["turnover"]))
        costs += float(info["costs"])
        done = bool(term or trunc)
    return np.asarray(ts, dtype=np.int64), np.asarray(eq), np.asarray(turnover), np.asarray(costs)


def run_agent(act: Callable[[np.ndarray], np.ndarray], cfg: RLEnvConfig, market: MarketData, name: str = "agent",
              seed: int | None = None) -> StrategyPath:
    """The policy ``act`` ((1, obs_dim) -> (1, act_dim)), deterministic, over the whole of `market`."""
    ts, eq, to, c = _step_path(cfg, market, lambda obs, t, q, e: act(obs[None, :]))
    return StrategyPath(name, "agent", ts, eq, to, float(c), seed)


def run_weights(rule: WeightRule, cfg: RLEnvConfig, market: MarketData, name: str, *, history: MarketData | None = None,
                offset: int = 0) -> StrategyPath:
    """A target-weight rule through the same environment (``clip`` action mode, action = w / max_weight).

    `history` is the whole market the rule may look back on (default `market`), `offset` the absolute index of
    `market`'s first bar in it; the rule gets only the closes up to the decision bar. ``None`` from the rule holds
    the current shares."""
    hist = market if history is None else history
    mw = cfg.max_weight
    ccfg = replace(cfg, action_mode="clip")

    def decide(obs: np.ndarray, t: int, qty: np.ndarray, equity: float) -> np.ndarray:
        k = offset + t
        w = rule(k, hist.close[: k + 1])
        if w is None:
            w = qty * market.close[t] / equity * _HOLD
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (market.n_assets,) or not np.isfinite(w).all():
            raise ValueError(f"{name}: weights at bar {k} must be {market.n_assets} finite numbers, got {w!r}")
        return w / mw

    ts, eq, to, c = _step_path(ccfg, market, decide)
    notes = dict(getattr(rule, "notes", {}) or {})
    return StrategyPath(name, "baseline", ts, eq, to, float(c), None, notes)


# ------------------------------------------------------------------------------------------- baselines


def estimation_returns(closes: np.ndarray, window: int) -> np.ndarray:
    """Simple returns of the last `window` bars BEFORE the decision bar: ``closes`` ends with the decision bar's
    close, which is dropped (data at or after the rebalance bar never enter the estimate)."""
    c = np.asarray(closes, dtype=np.float64)[:-1]
    c = c[-(window + 1):]
    return c[1:] / c[:-1] - 1.0


class _Scheduled:
    """Rebalance every `every` bars from `first` (absolute index); hold in between."""

    def __init__(self, first: int, every: int) -> None:
        self.first, self.every = first, every
        self.notes: dict[str, Any] = {}

    def due(self, t: int) -> bool:
        return t >= self.first and (t - self.first) % self.every == 0

    def __call__(self, t: int, closes: np.ndarray) -> np.ndarray | None:
        return self.weights(t, closes) if self.due(t) else None

    def weights(self, t: int, closes: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _EqualWeight(_Scheduled):
    def weights(self, t: int, closes: np.ndarray) -> np.ndarray:
        a = closes.shape[1]
        return np.full(a, 1.0 / a)


class _Optimised(_Scheduled):
    def __init__(self, first: int, every: int, objective: str, window: int, upper: float, ppy: float) -> None:
        super().__init__(first, every)
        self.objective, self.window, self.upper, self.ppy = objective, window, upper, ppy
        self.notes = {"rebalances": 0, "fallbacks": 0, "estimation_window": window}

    def weights(self, t: int, closes: np.ndarray) -> np.ndarray:
        from tradesys.quant.portfolio import InfeasiblePortfolioError, PortfolioConstraints, optimize_portfolio

        r = estimation_returns(closes, self.window)
        if r.shape[0] < 2:
            raise ValueError(f"estimation_window: {r.shape[0]} returns before bar {t}; need at least 2")
        a = r.shape[1]
        cons = PortfolioConstraints(long_only=True, budget=1.0, upper=max(self.upper, 1.0 / a))
        self.notes["rebalances"] += 1
        try:
            res = optimize_portfolio(r, self.objective, constraints=cons, periods_per_year=self.ppy)  # type: ignore
        except (InfeasiblePortfolioError, RuntimeError):
            if self.objective != "max_sharpe":
                raise
            self.notes["fallbacks"] += 1
            res = optimize_portfolio(r, "min_variance", constraints=cons, periods_per_year=self.ppy)
        w = np.clip(res.weights.to_numpy(dtype=np.float64), 0.0, None)
        return w / w.sum() if w.sum() > 1.0 else w


def min_variance_rule(first: int, every: int, window: int, upper: float = 1.0, ppy: float = 252.0) -> WeightRule:
    """Long-only minimum variance, refitted every `every` bars from `first` on the `window` returns before."""
    return _Optimised(first, every, "min_variance", window, upper, ppy)


def max_sharpe_rule(first: int, every: int, window: int, upper: float = 1.0, ppy: float = 252.0) -> WeightRule:
    """Long-only maximum Sharpe (zero risk-free rate), as `min_variance_rule`."""
    return _Optimised(first, every, "max_sharpe", window, upper, ppy)


def baseline_rules(cfg: RLEnvConfig, history: MarketData, first: int, s: EvalSettings) -> dict[str, WeightRule]:
    """The baselines' weight rules for a test period whose first decision is absolute bar `first` of `history`."""
    if first < s.estimation_window + 1 and ("min_variance" in s.baselines or "max_sharpe" in s.baselines):
        raise ValueError(f"estimation_window: {s.estimation_window} bars of returns before the test period are "
                         f"needed, the data hold {first - 1}; load more history or shorten the window")  # fmt: skip
    a = history.n_assets
    rules: dict[str, WeightRule] = {}
    for name in s.baselines:
        if name == "buy_and_hold":
            rules[name] = _EqualWeight(first, 10**12)
        elif name == "equal_weight":
            rules[name] = _EqualWeight(first, s.rebalance_every)
        elif name == "trend":
            from tradesys.backtest.vectorized import trend_target_weights
            from tradesys.config import StrategyConfig

            sc = StrategyConfig(allow_short=cfg.action_mode == "clip")
            w_all = np.nan_to_num(trend_target_weights(history.close, sc, s.periods_per_year, cfg.risk, a))

            def trend(t: int, closes: np.ndarray, w_all: np.ndarray = w_all) -> np.ndarray:
                return w_all[t]  # causal: the strategy's weights at bar t use closes up to t (its own rule)

            rules[name] = trend
        elif name == "min_variance":
            rules[name] = min_variance_rule(first, s.rebalance_every, s.estimation_window, cfg.max_weight,
                                            s.periods_per_year)  # fmt: skip
        elif name == "max_sharpe":
            rules[name] = max_sharpe_rule(first, s.rebalance_every, s.estimation_window, cfg.max_weight,
                                          s.periods_per_year)  # fmt: skip
    return rules


# ------------------------------------------------------------------------------------------- statistics


def sharpe_annual(r: np.ndarray, ppy: float) -> np.ndarray:
    """Annualised Sharpe of each column (mean / std ddof=1 x sqrt(ppy)); NaN for a flat column."""
    x = np.asarray(r, dtype=np.float64)
    sd = x.std(axis=-2 if x.ndim > 1 else 0, ddof=1)
    mu = x.mean(axis=-2 if x.ndim > 1 else 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, mu / sd * math.sqrt(ppy), np.nan)


def bootstrap_indices(n: int, reps: int, block: float, seed: int) -> np.ndarray:
    """(reps, n) resampled row indices of a stationary bootstrap with mean block length `block` (arch, seeded)."""
    from arch.bootstrap import StationaryBootstrap

    bs = StationaryBootstrap(block, np.zeros(n), seed=seed)
    return np.stack([bs.update_indices() for _ in range(reps)])


def _block_length(r: np.ndarray) -> float:
    from arch.bootstrap import optimal_block_length

    b = [float(optimal_block_length(r[:, j])["stationary"].iloc[0]) for j in range(r.shape[1]) if np.ptp(r[:, j]) > 0]
    return max(1.0, float(np.median(b))) if b else 1.0


def _psr(r: np.ndarray, n_trials: int, variance: float) -> tuple[float | None, float | None]:
    from tradesys.backtest.overfit import deflated_sharpe_ratio, return_moments

    if r.size < 3 or np.ptp(r) == 0:
        return None, None
    sr, sk, ku, n = return_moments(r)
    try:
        d = deflated_sharpe_ratio(sr, n, max(n_trials, 1), max(variance, 0.0), sk, ku)
    except ValueError:
        return None, None
    return d.psr, d.dsr


def _summary_row(p: StrategyPath, ppy: float, psr: float | None, dsr: float | None, ci: tuple[float, float]) -> dict:
    eq = p.equity
    peak = np.maximum.accumulate(eq)
    sr = sharpe_annual(p.returns, ppy)
    return {
        "name": p.name, "kind": p.kind, "seed": p.seed,
        "sharpe": float(sr) if np.isfinite(sr) else None, "sharpe_ci": [ci[0], ci[1]],
        "psr": psr, "dsr": dsr, "max_drawdown": float(np.max(1.0 - eq / peak)),
        "turnover": float(np.mean(p.turnover) * ppy), "costs": p.costs / float(eq[0]),
        "total_return": float(eq[-1] / eq[0] - 1.0), "n_steps": int(p.returns.size), "notes": p.notes,
    }  # fmt: skip


def _quantiles(x: np.ndarray, conf: float) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(x, [(1 - conf) / 2, 1 - (1 - conf) / 2])
    return float(lo), float(hi)


def evaluate_strategies(
    agents: Sequence[StrategyPath],
    baselines: Sequence[StrategyPath],
    s: EvalSettings = EvalSettings(),
    *,
    n_trials: int | None = None,
    trials_variance: float | None = None,
    trials_source: str = "",
) -> dict[str, Any]:
    """Statistics, intervals and verdicts for paths over the same bars (module docstring). `n_trials`: the
    configurations the agent was selected from (default: one per seed); `trials_variance`: the variance of their
    per-bar Sharpe estimates (default: of the seeds' per-bar test Sharpes)."""
    if not agents:
        raise ValueError("agents: need at least one agent path")
    paths = [*agents, *baselines]
    ts0 = paths[0].ts
    for p in paths[1:]:
        if p.ts.shape != ts0.shape or not np.array_equal(p.ts, ts0):
            raise ValueError(f"paths: {p.name!r} does not cover the same bars as {paths[0].name!r}")
    ppy = s.periods_per_year
    r = np.stack([p.returns for p in paths], axis=1)  # (T, k)
    n_obs, k = r.shape
    na = len(agents)
    block = float(s.block_size) if s.block_size is not None else _block_length(r)
    idx = bootstrap_indices(n_obs, s.bootstrap_reps, block, s.seed)
    boot = sharpe_annual(r[idx], ppy)  # (reps, k)
    agent_mean_boot = np.nanmean(boot[:, :na], axis=1) if na else None

    sr_pp = sharpe_annual(r, 1.0)
    if n_trials is None:
        n_trials, trials_source = na, trials_source or "one per seed"
    if trials_variance is None:
        fin = sr_pp[:na][np.isfinite(sr_pp[:na])]
        trials_variance = float(np.var(fin, ddof=1)) if fin.size > 1 else 0.0
        trials_source = (trials_source + "; " if trials_source else "") + "variance of the seeds' test Sharpes"
    rows = []
    for j, p in enumerate(paths):
        psr, dsr = _psr(r[:, j], n_trials if p.kind == "agent" else 1, trials_variance if p.kind == "agent" else 0.0)
        rows.append(_summary_row(p, ppy, psr, dsr, _quantiles(boot[:, j], s.confidence)))
    agent_rows = rows[:na]

    def mean_of(key: str) -> float | None:
        v = [x[key] for x in agent_rows if x[key] is not None]
        return float(np.mean(v)) if v else None

    agent = {
        "name": f"agent (mean of {na} seeds)", "kind": "agent_mean", "seed": None,
        "sharpe": mean_of("sharpe"), "sharpe_ci": list(_quantiles(agent_mean_boot, s.confidence)),
        **{key: mean_of(key) for key in ("psr", "dsr", "max_drawdown", "turnover", "costs", "total_return")},
        "n_steps": n_obs, "notes": {},
    }  # fmt: skip
    verdicts = []
    for j in range(na, k):
        name = paths[j].name
        diff = agent_mean_boot - boot[:, j]
        lo, hi = _quantiles(diff, s.confidence)
        point = (agent["sharpe"] - rows[j]["sharpe"]) if (agent["sharpe"] is not None and rows[j]["sharpe"]
                                                          is not None) else None  # fmt: skip
        beats = bool(math.isfinite(lo) and lo > 0)
        ahead = sum(1 for x in agent_rows if x["sharpe"] is not None and rows[j]["sharpe"] is not None
                    and x["sharpe"] > rows[j]["sharpe"])  # fmt: skip
        word = "beats" if beats else "does not beat"
        pct = round(s.confidence * 100)
        text = (f"The agent {word} {name}: Sharpe difference {_f(point, '+.2f')} ({pct}% CI {_f(lo, '+.2f')} to "
                f"{_f(hi, '+.2f')}); {ahead} of {na} seeds have the higher Sharpe.")  # fmt: skip
        verdicts.append({"baseline": name, "beats": beats, "sharpe_diff": point, "ci": [lo, hi],
                         "seeds_ahead": ahead, "text": text})  # fmt: skip
    beaten = [v["baseline"] for v in verdicts if v["beats"]]
    if verdicts and len(beaten) == len(verdicts):
        conclusion = f"The agent beats all {len(verdicts)} baselines on the test period."
    elif not beaten:
        conclusion = f"The agent does not beat any of the {len(verdicts)} baselines on the test period."
    else:
        missed = [v["baseline"] for v in verdicts if not v["beats"]]
        conclusion = (f"The agent beats {', '.join(beaten)} and does not beat {', '.join(missed)} on the test "
                      "period.")  # fmt: skip
    return {
        "first_decision": _iso(int(ts0[0])), "last_bar": _iso(int(ts0[-1])), "n_steps": n_obs,
        "n_seeds": na, "n_trials": int(n_trials), "trials_variance": float(trials_variance),
        "trials_source": trials_source, "bootstrap": {"method": "stationary (Politis-Romano), percentile",
                                                      "reps": s.bootstrap_reps, "mean_block": block,
                                                      "confidence": s.confidence, "seed": s.seed},
        "settings": asdict(s), "strategies": rows, "agent": agent, "verdicts": verdicts, "conclusion": conclusion,
        "equity": {p.name: {"ts": [_iso(int(x)) for x in p.ts], "equity": p.equity.tolist()} for p in paths},
    }  # fmt: skip


def _f(v: float | None, spec: str) -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, spec)


# ------------------------------------------------------------------------------------------- output


TABLE_COLUMNS = ("strategy", "Sharpe", "CI", "PSR", "DSR", "max DD", "turnover/yr", "costs", "total return")


def table_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """The table's rows as text: the seeds, the agent's mean, then the baselines."""
    rows = []
    strategies = list(report["strategies"])
    agents = [x for x in strategies if x["kind"] == "agent"]
    ordered = [*agents, report["agent"], *[x for x in strategies if x["kind"] != "agent"]]
    for x in ordered:
        lo, hi = x["sharpe_ci"]
        rows.append([x["name"], _f(x["sharpe"], ".2f"), f"[{_f(lo, '.2f')}, {_f(hi, '.2f')}]", _f(x["psr"], ".3f"),
                     _f(x["dsr"], ".3f"), _f(x["max_drawdown"], ".1%"), _f(x["turnover"], ".2f"),
                     _f(x["costs"], ".2%"), _f(x["total_return"], ".1%")])  # fmt: skip
    return rows


def markdown_table(report: Mapping[str, Any]) -> str:
    """The table, the verdicts and the conclusion as markdown."""
    pct = round(report["bootstrap"]["confidence"] * 100)
    head = [c if c != "CI" else f"{pct}% CI" for c in TABLE_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(report)]
    lines.append("")
    lines += [f"- {v['text']}" for v in report["verdicts"]]
    lines += ["", f"**{report['conclusion']}**", ""]
    return "\n".join(lines)


def plot_equity(report: Mapping[str, Any], path: str | Path) -> Path:
    """Equity curves (growth of 1) of every strategy on the test period, as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
    kinds = {x["name"]: x["kind"] for x in report["strategies"]}
    first_agent = True
    colours = iter(["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan"] * 9)
    for name, curve in report["equity"].items():
        t = np.array(curve["ts"], dtype="datetime64[D]")
        e = np.asarray(curve["equity"], dtype=float)
        if kinds.get(name) == "agent":
            ax.plot(t, e / e[0], color="tab:red", lw=0.9, alpha=0.6, label="agent (each seed)" if first_agent else None)
            first_agent = False
        else:
            ax.plot(t, e / e[0], lw=1.4, label=name, color=next(colours))
    ax.set_title(f"Test period {report['first_decision']} .. {report['last_bar']}: equity net of costs")
    ax.set_ylabel("growth of 1")
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------- runs


def _same(runs: Sequence[Mapping[str, Any]], key: str) -> Any:
    first = runs[0].get(key)
    for r in runs[1:]:
        if r.get(key) != first:
            raise ValueError(f"runs: run {r.get('run_id')!r} has a different {key} than {runs[0].get('run_id')!r}")
    return first


def env_from_summary(summary: Mapping[str, Any]) -> RLEnvConfig:
    """The environment a training run used (its summary's ``env``)."""
    return RLEnvConfig.from_mapping(dict(summary["env"]))


def evaluate_runs(
    runs: Sequence[Mapping[str, Any]],
    settings: EvalSettings = EvalSettings(),
    *,
    market: MarketData | None = None,
    policies: Sequence[Callable[[np.ndarray], np.ndarray]] | None = None,
    n_trials: int | None = None,
    trials_variance: float | None = None,
    selection_sharpes: Sequence[float] | None = None,
    min_seeds: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate the selected policies of training runs (their ``tradesys rl train`` summaries) on the test period.

    The runs must share the split, symbols and environment and differ in seed (at least `min_seeds` seeds).
    `market`: bars from the train period's start through the test period (default: loaded from the runs' data
    source). `policies`: one callable per run (default: each run's ``best_checkpoint``, `RLPolicy`). `n_trials`
    default: every checkpoint the runs scored on the selection period; `selection_sharpes` (annualised, one per
    scored checkpoint, e.g. MLflow's ``sel_sharpe`` history) give the trials' variance."""
    say = progress or (lambda _m: None)
    if len(runs) < 1:
        raise ValueError("runs: need at least one training run")
    seeds = [int(r.get("seed", (r.get("settings") or {}).get("seed", -1))) for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"runs: repeated training seed in {seeds}; each run must use its own seed")
    if len(seeds) < min_seeds:
        raise ValueError(f"runs: {len(seeds)} training seeds given, at least {min_seeds} are needed")
    split = _same(runs, "split")
    symbols = _same(runs, "symbols")
    env_d = _same(runs, "env")
    cfg = RLEnvConfig.from_mapping(dict(env_d))
    test_start = date.fromisoformat(split["test_start"])
    for r in runs:
        used = r.get("used") or {}
        last = used.get("select_last_bar")
        if last is not None and date.fromisoformat(last) >= test_start:
            raise ValueError(f"runs: run {r.get('run_id')!r} saw bars up to {last}, inside the test period")
    if market is None:
        from tradesys.rl.market import market_from_source

        if cfg.data is None:
            raise ValueError("runs: the runs' environment names no data source; pass the market")
        say("loading the data through the test period")
        data = cfg.data.model_copy(update={"start": date.fromisoformat(split["train_start"]),
                                           "end": date.fromisoformat(split["test_end"])})  # fmt: skip
        market = market_from_source(data, cfg.features)
    if list(market.symbols) != list(symbols):
        raise ValueError(f"market: symbols {list(market.symbols)} differ from the runs' {list(symbols)}")
    test_m, first = period_slice(market, split["test_start"], split["test_end"], cfg.window)
    first_decision = first + cfg.window - 1
    if policies is None:
        from tradesys.rl.train import RLPolicy

        policies = []
        for r in runs:
            ck = r.get("best_checkpoint")
            if not ck:
                raise ValueError(f"runs: run {r.get('run_id')!r} has no best_checkpoint")
            policies.append(RLPolicy.from_checkpoint(ck))
    if len(policies) != len(runs):
        raise ValueError(f"policies: {len(policies)} given for {len(runs)} runs")
    agents = []
    for seed, pol in sorted(zip(seeds, policies, strict=True), key=lambda x: x[0]):
        say(f"agent seed {seed}")
        agents.append(run_agent(pol, cfg, test_m, name=f"agent seed {seed}", seed=seed))
    rules = baseline_rules(cfg, market, first_decision, settings)
    base = []
    for name, rule in rules.items():
        say(f"baseline {name}")
        base.append(run_weights(rule, cfg, test_m, name, history=market, offset=first))
    source = ""
    if n_trials is None:
        counts = [len(r.get("checkpoints") or []) for r in runs]
        if all(c > 0 for c in counts):
            n_trials = int(sum(counts))
            source = f"{n_trials} checkpoints scored on the selection period in {len(runs)} runs"
    else:
        source = f"{n_trials} configurations (given)"
    if trials_variance is None and selection_sharpes is not None:
        v = np.asarray([x for x in selection_sharpes if x is not None and math.isfinite(x)], dtype=float)
        if v.size > 1:
            trials_variance = float(np.var(v / math.sqrt(settings.periods_per_year), ddof=1))
            source += f"; variance of {v.size} selection-period Sharpes"
    say("statistics")
    report = evaluate_strategies(agents, base, settings, n_trials=n_trials, trials_variance=trials_variance,
                                 trials_source=source)  # fmt: skip
    report.update({"split": dict(split), "symbols": list(symbols), "run_ids": [r.get("run_id") for r in runs],
                   "seeds": sorted(seeds), "env": env_d})  # fmt: skip
    return report
