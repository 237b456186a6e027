"""`tradesys backtest`, `live`, `demo`, `config` from the command line: results shown, JSON valid, errors one line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tradesys.backtest.runner import run_backtest
from tradesys.cli import app
from tradesys.config import DataError, load_config
from tradesys.ledger import open_ledger

runner = CliRunner()
SHORT = ["-s", 'data.symbols=["AAPL","JPM","XOM"]', "-s", "data.start=2019-06-01", "-s", "data.end=2020-09-30",
         "-s", "strategy.slow=60"]


def _strict_json(text: str) -> Any:
    """Parse as strict JSON: NaN/Infinity (which `json.dumps` writes by default) are refused."""
    def refuse(name: str) -> None:
        raise AssertionError(f"non-JSON constant {name} in output")

    return json.loads(text, parse_constant=refuse)


def _one_line_error(r: Result, code: int = 2) -> str:
    assert r.exit_code == code, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_backtest_shows_its_result_with_the_risk_section(tmp_path: Path) -> None:
    """Regression: the summary table raised KeyError: 'var' after every backtest."""
    db = tmp_path / "bt.db"
    out = tmp_path / "sub" / "summary.json"
    # a VaR limit: the strategy sizes within the order and position limits, not within the book's VaR
    r = runner.invoke(app, ["backtest", *SHORT, "-s", "risk.var_limit_pct=0.002", "--ledger", f"sqlite:///{db}",
                            "--json", "--out", str(out)])
    assert r.exit_code == 0, r.output
    s = _strict_json(r.stdout)  # stdout is only the JSON: progress and the table went to stderr
    assert "tradesys run backtest (completed)" in r.stderr and "rejects by reason" in r.stderr
    assert _strict_json(out.read_text()) == s
    # against the ledger the run wrote (an independent record, read back from disk)
    ledger = open_ledger(f"sqlite:///{db}")
    orders = ledger.orders()
    assert s["orders"] == len(orders) > 0 and s["fills"] == len(ledger.fills())
    rejected = [o for o in orders if o["status"] == "rejected"]
    assert s["rejected"] == len(rejected) > 0
    assert sum(s["risk"]["rejects_by_reason"].values()) == len(rejected)  # every reject counted once, by reason
    assert set(s["risk"]["rejects_by_reason"]) == {o["reason"] for o in rejected} == {"var_limit"}
    assert s["risk"]["kill_switch"] is False
    m = s["risk"]["metrics"]
    assert math.isclose(m["equity"], ledger.equity_curve()[-1]["equity"], rel_tol=1e-9)
    assert m["gross_leverage"] >= abs(m["net_leverage"]) and 0 <= m["var_pct"] < 1 and m["var_obs"] >= 20


def test_backtest_json_turns_nan_into_null() -> None:
    """No trades at all: Sharpe and latency percentiles are NaN, which must print as null, not NaN."""
    r = runner.invoke(app, ["backtest", *SHORT, "-s", "strategy.slow=2000", "-s", "strategy.fast=1000", "--json"])
    assert r.exit_code == 0, r.output
    s = _strict_json(r.stdout)
    assert s["orders"] == 0 and s["sharpe"] is None and s["latency_p50_ms"] is None
    assert s["equity"] == s["start_equity"]


def test_backtest_data_failure_names_the_field() -> None:
    """A source failure inside the run is a DataError naming the setting (the CLI prints it as one line)."""
    cfg = load_config(overrides={"data.symbols": ["AAPL", "ZZZZ"]})
    with pytest.raises(DataError, match=r"^data\.symbols: source sp500_stocks failed: .*'ZZZZ'"):
        run_backtest(cfg)


@pytest.mark.parametrize("command", ["config", "backtest", "live", "demo"])
def test_unknown_symbol_is_one_line_before_anything_starts(command: str) -> None:
    import ray

    was_up = ray.is_initialized()
    r = runner.invoke(app, [command, "-s", 'data.symbols=["AAPL","ZZZZ"]'])
    line = _one_line_error(r)
    assert line.startswith("config error: data.symbols: unknown symbol 'ZZZZ' for source sp500_stocks (have: AAPL,")
    assert ray.is_initialized() == was_up  # nothing was started


def test_backtest_bad_ledger_flag_is_one_line() -> None:
    line = _one_line_error(runner.invoke(app, ["backtest", *SHORT, "--ledger", "mysql://admin:s3cret@h/db"]))
    assert line.startswith("config error: --ledger: must start with") and "s3cret" not in line


@pytest.mark.ray
def test_live_json_flag_prints_the_summary(ray_session: None, tmp_path: Path) -> None:
    """`live --json` is a flag (JSON on stdout) and `--out PATH` writes the same summary."""
    out = tmp_path / "live.json"
    r = runner.invoke(app, ["live", *SHORT, "-s", f'ledger.url="sqlite:///{tmp_path}/live.db"', "--json",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    s = _strict_json(r.stdout)
    assert s["reason"] == "completed" and s["orders"] == len(open_ledger(f"sqlite:///{tmp_path}/live.db").orders())
    assert _strict_json(out.read_text())["run_id"] == s["run_id"]
    bt, _ = run_backtest(load_config(overrides={"data.symbols": ["AAPL", "JPM", "XOM"], "data.start": "2019-06-01",
                                                "data.end": "2020-09-30", "strategy.slow": 60}))
    assert s["orders"] == bt.orders and s["risk"]["rejects_by_reason"] == bt.risk["rejects_by_reason"]
