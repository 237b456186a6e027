"""Seeded synthetic intraday bars: geometric Brownian motion with Merton jumps and a U-shaped volume curve.

Why synthetic data: it runs anywhere with no files, its true parameters are known (so tests can check
estimators against them), and intraday bar sizes exercise the live loop at a realistic pace.

Model, per symbol i, in trading time (252 sessions a year, 6.5 hours each, overnight carries no variance):

    d log S = (mu_i - lambda * kappa - sigma_i^2 / 2) dt + sigma_i dW_i + dJ,   kappa = E[e^Y] - 1

with dW correlated across symbols through a Cholesky factor of `correlation`, and J a compound Poisson process
(intensity `jump_intensity` per year, log-jump sizes Y ~ Normal(`jump_mean`, `jump_std`)) independent per
symbol. The `- lambda * kappa` term keeps the expected price growth at mu. Each bar is simulated in
`substeps` sub-steps: open is the previous close, close the last sub-step, high/low the extremes of open and
all sub-steps, so low <= open, close <= high by construction.

Sessions are 14:30-21:00 UTC (09:30-16:00 New York in winter), weekdays only; a bar is stamped at its end.
Volume = `volume_base` * U(t) * lognormal noise (mean 1), with U(t) = 1 + depth * (2x - 1)^2 normalised to mean
1 over the session (x = position within the session), so the open and close trade the most.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np

from tradesys.data.historical import DateLike, TableSource, bars_table

SESSION_OPEN_UTC = time(14, 30)
SESSION_SECONDS = 23_400  # 6.5 hours
TRADING_DAYS_PER_YEAR = 252
DEFAULT_SYMBOLS = ("ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO")
DEFAULT_START = date(2024, 1, 2)

FloatOrSeq = float | Sequence[float]


def _fail(name: str, why: str, value: Any) -> None:
    raise ValueError(f"{name}: {why} (got {value!r})")


def _per_symbol(name: str, value: FloatOrSeq, n: int) -> tuple[float, ...]:
    """A scalar broadcast to every symbol, or one value per symbol."""
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        out = (float(value),) * n
    else:
        try:
            out = tuple(float(v) for v in value)  # type: ignore[union-attr]
        except TypeError:
            _fail(name, "must be a number or one number per symbol", value)
        if len(out) != n:
            _fail(name, f"needs {n} values, one per symbol", value)
    if not all(math.isfinite(v) for v in out):
        _fail(name, "must be finite", value)
    return out


@dataclass(frozen=True)
class SyntheticParams:
    """Every knob of the synthetic market. Annualised rates are per 252 sessions of 6.5 hours.

    `mu`, `sigma` and `start_price` take a number or one value per symbol; `correlation` a number (the same
    for every pair) or a full matrix. After validation these are stored as tuples.
    """

    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    days: int = 5
    bar_seconds: int = 60
    seed: int = 7
    start_price: FloatOrSeq = 100.0
    mu: FloatOrSeq = 0.05  # annualised drift
    sigma: FloatOrSeq = 0.20  # annualised diffusion volatility
    correlation: float | Sequence[Sequence[float]] = 0.3
    jump_intensity: float = 8.0  # expected jumps per symbol per year
    jump_mean: float = -0.002  # mean log-jump size
    jump_std: float = 0.01  # std of log-jump size
    substeps: int = 8  # sub-steps per bar for high/low
    volume_base: float = 50_000.0  # mean shares per bar
    volume_u_depth: float = 2.0  # open/close volume ~ (1 + depth) x midday before normalisation
    volume_noise: float = 0.35  # sigma of the lognormal volume noise
    start_date: date = DEFAULT_START  # first session: the first weekday on or after this date
    _chol: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sym = self.symbols
        if isinstance(sym, str):
            _fail("symbols", "must be a list of names, not a string", sym)
        sym = tuple(sym)
        if not sym or not all(isinstance(s, str) and s for s in sym):
            _fail("symbols", "must be a non-empty list of non-empty names", sym)
        if len(set(sym)) != len(sym):
            _fail("symbols", "must not repeat a name", sym)
        n = len(sym)
        for name in ("days", "bar_seconds", "substeps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v <= 0:
                _fail(name, "must be an integer > 0", v)
        if self.bar_seconds > SESSION_SECONDS:
            _fail("bar_seconds", f"must be at most one session ({SESSION_SECONDS} s)", self.bar_seconds)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            _fail("seed", "must be an integer", self.seed)
        start_price = _per_symbol("start_price", self.start_price, n)
        if min(start_price) <= 0:
            _fail("start_price", "must be > 0", self.start_price)
        mu = _per_symbol("mu", self.mu, n)
        sigma = _per_symbol("sigma", self.sigma, n)
        if min(sigma) < 0:
            _fail("sigma", "must be >= 0", self.sigma)
        for name, lo in (("jump_intensity", 0.0), ("jump_std", 0.0), ("volume_u_depth", 0.0), ("volume_noise", 0.0)):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < lo:
                _fail(name, f"must be a finite number >= {lo:g}", v)
        if not isinstance(self.jump_mean, int | float) or not math.isfinite(self.jump_mean):
            _fail("jump_mean", "must be a finite number", self.jump_mean)
        vb = self.volume_base
        if not isinstance(vb, int | float) or not math.isfinite(vb) or vb <= 0:
            _fail("volume_base", "must be a finite number > 0", self.volume_base)
        if not isinstance(self.start_date, date):
            _fail("start_date", "must be a date", self.start_date)
        corr, chol = _correlation(self.correlation, n)
        set_ = object.__setattr__  # frozen: normalise in place once
        set_(self, "symbols", sym)
        set_(self, "start_price", start_price)
        set_(self, "mu", mu)
        set_(self, "sigma", sigma)
        set_(self, "correlation", corr)
        set_(self, "_chol", chol)
        set_(self, "start_date", self.start_date.date() if isinstance(self.start_date, datetime) else self.start_date)

    @property
    def bars_per_session(self) -> int:
        return SESSION_SECONDS // self.bar_seconds

    @property
    def bars_per_year(self) -> float:
        """Annualisation factor for bar returns: trading time only, as the model is defined."""
        return TRADING_DAYS_PER_YEAR * SESSION_SECONDS / self.bar_seconds

    def sessions(self) -> list[date]:
        """The session dates: `days` weekdays from `start_date` on."""
        out, d = [], self.start_date
        while len(out) < self.days:
            if d.weekday() < 5:
                out.append(d)
            d += timedelta(days=1)
        return out


def _correlation(value: float | Sequence[Sequence[float]], n: int) -> tuple[tuple[tuple[float, ...], ...], np.ndarray]:
    """Validate a correlation (scalar or matrix); return it as nested tuples and its Cholesky factor."""
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        rho = float(value)
        if n > 1 and not (-1.0 / (n - 1) < rho < 1.0):
            _fail("correlation", f"a common correlation for {n} symbols must lie in (-1/{n - 1}, 1)", value)
        mat = np.full((n, n), rho)
        np.fill_diagonal(mat, 1.0)
    else:
        try:
            mat = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            _fail("correlation", "must be a number or an n x n matrix", value)
        if mat.shape != (n, n):
            _fail("correlation", f"must be a {n} x {n} matrix", value)
        if not np.all(np.isfinite(mat)) or not np.allclose(mat, mat.T) or not np.allclose(np.diag(mat), 1.0):
            _fail("correlation", "must be symmetric with a unit diagonal", value)
        if np.any(np.abs(mat) > 1.0):
            _fail("correlation", "entries must lie in [-1, 1]", value)
    try:
        chol = np.linalg.cholesky(mat)
    except np.linalg.LinAlgError:
        _fail("correlation", "must be positive definite", value)
    return tuple(tuple(float(x) for x in row) for row in mat), chol


def simulate_bars(p: SyntheticParams) -> dict[str, np.ndarray]:
    """Long columns (ts ns, symbol, open, high, low, close, volume) for the whole run; deterministic in p.seed.

    Generated a session at a time from one RNG stream, so memory is bounded by one session of sub-steps.
    """
    rng = np.random.default_rng(p.seed)
    n, nb, ns = len(p.symbols), p.bars_per_session, p.substeps
    mu, sigma = np.asarray(p.mu), np.asarray(p.sigma)
    dt = p.bar_seconds / (TRADING_DAYS_PER_YEAR * SESSION_SECONDS) / ns  # years per sub-step
    lam = p.jump_intensity
    kappa = math.exp(p.jump_mean + 0.5 * p.jump_std**2) - 1.0
    drift = (mu - lam * kappa - 0.5 * sigma**2) * dt
    scale = sigma * math.sqrt(dt)

    x = (np.arange(nb) + 0.5) / nb
    u_shape = 1.0 + p.volume_u_depth * (2.0 * x - 1.0) ** 2
    u_shape /= u_shape.mean()

    bar_ends = (np.arange(1, nb + 1, dtype=np.int64) * p.bar_seconds) * 10**9
    ts_parts, o_parts, h_parts, l_parts, c_parts, v_parts = [], [], [], [], [], []
    close_price = np.asarray(p.start_price)  # in price space, so the first open is exactly start_price
    log_close = np.log(close_price)
    for day in p.sessions():
        open_ns = int(datetime.combine(day, SESSION_OPEN_UTC, tzinfo=UTC).timestamp()) * 10**9
        eps = rng.standard_normal((nb * ns, n)) @ p._chol.T
        steps = drift + scale * eps
        if lam > 0:
            counts = rng.poisson(lam * dt, size=(nb * ns, n))
            hit = counts > 0
            if hit.any():
                k = counts[hit]
                steps[hit] += k * p.jump_mean + np.sqrt(k) * p.jump_std * rng.standard_normal(k.shape)
        path = (log_close + np.cumsum(steps, axis=0)).reshape(nb, ns, n)
        close = path[:, -1, :]
        high = np.maximum(np.vstack([log_close[None, :], close[:-1]]), path.max(axis=1))
        low = np.minimum(np.vstack([log_close[None, :], close[:-1]]), path.min(axis=1))
        close_px = np.exp(close)
        open_px = np.vstack([close_price[None, :], close_px[:-1]])  # open = previous close, bit for bit
        log_close, close_price = close[-1], close_px[-1]
        noise = np.exp(p.volume_noise * rng.standard_normal((nb, n)) - 0.5 * p.volume_noise**2)
        volume = np.maximum(np.round(p.volume_base * u_shape[:, None] * noise), 1.0)

        ts_parts.append(np.repeat(open_ns + bar_ends, n))
        o_parts.append(open_px.ravel())
        h_parts.append(np.exp(high).ravel())
        l_parts.append(np.exp(low).ravel())
        c_parts.append(close_px.ravel())
        v_parts.append(volume.ravel())

    n_rows = nb * n * p.days
    close_all = np.concatenate(c_parts)
    return {
        "ts": np.concatenate(ts_parts),
        "symbol": np.tile(np.asarray(p.symbols, dtype=object), n_rows // n),
        "open": np.concatenate(o_parts),
        # the first open is start_price, not exp(log(start_price)): widen high/low by that ulp if needed
        "high": np.maximum.reduce([np.concatenate(h_parts), np.concatenate(o_parts), close_all]),
        "low": np.minimum.reduce([np.concatenate(l_parts), np.concatenate(o_parts), close_all]),
        "close": close_all,
        "volume": np.concatenate(v_parts),
    }


class SyntheticIntradaySource(TableSource):
    """Synthetic intraday bars (see the module docstring); same parameters and seed -> identical data.

    `model` takes any other `SyntheticParams` field (mu, sigma, correlation, jump_intensity, ...). `start` is
    the first session date (default 2024-01-02); `end` optionally truncates the generated sessions.
    """

    name = "synthetic"

    def __init__(
        self,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        days: int = 5,
        bar_seconds: int = 60,
        seed: int = 7,
        start_price: FloatOrSeq = 100.0,
        *,
        start: date | None = None,
        end: DateLike | None = None,
        **model: Any,
    ) -> None:
        if start is not None:
            model["start_date"] = start
        self.params = SyntheticParams(
            symbols=tuple(symbols) if not isinstance(symbols, str) else symbols,  # type: ignore[arg-type]
            days=days,
            bar_seconds=bar_seconds,
            seed=seed,
            start_price=start_price,
            **model,
        )
        super().__init__(bars_table(simulate_bars(self.params)), symbols=self.params.symbols, end=end)

    @property
    def bars_per_year(self) -> float:
        return self.params.bars_per_year
