"""Sweeps: the pure space parsing and trial generation, and sweeps on the session Ray against in-process backtests.

References: `itertools.product` / Python's `range` for the grid, the same seed for random draws, the in-process
`run_backtest` of each trial's configuration (metrics equal exactly: the same code on the same data), the ledgers
the trials wrote, the Parquet file and the MLflow store read back with their own readers.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tradesys.backtest.runner import run_backtest
from tradesys.backtest.sweep import (
    METRICS,
    Choice,
    Distribution,
    Trial,
    TrialResult,
    best,
    check_engine,
    check_space,
    generate_trials,
    load_spec,
    make_spec,
    parse_param,
    results_table,
    trial_config,
    trial_engine,
)
from tradesys.config import ConfigError, load_config
from tradesys.ledger import open_ledger

BASE = ['data.symbols=["AAPL","JPM","XOM"]', "data.start=2020-01-01", "data.end=2020-09-30"]
runner = CliRunner()


def _spec(*params: str, **kw: Any):
    return make_spec([parse_param(p) for p in params], **kw)


# -- pure: parsing, generation, validation ----------------------------------------------------------------------


def test_grid_is_the_product_of_the_lists_in_order() -> None:
    spec = _spec("strategy.fast=5,10,20", "strategy.slow=range(50,200,25)", "risk.var_limit_pct=0.05,off",
                 "strategy.order_type=market,limit")
    assert spec.params["strategy.slow"] == Choice(tuple(range(50, 200, 25)))
    assert spec.params["strategy.order_type"] == Choice(("market", "limit"))
    trials = generate_trials(spec)
    expected = list(itertools.product([5, 10, 20], range(50, 200, 25), [0.05, "off"], ["market", "limit"]))
    assert len(trials) == 3 * 6 * 2 * 2 == len(expected)
    assert [tuple(t.params.values()) for t in trials] == expected
    assert [t.index for t in trials] == list(range(len(expected)))


def test_random_search_is_reproducible_by_seed() -> None:
    dims = ("strategy.fast=randint(5,40)", "risk.var_limit_pct=loguniform(0.01,0.2)",
            "broker.slippage_bps=uniform(0,5)", "strategy.order_type=market,limit")
    a = generate_trials(_spec(*dims, search="random", trials=50, seed=11))
    b = generate_trials(_spec(*dims, search="random", trials=50, seed=11))
    c = generate_trials(_spec(*dims, search="random", trials=50, seed=12))
    assert a == b and a != c and len(a) == 50
    fast = [t.params["strategy.fast"] for t in a]
    assert all(isinstance(v, int) and 5 <= v <= 40 for v in fast)
    assert all(0.01 <= t.params["risk.var_limit_pct"] <= 0.2 for t in a)
    assert all(0 <= t.params["broker.slippage_bps"] <= 5 for t in a)
    assert {t.params["strategy.order_type"] for t in a} == {"market", "limit"}


def test_random_search_over_lists_draws_distinct_grid_points() -> None:
    spec = _spec("strategy.fast=5,10,20,30", "strategy.slow=60,90,120", search="random", trials=12, seed=3)
    trials = generate_trials(spec)
    points = [tuple(t.params.values()) for t in trials]
    assert len(set(points)) == 12 and set(points) == set(itertools.product([5, 10, 20, 30], [60, 90, 120]))
    with pytest.raises(ConfigError, match=r"^trials: 13 exceeds the 12 distinct points"):
        generate_trials(_spec("strategy.fast=5,10,20,30", "strategy.slow=60,90,120", search="random", trials=13))


@pytest.mark.parametrize(("param", "message"), [
    ("strategy.fastt=1,2", r"^strategy\.fastt: unknown field \(the strategy section has: name, fast, slow"),
    ("strategy.fast=10.5", r"^strategy\.fast: Input should be a valid integer.*\(got 10\.5\)"),
    ("strategy.fast=ten", r"^strategy\.fast: Input should be a valid integer.*\(got 'ten'\)"),
    ("broker.fee_bps=1,-1", r"^broker\.fee_bps: Input should be greater than or equal to 0 \(got -1\)"),
    ("risk.var_method=historical,garch", r"^risk\.var_method: Input should be 'historical' or 'ewma'"),
    ("data.start=2020-01-01", r"^data\.start: not a sweepable field \(section\.field in strategy, risk, broker\)"),
    ("initial_cash=1,2", r"^initial_cash: not a sweepable field"),
    ("strategy.slow=range(50,10)", r"^strategy\.slow: range\(50,10\) is empty"),
    ("strategy.slow=range(1.5,10)", r"^strategy\.slow: range\(\) takes 1 to 3 integers"),
    ("strategy.slow=range(1,10,0)", r"^strategy\.slow: range\(\) step must not be zero"),
    ("strategy.fast=10,,20", r"^strategy\.fast: empty value"),
])
def test_bad_param_names_the_field(param: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_space(_spec(param), load_config(None, BASE))


@pytest.mark.parametrize(("params", "kw", "message"), [
    (["strategy.fast=uniform(5,10)"], {}, r"^strategy\.fast: uniform\(5,10\) is a distribution: a grid needs values"),
    (["strategy.fast=5", "strategy.fast=6"], {}, r"^strategy\.fast: given twice"),
    (["strategy.fast=5"], {"trials": 3}, r"^trials: only with search = random"),
    (["strategy.fast=5,6"], {"search": "random"}, r"^trials: search = random needs a number of trials"),
    (["strategy.fast=5"], {"search": "bayes"}, r"^search: must be grid or random, got 'bayes'"),
    (["risk.var_confidence=uniform(0.4,0.9)"], {"search": "random", "trials": 2},
     r"^risk\.var_confidence: uniform\(0\.4,0\.9\) draws values that fail: Input should be greater than 0\.5"),
    (["strategy.fast=uniform(5,10)"], {"search": "random", "trials": 2},
     r"^strategy\.fast: uniform\(5,10\) draws values that fail: Input should be a valid integer"),
    (["risk.var_confidence=loguniform(0,0.9)"], {"search": "random", "trials": 2},
     r"^risk\.var_confidence: loguniform\(\) needs low > 0"),
    (["strategy.fast=randint(10,5)"], {"search": "random", "trials": 2},
     r"^strategy\.fast: randint\(\) needs low < high"),
    (["strategy.fast"], {}, r"^--param 'strategy\.fast': expected section\.field=values"),
])
def test_bad_spec_names_the_setting(params: list[str], kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec = _spec(*params, **kw)
        check_space(spec, load_config(None, BASE))


def test_a_swept_field_cannot_also_be_set() -> None:
    with pytest.raises(ConfigError, match=r"^strategy\.fast: both --set and --param give it"):
        check_space(_spec("strategy.fast=5,10"), load_config(None, BASE), fixed=["strategy.fast"])


def test_spec_file_toml_and_json_equal_the_flags(tmp_path: Path) -> None:
    toml = tmp_path / "sweep.toml"
    toml.write_text('search = "random"\ntrials = 5\nseed = 9\n[params.strategy]\nfast = [5, 10, 20]\n'
                    'slow = "range(60,150,30)"\n[params]\n"risk.var_limit_pct" = "uniform(0.02,0.1)"\n')
    js = tmp_path / "sweep.json"
    js.write_text(json.dumps({"search": "random", "trials": 5, "seed": 9, "params": {
        "strategy.fast": [5, 10, 20], "strategy.slow": "range(60,150,30)", "risk.var_limit_pct": "uniform(0.02,0.1)"}}))
    flags = _spec("strategy.fast=5,10,20", "strategy.slow=range(60,150,30)", "risk.var_limit_pct=uniform(0.02,0.1)",
                  search="random", trials=5, seed=9)
    for f in (toml, js):
        spec = make_spec([], file=load_spec(f))
        assert spec.params == flags.params and generate_trials(spec) == generate_trials(flags)
    assert make_spec([], file=load_spec(toml), seed=10).seed == 10  # the command line wins
    bad = tmp_path / "bad.toml"
    bad.write_text('trails = 5\n[params]\n"strategy.fast" = [5]\n')
    with pytest.raises(ConfigError, match=r"^--spec .*bad\.toml: unknown key 'trails'"):
        load_spec(bad)
    bad.write_text('search = "grid"\n')
    with pytest.raises(ConfigError, match=r"params: a table of field = values is required"):
        load_spec(bad)


def test_invalid_combination_is_a_config_error_per_trial() -> None:
    """fast >= slow is valid per field but not together: the trial's config says why (it becomes an invalid row)."""
    spec = _spec("strategy.fast=10,60", "strategy.slow=30,60")
    check_space(spec, load_config(None, BASE))  # each value alone is fine
    outcomes = []
    for t in generate_trials(spec):
        try:
            outcomes.append(trial_config(None, BASE, t.params).strategy.slow)
        except ConfigError as exc:
            outcomes.append(str(exc))
    assert outcomes[:2] == [30, 60]
    assert outcomes[2] == "strategy: fast (60) must be smaller than slow (30)"
    assert outcomes[3] == "strategy: fast (60) must be smaller than slow (60)"


def test_results_table_keeps_every_trial() -> None:
    ok = {m: float(i + 1) for i, m in enumerate(METRICS)}
    rows = [
        TrialResult(Trial(2, {"strategy.fast": 20}), "failed", error="ValueError: boom", attempts=3),
        TrialResult(Trial(0, {"strategy.fast": 5}), "ok", metrics={**ok, "sharpe": 0.5}, seconds=1.0, attempts=1),
        TrialResult(Trial(1, {"strategy.fast": 10}), "ok", metrics={**ok, "sharpe": 0.9}, seconds=1.0, attempts=1),
        TrialResult(Trial(3, {"strategy.fast": 30}), "invalid", error="strategy: fast (30) must be smaller"),
    ]
    t = results_table(rows, ["strategy.fast"]).to_pylist()
    assert [r["trial"] for r in t] == [0, 1, 2, 3]
    assert [r["status"] for r in t] == ["ok", "ok", "failed", "invalid"]
    assert [r["strategy.fast"] for r in t] == [5, 10, 20, 30]
    assert t[2]["sharpe"] is None and t[2]["error"] == "ValueError: boom" and t[2]["attempts"] == 3
    assert t[1]["sharpe"] == 0.9 and t[1]["orders"] == ok["orders"]
    assert [r.trial.index for r in best(rows, "sharpe")] == [1, 0]
    assert [r.trial.index for r in best(rows, "max_drawdown")] == [0, 1]  # equal drawdowns: trial order
    mixed = results_table([TrialResult(Trial(0, {"risk.x": 0.05}), "invalid"),
                           TrialResult(Trial(1, {"risk.x": "auto"}), "invalid")], ["risk.x"])
    assert mixed.column("risk.x").to_pylist() == ["0.05", "auto"]  # mixed types: text, not a failure


def test_distribution_text_round_trips() -> None:
    for text in ("uniform(0.5,2)", "loguniform(0.001,0.1)", "randint(3,9)"):
        dim = parse_param(f"broker.slippage_bps={text}")[1]
        assert isinstance(dim, Distribution) and parse_param(f"x.y={dim.text()}")[1] == dim


def test_engine_choice_per_trial() -> None:
    """auto: vectorised for trend with market orders and no pre-trade gate field swept, else event-driven;
    vectorized where it does not apply: a reason (the trial is invalid); sweeping a gate field: refused up front."""
    trend = load_config(None, BASE)
    model = load_config(None, [*BASE, 'strategy.name="model"', 'strategy.model_path="/m.onnx"',
                               'strategy.standardizer_path="/s.json"'])
    limit = load_config(None, [*BASE, 'strategy.order_type="limit"'])
    swept = ["strategy.fast", "risk.max_order_qty", "broker.fee_bps"]
    assert trial_engine("auto", trend, swept) == ("vectorized", None)
    assert trial_engine("auto", trend, ["risk.var_limit_pct"]) == ("event", None)
    assert trial_engine("auto", model, []) == ("event", None)
    assert trial_engine("event", trend, []) == ("event", None)
    eng, why = trial_engine("vectorized", model, [])
    assert eng == "vectorized" and why is not None and why.startswith("strategy.name: the vectorised engine runs trend")
    assert trial_engine("vectorized", limit, [])[1].startswith("strategy.order_type: the vectorised engine models")
    with pytest.raises(ConfigError, match=r"^risk\.daily_loss_limit_pct: the vectorised engine does not model"):
        check_engine("vectorized", ["strategy.fast", "risk.daily_loss_limit_pct"])
    with pytest.raises(ConfigError, match=r"^--engine: must be one of event, vectorized, auto, got 'numba'"):
        check_engine("numba", [])
    check_engine("auto", ["risk.var_limit_pct"])  # auto falls back to event-driven instead


# -- on the session Ray ------------------------------------------------------------------------------------------


def _reference(params: dict[str, Any], extra: list[str] | None = None) -> dict[str, Any]:
    summary, _ = run_backtest(trial_config(None, BASE + (extra or []), params))
    return {m: getattr(summary, m) for m in METRICS}


def _same(a: Any, b: Any) -> bool:
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_on_ray_equals_in_process_runs(ray_session: None, tmp_path: Path) -> None:
    """A 2x2 grid with two impossible pairs: two trials run as Ray tasks and equal in-process backtests exactly;
    the impossible ones are rows with status invalid; the Parquet table and the MLflow runs say the same."""
    from mlflow import MlflowClient

    from tradesys.backtest.distributed import run_sweep

    spec = _spec("strategy.fast=10,60", "strategy.slow=30,60")
    summary = run_sweep(spec, None, BASE, tmp_path / "runs", sweep_id="sw-test", show_progress=False)
    assert (summary["trials"], summary["ok"], summary["invalid"], summary["failed"]) == (4, 2, 2, 0)
    sweep_dir = tmp_path / "runs" / "sw-test"
    assert summary["results"] == str(sweep_dir / "results.parquet")
    rows = pq.read_table(sweep_dir / "results.parquet").to_pylist()
    assert [(r["strategy.fast"], r["strategy.slow"], r["status"]) for r in rows] == [
        (10, 30, "ok"), (10, 60, "ok"), (60, 30, "invalid"), (60, 60, "invalid")]
    for r in rows[:2]:
        ref = _reference({"strategy.fast": r["strategy.fast"], "strategy.slow": r["strategy.slow"]})
        assert all(_same(r[m], ref[m]) for m in METRICS), (r, ref)
        assert r["orders"] > 0 and r["attempts"] == 1 and r["engine"] == "event"
        ledger = open_ledger(f"sqlite:///{r['ledger_path']}")  # the trial's own durable ledger
        assert len(ledger.orders()) == r["orders"] and math.isclose(ledger.equity_curve()[-1]["equity"], r["equity"])
        assert Path(r["ledger_path"]).parent.parent == sweep_dir / "trials"
    assert rows[2]["error"] == "strategy: fast (60) must be smaller than slow (30)" and rows[2]["sharpe"] is None
    assert json.loads((sweep_dir / "summary.json").read_text())["best"][0]["trial"] in (0, 1)

    ml = summary["mlflow"]
    assert ml["error"] is None
    assert ml["tracking_uri"] == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=ml["tracking_uri"])
    runs = client.search_runs([ml["experiment_id"]])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == ml["parent_run_id"]]
    assert len(runs) == 5 and len(children) == 4
    parent = client.get_run(ml["parent_run_id"])
    assert parent.data.params["space.strategy.fast"] == "10,60" and parent.data.metrics["trials_ok"] == 2
    assert [a.path for a in client.list_artifacts(ml["parent_run_id"])] == ["results.parquet"]
    by_trial = {int(r.data.tags["tradesys.trial"]): r for r in children}
    assert by_trial[1].data.params == {"strategy.fast": "10", "strategy.slow": "60"}
    assert by_trial[1].data.metrics["total_return"] == rows[1]["total_return"]
    assert by_trial[3].data.tags["tradesys.status"] == "invalid" and by_trial[3].info.status == "FAILED"


@pytest.mark.ray
@pytest.mark.slow
def test_cli_sweep_reports_a_failing_trial_after_its_retries(ray_session: None, tmp_path: Path) -> None:
    """`tradesys backtest sweep --engine auto`: the model trial (event-driven) raises inside its task (no model
    file); it is retried, then reported with status failed and its error; the trend trial runs on the vectorised
    engine and equals `run_vectorized` in-process; an MLflow store that fails costs only the MLflow record. JSON on
    stdout, the table on stderr."""
    from tradesys.backtest.vectorized import run_vectorized
    from tradesys.cli import app

    missing = ["-s", 'strategy.model_path="/nonexistent/m.onnx"', "-s",
               'strategy.standardizer_path="/nonexistent/s.json"']
    args = ["backtest", "sweep", *(x for o in BASE for x in ("-s", o)), *missing, "-p", "strategy.name=trend,model",
            "--retries", "1", "--runs-dir", str(tmp_path), "--engine", "auto", "--json",
            "--mlflow-uri", "sqlite:////proc/no-such-dir/mlflow.db"]  # an MLflow store that cannot be opened
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert (s["ok"], s["failed"], s["engines"]) == (1, 1, {"event": 1, "vectorized": 1})
    # the MLflow failure cost the MLflow record only: one warning, the table and the summary are complete
    assert s["mlflow"]["parent_run_id"] is None and s["mlflow"]["error"].startswith("FileNotFoundError")
    assert "MLflow logging stopped: FileNotFoundError" in " ".join(r.stderr.split())
    rows = pq.read_table(s["results"]).to_pylist()
    assert [(x["strategy.name"], x["status"], x["engine"]) for x in rows] == [
        ("trend", "ok", "vectorized"), ("model", "failed", "event")]
    failed = rows[1]
    assert failed["error"] == "ValueError: strategy.standardizer_path: '/nonexistent/s.json' is not a file"
    assert failed["attempts"] == 2  # the first attempt and one retry, each recorded by the task
    assert failed["ledger_path"] == str(tmp_path / s["sweep_id"] / "trials" / "00001" / "ledger.db")
    assert failed["sharpe"] is None and rows[0]["ledger_path"] is None  # the vectorised engine keeps no ledger
    ref = run_vectorized(trial_config(None, BASE + missing[1::2], {"strategy.name": "trend"})).summary
    assert all(_same(rows[0][m], getattr(ref, m)) for m in METRICS)
    assert "sweep " in r.stderr and "1 failed" in r.stderr


def test_cli_sweep_bad_param_is_one_line() -> None:
    from tradesys.cli import app

    r = runner.invoke(app, ["backtest", "sweep", "-p", "strategy.fast=5,x"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.stderr.strip().splitlines() == [
        "config error: strategy.fast: Input should be a valid integer, unable to parse string as an integer (got 'x')"]
