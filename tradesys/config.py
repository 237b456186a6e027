"""Typed configuration. Bad values fail fast with the field named: `risk.max_order_qty: must be > 0`.

Configuration comes from defaults, then an optional TOML file, then `section.field=value` overrides
(the CLI's `--set`). Secrets never live here: they are read from the environment where they are used.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the reason."""


class DataError(ConfigError):
    """A data source failed during a run; the message names the data setting behind it (`data.source: ...`)."""


# userinfo "user:password@" right after "scheme://"; the password runs to the first "@" (RFC 3986 forbids a raw
# "@" there), so a stray "/" in a password is still masked rather than leaked
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s'\"]*):[^@\s'\"]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)[^&#\s'\"]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Mask passwords in a URL (or in any text holding URLs) before it is printed or logged.

    `postgresql://user:s3cret@host/db` -> `postgresql://user:***@host/db`; a `?password=` query value is masked
    too. Text without credentials comes back unchanged.
    """
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", url))


def save_run_config(cfg: TradesysConfig, folder: str | Path) -> Path:
    """Write the run's effective configuration (passwords masked) as `config.json` in its folder, so later tools
    (`tradesys report`) know its data source: a ledger records trades, not where the bars came from."""
    import json as _json

    path = Path(folder) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_json.dumps(redact_tree(cfg.model_dump(mode="json")), indent=2) + "\n")
    return path


def redact_tree(value: Any) -> Any:
    """`redact_url` applied to every string in a JSON-like tree (the dumped config), so no secret is printed."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v) for v in value]
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where market data comes from and how fast it is replayed."""

    source: Literal["sp500_stocks", "us_indices", "synthetic", "alpaca"] = Field("sp500_stocks",
        description="sp500_stocks: 20 stocks 1990-2022; us_indices: SP500, NASDAQ 1999-2018; synthetic: GBM; "
                    "alpaca: live one-minute bars from Alpaca's stock data stream (needs symbols)")
    alpaca_feed: Literal["iex", "sip"] = Field("iex", description="alpaca: the data feed (iex is free)")
    alpaca_stream_url: str | None = Field(None, description="alpaca: the stock data websocket; None: "
                                          "$APCA_DATA_STREAM_URL or Alpaca's")
    symbols: list[str] | None = Field(None,
        description='symbols to trade, e.g. ["AAPL", "JPM"]; unset: every symbol the source has')
    start: date | None = Field(date(2016, 1, 1), description="first bar date (synthetic: first session date)")
    end: date | None = Field(date(2022, 12, 31),
        description="last bar date, inclusive (synthetic: only truncates the sessions)")
    speed: float = Field(0.0, ge=0.0, description="replay speed in bars per second; 0 = as fast as possible")
    seed: int = Field(7, description="synthetic: random seed")
    synthetic_days: int = Field(5, gt=0, description="synthetic: trading sessions generated")
    synthetic_bar_seconds: int = Field(60, gt=0, description="synthetic: bar length in seconds")
    # the bus between the data and the loop: "direct" (the MarketDataActor reads the source) or "kafka"
    bus: Literal["direct", "kafka"] = Field("direct",
        description="direct: the MarketDataActor reads the source; kafka: bars travel through a Kafka topic")
    kafka_bootstrap: str | None = Field(None, description="host:port,...; None: $TRADESYS_KAFKA_BOOTSTRAP")
    topic: str = Field("tradesys.bars", min_length=1, description="kafka: the bar topic")
    consumer_group: str = Field("tradesys-live", min_length=1, description="kafka: the loop's consumer group")
    publish: bool = Field(True, description="kafka: this run publishes the source to the topic (False: a feed does)")
    idle_timeout_s: float = Field(60.0, gt=0,
        description="kafka and alpaca: end the run after this long without data")

    def bootstrap(self) -> str:
        """The Kafka bootstrap servers, from the config or the environment; ConfigError if neither."""
        import os

        value = self.kafka_bootstrap or os.environ.get("TRADESYS_KAFKA_BOOTSTRAP", "")
        if not value.strip():
            raise ConfigError("data.kafka_bootstrap: required for data.bus = kafka (or set TRADESYS_KAFKA_BOOTSTRAP)")
        return value

    @model_validator(mode="after")
    def _alpaca_needs_symbols(self) -> DataConfig:
        if self.source == "alpaca" and not self.symbols:
            raise ValueError("symbols: required with data.source = 'alpaca' (a live stream has no symbol list)")
        if self.source != "alpaca" and self.alpaca_stream_url is not None:
            raise ValueError("alpaca_stream_url: used only with data.source = 'alpaca'")
        return self

    @model_validator(mode="after")
    def _dates_ordered(self) -> DataConfig:
        if self.start and self.end and self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        return self


class StrategyConfig(_Section):
    """The strategy (docs/strategies.md). "trend": moving-average trend (tradesys.strategy.trend); "model": trades on
    a forecaster's predicted return and volatility (tradesys.strategy.model). Sizing and order fields are shared."""

    name: Literal["trend", "model", "weights", "rl"] = Field("trend",
        description="trend: moving-average trend; model: trades on a forecaster; weights: a target-weight file; "
        "rl: a trained PPO policy")
    # trend
    fast: int = Field(20, gt=1, description="trend: fast moving-average window (bars)")
    slow: int = Field(100, gt=2, description="trend: slow moving-average window (bars)")
    vol_lookback: int = Field(20, gt=2, description="volatility estimate window for sizing (bars)")
    # sizing and orders (both strategies)
    target_vol: float = Field(0.10, gt=0.0, le=2.0, description="annualised volatility target per position")
    max_weight: float = Field(0.08, gt=0.0, le=1.0, description="cap on |weight| per symbol")
    allow_short: bool = Field(True, description="allow negative target weights")
    rebalance_band: float = Field(0.25, ge=0.0, le=1.0, description="trade only if off target by this fraction")
    order_type: Literal["market", "limit"] = Field("market", description="order type the strategy sends")
    limit_offset_bps: float = Field(10.0, ge=0.0,
        description="limit orders: price this many bps through the last close")
    # model: where the forecasts come from
    forecaster: Literal["local", "serve"] = Field("local", description="local: model_path in process; serve: Serve")
    model_path: str | None = Field(None, description="local: an exported .onnx or TorchScript .pt file")
    model_backend: Literal["auto", "onnxruntime", "torchscript", "tensorrt"] = Field("auto",
        description="local: runtime for model_path (auto picks by file type)")
    standardizer_path: str | None = Field(None, description="the training run's standardizer.json")
    lookback: int | None = Field(None, ge=1, description="window rows; None: the model's (required with serve_url)")
    serve_url: str | None = Field(None, description="serve over HTTP: the full POST /v1/predict URL")
    serve_app: str = Field("tradesys-predict", min_length=1, description="serve by handle: the Serve application")
    serve_deployment: str = Field("ModelServerLive", min_length=1, description="serve by handle: the deployment")
    model_version: str | None = Field(None, description="the model version (required by handle; pins over HTTP)")
    api_key_env: str = Field("TRADESYS_API_KEY", min_length=1, description="env var holding the HTTP API key")
    timeout_ms: float = Field(250.0, gt=0.0, le=60_000.0, description="per-bar forecast deadline; late: hold")
    min_edge: float = Field(0.0, ge=0.0, description="flat unless |predicted ret| / predicted vol >= this")
    registry_name: str | None = Field(None, min_length=1, description="score the MLflow registry's champion of "
        "this model (forecaster local: in process; serve: the deployment pinned to it), followed as the alias moves")
    mlflow_uri: str | None = Field(None, description="registry_name: the MLflow URI; None: $MLFLOW_TRACKING_URI")
    champion_check_bars: int = Field(50, ge=1, description="registry_name: look up the champion alias every N bars")
    # weights: a target-weight schedule (tradesys.strategy.weights)
    weights_path: str | None = Field(None,
        description="weights: .parquet or .csv, a ts or date column and one weight column per symbol")
    # rl: a trained PPO policy (tradesys.strategy.rl)
    rl_policy_path: str | None = Field(None,
        description="rl: a policy export directory (tradesys.rl.policy.export_policy: policy.json + model files)")

    @field_validator("model_path", "standardizer_path", "rl_policy_path")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        """Absolute paths: the strategy may be built by an actor in another working directory."""
        return None if v is None else str(Path(v).expanduser().resolve())

    @field_validator("weights_path")
    @classmethod
    def _weights_file(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if Path(v).suffix.lower() not in {".parquet", ".csv"}:
            raise ValueError(f"must be a .parquet or .csv file, got {v!r}")
        return str(Path(v).expanduser().resolve())

    @model_validator(mode="after")
    def _consistent(self) -> StrategyConfig:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")
        if self.name == "weights" and self.weights_path is None:
            raise ValueError("weights_path: required for name = 'weights' (a .parquet or .csv target-weight file)")
        if self.name == "rl" and self.rl_policy_path is None:
            raise ValueError("rl_policy_path: required for name = 'rl' (a policy export directory)")
        if self.name != "model":
            return self
        if self.registry_name is not None:  # the champion brings its model and standardizer (strategy/champion.py)
            for key in ("model_path", "standardizer_path", "model_version", "serve_url"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: not with registry_name (the registry's champion decides the model)")
            return self
        if self.standardizer_path is None:
            raise ValueError("standardizer_path: required for name = 'model' (the training run's standardizer.json)")
        if self.forecaster == "local" and self.model_path is None:
            raise ValueError("model_path: required for name = 'model' with forecaster = 'local'")
        if self.forecaster == "serve":
            if self.serve_url is not None:
                if not self.serve_url.startswith(("http://", "https://")):
                    raise ValueError(f"serve_url: must start with http:// or https://, got {self.serve_url!r}")
                if self.lookback is None:
                    raise ValueError("lookback: required with serve_url (the HTTP API does not describe the model)")
            elif self.model_version is None:
                raise ValueError("model_version: required with forecaster = 'serve' by deployment handle")
        return self


class RiskConfig(_Section):
    """Pre-trade limits. Each breach rejects the order with its own reason."""

    max_order_qty: float = Field(50_000, gt=0, description="largest quantity of one order")
    max_order_notional: float = Field(250_000, gt=0, description="largest notional of one order")
    max_position_notional: float = Field(400_000, gt=0,
        description="largest |position notional| per symbol after an order")
    price_collar_pct: float = Field(0.05, gt=0, lt=1, description="limit price within this fraction of last")
    max_orders_per_window: int = Field(200, gt=0, description="orders accepted per order_window_seconds")
    order_window_seconds: float = Field(86_400, gt=0, description="order-rate window, in market-clock time")
    daily_loss_limit_pct: float = Field(0.05, gt=0, lt=1, description="kill switch: loss vs. start-of-day equity")
    # portfolio limits, checked on the book as it would be after each order (risk-reducing orders always pass)
    max_gross_leverage: float | None = Field(2.0, gt=0, description="gross exposure / equity; None: off")
    max_net_leverage: float | None = Field(1.5, gt=0, description="|net exposure| / equity; None: off")
    var_limit_pct: float | None = Field(0.06, gt=0, lt=1, description="one-bar VaR / equity; None: off")
    var_confidence: float = Field(0.99, gt=0.5, lt=1, description="confidence level of the VaR limit")
    var_method: Literal["historical", "ewma"] = Field("historical", description="VaR estimator of the risk gate")
    var_window: int = Field(250, ge=2, description="returns kept for the VaR (bars)")
    var_min_obs: int = Field(20, ge=2, description="VaR limit enforced once this many returns are seen")

    @field_validator("max_gross_leverage", "max_net_leverage", "var_limit_pct", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        """TOML has no null: `false` (or "off"/"none") switches a portfolio limit off."""
        return None if v is False or (isinstance(v, str) and v.strip().lower() in {"off", "none", "null"}) else v


class VenueConfig(_Section):
    """One simulated venue of `broker.kind = "routed"` (tradesys.broker.venues; docs/execution.md, smart routing)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="venue name (in child order and fill ids)")
    dark: bool = Field(False, description="dark venue: fills only at the mid, only for qty >= min_qty")
    fee_bps: float = Field(0.0, ge=0, description="fee per fill in bps of notional")
    fee_per_share: float = Field(0.0, ge=0, description="fee per fill per share (added to fee_bps)")
    fee_min: float = Field(0.0, ge=0, description="minimum fee per fill")
    latency_ms: float = Field(0.0, ge=0, description="order-to-venue latency (a cost term of the router's estimate)")
    participation: float = Field(0.05, gt=0, le=1, description="share of each bar's volume this venue can fill")
    min_qty: float = Field(0.0, ge=0, description="dark venue: smallest order it fills (0: any)")

    @model_validator(mode="after")
    def _dark_only_min(self) -> VenueConfig:
        if self.min_qty > 0 and not self.dark:
            raise ValueError(f"min_qty: only a dark venue has a minimum quantity ({self.name} is lit)")
        return self


class BrokerConfig(_Section):
    """The simulated venue."""

    kind: str = Field("sim", description="the venue: sim (SimBroker) or alpaca (tradesys.broker.alpaca: Alpaca's "
                      "paper trading API; keys from APCA_API_KEY_ID / APCA_API_SECRET_KEY) or routed (smart order "
                      "routing across simulated venues, tradesys.broker.venues)")
    venues: tuple[VenueConfig, ...] | None = Field(None, description="routed: the venues (unset: a lit primary, a "
                                                   "cheaper thinner ECN and a dark pool, tradesys.broker.venues)")
    url: str | None = Field(None, description="alpaca: trading API base URL; None: $APCA_API_BASE_URL or Alpaca's "
                            "paper endpoint")
    stream_url: str | None = Field(None, description="alpaca: trade-updates websocket; None: the base URL's /stream")
    fee_bps: float = Field(0.5, ge=0, description="fee per fill in bps of notional")
    fee_min: float = Field(0.0, ge=0, description="minimum fee per fill")
    slippage_bps: float = Field(2.0, ge=0, description="fill price slippage in bps against the order (impact = "
                                "sqrt: the half spread paid where the venue has no quote)")
    participation_cap: float = Field(0.10, gt=0, le=1, description="max fraction of bar volume per fill")
    impact: Literal["flat", "sqrt"] = Field("flat", description="cost model: flat (fee + slippage) or sqrt (square-"
                                            "root market impact, tradesys.execution.impact; event engine only)")
    impact_eta: float = Field(0.142, ge=0, description="sqrt impact: temporary coefficient (Almgren et al. 2005)")
    impact_gamma: float = Field(0.314, ge=0, description="sqrt impact: permanent coefficient (Almgren et al. 2005)")
    impact_window_days: int = Field(20, ge=3, description="sqrt impact: trailing days for ADV and daily volatility")

    @field_validator("impact_eta", "impact_gamma", "impact_window_days")
    @classmethod
    def _sqrt_only(cls, v: float, info: Any) -> float:
        """A coefficient of a model that is off would do nothing (the default passes, so a dumped config reloads)."""
        if info.data.get("impact") != "sqrt" and v != cls.model_fields[info.field_name].default:
            raise ValueError(f"used only with broker.impact = 'sqrt', got {info.data.get('impact')!r}")
        return v

    @field_validator("kind")
    @classmethod
    def _known_venue(cls, v: str) -> str:
        """Refuse a venue that nothing would use: an accepted setting must do what it says."""
        if v in ("sim", "alpaca", "routed"):
            return v
        raise ValueError(f"unknown broker {v!r}: 'sim', 'alpaca' or 'routed'")

    @model_validator(mode="after")
    def _venue_settings(self) -> BrokerConfig:
        """The simulator's matching settings do nothing at a real venue, and Alpaca's URLs nothing in the sim."""
        if self.kind == "alpaca":
            sim_only = sorted({"slippage_bps", "participation_cap"} & self.model_fields_set)
            if sim_only:
                raise ValueError(f"{sim_only[0]}: a SimBroker setting; alpaca fills at the broker's prices")
        elif self.url is not None or self.stream_url is not None:
            raise ValueError("url/stream_url: used only with broker.kind = 'alpaca'")
        return self

    @model_validator(mode="after")
    def _routed_venues(self) -> BrokerConfig:
        """Routed venues set their own fees and liquidity; the single venue's would do nothing there."""
        if self.kind != "routed":
            if self.venues is not None:
                raise ValueError("venues: used only with broker.kind = 'routed'")
            return self
        per_venue = sorted(  # a default passes, so a dumped config or the template reloads
            f for f in {"fee_bps", "fee_min", "participation_cap"} & self.model_fields_set
            if getattr(self, f) != type(self).model_fields[f].default
        )
        if per_venue:
            raise ValueError(f"{per_venue[0]}: set per venue with broker.kind = 'routed' (broker.venues)")
        if self.venues is not None:
            names = [v.name for v in self.venues]
            if len(set(names)) != len(names):
                raise ValueError(f"venues: names must be unique, got {names}")
            if all(v.dark for v in self.venues):
                raise ValueError("venues: at least one lit venue is needed (stops, limits and remainders rest there)")
        return self


class ExecutionConfig(_Section):
    """The execution service: reconciliation of the book of record against the broker (docs/execution.md)."""

    reconcile_every_bars: int = Field(100, ge=0,
        description="reconcile ledger and broker every N bars (also on start and after a reconnect); 0: only those")
    reconcile_break_limit: float = Field(0.0, ge=0,
        description="unexplained break (currency) above which new orders are refused until a reconcile clears it")
    # execution algorithms (tradesys.execution.algos, tradesys.execution.parents): the strategies' sizing tags
    # the orders it makes at or above the thresholds, and the execution service works them as parent orders
    algo: str = Field("", description='execution algorithm for strategy orders: "" (send as is), or one of '
                      "market, twap, vwap, pov, is, iceberg, conditional (tradesys.execution.algos)")
    algo_params: dict[str, float | int | str | bool] = Field(default_factory=dict,
        description='the algorithm\'s parameters, e.g. {slices = 5, jitter = 0.2} for twap')
    horizon_bars: int = Field(10, ge=1, description="bars a parent order is worked over (its window)")
    algo_min_qty: float = Field(0.0, ge=0, description="orders of at least this many shares go to the algorithm")
    algo_min_notional: float = Field(0.0, ge=0,
        description="orders of at least this notional (qty x the decision close) go to the algorithm")

    @field_validator("algo")
    @classmethod
    def _known_algo(cls, v: str) -> str:
        if v == "":
            return v
        from tradesys.execution.algos.registry import ALGOS

        if v not in ALGOS:
            raise ValueError(f"unknown execution algorithm {v!r}: one of {', '.join(ALGOS)} (or \"\": none)")
        return v

    @field_validator("algo_params")
    @classmethod
    def _algo_accepts(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        """The algorithm builds with these parameters now, so a bad one is refused before any order is made."""
        algo = info.data.get("algo")
        if algo is None:  # the algo itself was refused: that error names it
            return v
        if not algo:
            if v:
                raise ValueError("needs execution.algo (no algorithm would use them)")
            return v
        from tradesys.execution.algos.registry import make_algo

        make_algo(algo, v)
        return v

    @field_validator("horizon_bars")
    @classmethod
    def _window_for_algo(cls, v: int, info: Any) -> int:
        """A scheduled algorithm (twap, vwap, pov, is) needs a window of two bars or more."""
        algo, params = info.data.get("algo"), info.data.get("algo_params")
        if algo and params is not None:
            from tradesys.execution.parents import trial

            why = trial(algo, params, v, 1.0)
            if why is not None and why.startswith("parent.end_ns"):
                raise ValueError(f"{algo} needs a window of at least 2 bars, got {v}")
        return v


class LedgerConfig(_Section):
    """`sqlite:///path` or a `postgresql://` DSN; None: a fresh SQLite file per run, runs/<run id>/ledger.db.

    A ledger that already holds an account is resumed: the book is restored and replay continues after its
    last timestamp.
    """

    url: str | None = Field(None,
        description="sqlite:///path or postgresql://user@host/db; unset: runs/<run id>/ledger.db")
    runs_dir: str = Field("runs", description="folder of per-run ledgers and artefacts")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str | None) -> str | None:
        """Error names `ledger.url`; the echoed URL is masked (it may carry a password)."""
        if v is not None and not v.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError(f"must start with sqlite:// or postgresql://, got {redact_url(v)!r}")
        return v


class ServeConfig(_Section):
    """`tradesys serve`: where the HTTP API listens and the limits of each replica (tradesys.serve.ServeLimits)."""

    host: str = Field("127.0.0.1", description="HTTP API bind address")
    port: int = Field(8000, gt=0, lt=65536, description="HTTP API port")
    api_key_env: str = Field("TRADESYS_API_KEY", min_length=1, description="env var holding the HTTP API key")
    replicas: int = Field(1, ge=1, le=64, description="Serve replicas of the API")
    max_json_body_bytes: int = Field(16 * 2**20, ge=1024, description="largest JSON request body (413 beyond)")
    max_arrow_body_bytes: int = Field(256 * 2**20, ge=1024, description="largest Arrow IPC request body (413 beyond)")
    max_ongoing_requests: int = Field(8, ge=1, le=1024, description="requests computing at once per replica")
    max_queued_requests: int = Field(32, ge=0, le=100_000, description="requests waiting per replica (503 beyond)")
    retry_after_s: int = Field(1, ge=0, le=3600, description="Retry-After seconds on a 503")
    request_timeout_s: float = Field(30.0, gt=0, le=3600, description="time budget per request (504 beyond)")
    keys_url: str = Field("sqlite:///runs/api_keys.db", min_length=1, description="API key store (tradesys keys): "
                          "sqlite:///path or postgresql://...; the API re-reads it every keys_refresh_s")
    keys_refresh_s: float = Field(2.0, gt=0, le=3600, description="a created or revoked key takes effect within this")
    rate_limit_per_s: float | None = Field(100.0, gt=0, description="default requests/s per key (a key's own limit "
                                           "wins); None: no limit")
    rate_limit_burst: int = Field(50, ge=1, description="default burst per key (requests at once after a pause)")
    access_log: str | None = Field("runs/api_access.jsonl", description="JSON-lines access log (key id, route, "
                                   "status, latency; never bodies or keys); None: none")
    tls_certfile: str | None = Field(None, description="PEM certificate: with tls_keyfile the API speaks HTTPS only")
    tls_keyfile: str | None = Field(None, description="PEM private key of tls_certfile")

    @field_validator("rate_limit_per_s", "access_log", "tls_certfile", "tls_keyfile", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        """TOML has no null: `false` (or "off"/"none") switches the rate limit, access log or TLS off."""
        return None if v is False or (isinstance(v, str) and v.strip().lower() in {"off", "none", "null", ""}) else v

    @field_validator("keys_url")
    @classmethod
    def _keys_scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(f"must start with sqlite:/// or postgresql://, got {redact_url(v)!r}")
        return v


class RayConfig(_Section):
    address: str | None = Field(None, description="Ray cluster to join; unset: $RAY_ADDRESS or a new local cluster")
    num_cpus: int | None = Field(None, gt=0, description="local cluster CPUs; unset: all")
    include_dashboard: bool = Field(True, description="start the Ray dashboard with a local cluster")
    max_restarts: int = Field(3, ge=0, description="restarts of each child actor before the run fails")
    head_resource: str = Field("head", pattern=r"^[A-Za-z0-9_.-]*$", description="custom resource only the head "
        "node has; the Supervisor, its children and the API's Serve replicas request a sliver of it so they never "
        "land on (spot) workers; \"\": no pinning")
    compiled_graph: bool = Field(
        True, description="drive the live step as a Ray Compiled Graph; false: ordinary actor calls"
    )


class LogConfig(_Section):
    """Logs of the live loop's actors and the HTTP API (`tradesys.logs`; docs/operations.md, "Structured logs")."""

    format: Literal["json", "text"] = Field("json", description="json: one JSON object per line with run_id, "
        "actor and order_id; text: the same fields for a person at a terminal")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="lowest level written")


class FeaturesConfig(_Section):
    """Streaming features computed beside the loop (FeatureActor) and kept current in the online store."""

    enabled: bool = Field(False, description="run a FeatureActor beside the loop")
    name: str = Field("live_technical", min_length=1, description="feature name in the online store")
    version: int = Field(1, ge=1, description="feature version in the online store")
    online: Literal["memory", "redis"] = Field("memory", description="online store: in-process memory or Redis")
    redis_url: str | None = Field(None, description="redis://...; None: $TRADESYS_REDIS_URL or 127.0.0.1:6379")
    ttl_s: float | None = Field(None, gt=0, description="online values expire after this long")
    max_in_flight: int = Field(8, ge=1, description="backpressure: bar batches queued at the FeatureActor")


class DriftConfig(_Section):
    """The DriftMonitor beside the live loop (docs/drift.md, "In the live loop"): the model strategy's per-bar feature
    rows, forecasts and realised returns go to a `DriftMonitor` actor, whose checks can launch the training job.

    Reference: "data" rebuilds the training-time feature rows (`default_features` per symbol) from `data.source`
    over reference_start..reference_end (the period the model was trained on); otherwise a .parquet/.csv file of
    feature rows with columns ret, abs_ret, rv5, rv22 (extra columns are ignored). With "data" the reference
    windows are also scored by the strategy's forecaster (`reference_predictions`), so the forecasts are watched too.
    """

    enabled: bool = Field(False, description="run a DriftMonitor beside the loop (needs strategy.name = model)")
    reference: str = Field("data", min_length=1, description='"data", or a .parquet/.csv file of feature rows')
    reference_start: date | None = Field(None, description='reference "data": first day of the training period')
    reference_end: date | None = Field(None, description='reference "data": last day of the training period')
    reference_predictions: bool = Field(
        True, description='with reference "data": score the reference windows with the strategy\'s forecaster, so '
                          "prediction drift is watched too")
    # hand-off and schedule
    send_every_bars: int = Field(5, ge=1, description="the strategy buffers this many bars per observe call")
    max_in_flight: int = Field(8, ge=1, description="observe calls outstanding before a batch is dropped")
    poll_s: float | None = Field(30.0, gt=0, description="the monitor's own tick loop; None: tick per batch only")
    window: int = Field(1000, ge=2, description="rows of the current window")
    min_rows: int = Field(50, ge=2, description="drift tests skipped below this many current rows")
    check_every_rows: int | None = Field(1000, ge=1, description="a check after this many new rows")
    check_every_s: float | None = Field(3600.0, gt=0, description="a check after this long since the last")
    n_permutations: int = Field(200, ge=1, description="MMD permutation test draws")
    # thresholds and policy
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="family-wise false-alarm level")
    psi: float = Field(0.2, gt=0.0, description="population stability index alarm threshold")
    wasserstein: float = Field(0.1, gt=0.0, description="W1 / reference std")
    max_age_days: float = Field(30.0, gt=0.0, description="schedule trigger: retrain a model older than this")
    cooldown_hours: float = Field(24.0, ge=0.0, description="no drift/degradation retrain this soon after one")
    last_trained: datetime | None = Field(None, description="when the served model was trained; None: run start")
    holdout_error: float | None = Field(None, gt=0.0, description="the model's holdout loss; None: no degradation")
    degradation_metric: Literal["mse", "mae"] = Field("mse",
        description="forecast error metric compared with holdout_error")
    degradation_window: int = Field(20, ge=1, description="recent forecasts in the degradation check")
    degradation_ratio: float = Field(1.5, gt=0.0, description="degraded when recent error > this x holdout_error")
    # actions and logs
    launcher: Literal["none", "ray_task", "job_submission"] = Field("none",
        description="how a retraining is launched: none, a Ray task, or a Ray job submission")
    jobs_address: str | None = Field(None, description="job_submission: the dashboard address")
    auth_token_env: str | None = Field(None, description="job_submission: env var holding the Ray token")
    train_argv: list[str] = Field(default_factory=list, description="flags of jobs/train.py for a retraining")
    mlflow: bool = Field(True, description="log drift checks to MLflow")
    mlflow_uri: str | None = Field(None, description="None: $MLFLOW_TRACKING_URI, else <runs_dir>/mlflow.db")
    evidently: Literal["always", "on_drift", "never"] = Field("on_drift",
        description="when to write an Evidently drift report")
    audit_path: str | None = Field(None, description="JSON-lines audit; None: <ledger.runs_dir>/<run id>/drift.jsonl")

    @field_validator("poll_s", "check_every_rows", "check_every_s", "holdout_error", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        """TOML has no null: `false` (or "off"/"none") switches an optional schedule or trigger off."""
        return None if v is False or (isinstance(v, str) and v.strip().lower() in {"off", "none", "null"}) else v

    @field_validator("audit_path")
    @classmethod
    def _absolute_audit(cls, v: str | None) -> str | None:
        return None if v is None else str(Path(v).expanduser().resolve())

    @field_validator("reference")
    @classmethod
    def _reference(cls, v: str) -> str:
        if v == "data":
            return v
        if Path(v).suffix.lower() not in {".parquet", ".csv"}:
            raise ValueError(f'must be "data" or a .parquet/.csv file of feature rows, got {v!r}')
        return str(Path(v).expanduser().resolve())  # the Supervisor may run in another working directory

    @model_validator(mode="after")
    def _consistent(self) -> DriftConfig:
        if self.min_rows > self.window:
            raise ValueError(f"min_rows ({self.min_rows}) must be <= window ({self.window})")
        if self.degradation_window > self.window:
            raise ValueError(f"degradation_window ({self.degradation_window}) must be <= window ({self.window})")
        if self.cooldown_hours > self.max_age_days * 24:
            raise ValueError(f"cooldown_hours ({self.cooldown_hours}) must be <= max_age_days * 24")
        if self.last_trained is not None and self.last_trained.tzinfo is None:
            raise ValueError("last_trained: must carry a timezone, e.g. 2026-11-01T00:00:00Z")
        if not self.enabled:
            return self
        if self.reference == "data":
            for name in ("reference_start", "reference_end"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name}: required with reference = 'data' (the period the model was trained on)")
            assert self.reference_start is not None and self.reference_end is not None
            if self.reference_start >= self.reference_end:
                raise ValueError(f"reference_start ({self.reference_start}) must be before reference_end "
                                 f"({self.reference_end})")
        if self.launcher == "job_submission" and not (self.jobs_address or "").strip():
            raise ValueError("jobs_address: required with launcher = 'job_submission' (the dashboard address)")
        return self


class TradesysConfig(_Section):
    initial_cash: float = Field(1_000_000.0, gt=0, description="starting cash of the account")
    data: DataConfig = DataConfig()
    features: FeaturesConfig = FeaturesConfig()
    strategy: StrategyConfig = StrategyConfig()
    risk: RiskConfig = RiskConfig()
    broker: BrokerConfig = BrokerConfig()
    execution: ExecutionConfig = ExecutionConfig()
    ledger: LedgerConfig = LedgerConfig()
    serve: ServeConfig = ServeConfig()
    ray: RayConfig = RayConfig()
    log: LogConfig = LogConfig()
    drift: DriftConfig = DriftConfig()

    @model_validator(mode="after")
    def _live_broker_live_data(self) -> TradesysConfig:
        if self.broker.kind == "alpaca" and self.data.source != "alpaca":
            raise ValueError(f"broker.kind: alpaca fills at the broker's live prices; set data.source = \"alpaca\" "
                             f"(got {self.data.source!r}: replayed history against a live broker is meaningless)")
        return self

    @model_validator(mode="after")
    def _algo_works_the_strategys_orders(self) -> TradesysConfig:
        """An algorithm that needs a limit price (iceberg) cannot work the strategy's market orders."""
        if self.execution.algo:
            from tradesys.execution.parents import trial

            limit = 1.0 if self.strategy.order_type == "limit" else None
            why = trial(self.execution.algo, self.execution.algo_params, self.execution.horizon_bars, limit)
            if why is not None:
                if why.startswith("parent.limit"):
                    why += f" (strategy.order_type = {self.strategy.order_type!r})"
                raise ValueError(f"execution.algo: {why}")
        return self

    @model_validator(mode="after")
    def _drift_needs_model(self) -> TradesysConfig:
        if self.drift.enabled and self.strategy.name != "model":
            raise ValueError(f"drift.enabled: needs strategy.name = 'model' (the monitor watches the model's features "
                             f"and forecasts), got strategy.name = {self.strategy.name!r}")
        return self


def _format(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        show_input = "input" in e and e["type"] != "value_error"
        parts.append(f"{loc}: {msg} (got {e['input']!r})" if show_input else f"{loc}: {msg}")
    return redact_url("; ".join(parts))  # an echoed input may be a URL with a password


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {k} is not a section")
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """`risk.max_order_qty=100` -> ("risk.max_order_qty", 100); values parse as TOML, else stay strings."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.field=value")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> TradesysConfig:
    """Build a validated config; raise ConfigError naming each bad field."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p}: not found")
        try:
            tree = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p}: {exc}") from exc
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides or [])
    for key, value in items:
        _set_path(tree, key, value)
    try:
        return TradesysConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None


def _toml_value(value: Any) -> str:
    """A TOML literal for a default value (strings as basic strings, dates as TOML dates)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value == value and abs(value) != float("inf") else ("nan" if value != value else "inf")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _choices(annotation: Any) -> list[str]:
    """The allowed values of a Literal (or Literal | None) field, for the template's comment."""
    from typing import get_args, get_origin

    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    return [c for a in get_args(annotation) for c in _choices(a)]


def _template_lines(model: type[BaseModel], defaults: BaseModel) -> list[str]:
    lines: list[str] = []
    for name, info in model.model_fields.items():
        if isinstance(getattr(defaults, name), BaseModel):
            continue
        desc = info.description or "(no description)"
        choices = _choices(info.annotation)
        if choices:
            desc += f"; one of: {', '.join(choices)}"
        lines.append(f"# {desc}")
        value = getattr(defaults, name)
        if value is None:
            lines.append(f"# {name} =   (unset by default; TOML has no null)")
        else:
            lines.append(f"{name} = {_toml_value(value)}")
    return lines


def config_template() -> str:
    """A commented TOML file holding every setting at its default, each with its description.

    Loading it back (`-c`) gives the default configuration; fields whose default is unset (None) are commented
    out, as TOML has no null.
    """
    defaults = TradesysConfig()
    out = [
        "# tradesys configuration: every setting at its default (tradesys config --toml).",
        "# Load with `tradesys live -c FILE`; override one value with `-s section.field=value`.",
        "",
        *_template_lines(TradesysConfig, defaults),
    ]
    for name in TradesysConfig.model_fields:
        section = getattr(defaults, name)
        if not isinstance(section, BaseModel):
            continue
        doc = " ".join((type(section).__doc__ or "").split())
        out += ["", f"[{name}]", *([f"# {doc}"] if doc else []), *_template_lines(type(section), section)]
    return "\n".join(out) + "\n"
