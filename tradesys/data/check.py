"""Up-front validation of the data-dependent settings, without starting Ray.

`tradesys config`, `backtest`, `live` and `demo` call `check_data` before anything starts, so an unknown symbol
or an empty date window is one line naming the field instead of a traceback (or an actor dying later).
"""

from __future__ import annotations

from tradesys.config import ConfigError, DataConfig


def available_symbols(source: str) -> list[str] | None:
    """The symbols a packaged real source has, sorted; None for a source that takes any name (synthetic)."""
    if source == "sp500_stocks":
        from tradesys.data.historical import load_sp500_closes

        return sorted(str(c) for c in load_sp500_closes().columns)
    if source == "us_indices":
        from tradesys.data.historical import load_us_indices_frames

        return sorted(load_us_indices_frames())
    return None


def _check_symbols(cfg: DataConfig) -> None:
    if cfg.symbols is None:
        return
    if not cfg.symbols:
        raise ConfigError(f"data.symbols: empty list for source {cfg.source} (omit it for every symbol)")
    blank = [s for s in cfg.symbols if not s.strip()]
    if blank:
        raise ConfigError(f"data.symbols: empty symbol name in {cfg.symbols!r}")
    have = available_symbols(cfg.source)
    if have is None:
        return
    unknown = [s for s in dict.fromkeys(cfg.symbols) if s not in set(have)]
    if unknown:
        names = ", ".join(repr(s) for s in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(
            f"data.symbols: unknown symbol{plural} {names} for source {cfg.source} (have: {', '.join(have)})"
        )


def check_data(cfg: DataConfig) -> None:
    """Raise ConfigError (message starting with the field) if the data settings cannot produce bars.

    Checks the symbols against the source, then builds the source once (cheap: packaged tables are cached per
    process, synthetic data is a few sessions) so that an empty date window or any other source error is
    reported here, naming the field, rather than mid-run.
    """
    _check_symbols(cfg)
    if cfg.source == "alpaca":  # a live stream: no bars to count ahead, but the keys must be in the environment
        from tradesys.data.alpaca import _credentials

        try:
            _credentials()
        except ValueError as exc:
            raise ConfigError(f"data.source: alpaca needs {exc}") from None
        return
    from tradesys.data import make_source

    try:
        source = make_source(cfg)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(_field_message(cfg, str(exc))) from None
    if len(source) == 0:
        raise ConfigError(f"data.start: no bars for source {cfg.source} between {cfg.start} and {cfg.end}")


def _field_message(cfg: DataConfig, msg: str) -> str:
    """A source's own error, prefixed with the setting it is about (the window, else the source)."""
    prefix = f"{cfg.source}: "
    body = msg.removeprefix(prefix)
    if "no bars between" in body or ("start" in body and "end" in body):
        field = "data.end" if cfg.source == "synthetic" else "data.start"  # synthetic: end truncates the sessions
        return f"{field}: {body} (source {cfg.source})"
    if "symbol" in body:
        return f"data.symbols: {body} (source {cfg.source})"
    return f"data.source: {cfg.source}: {body}"
