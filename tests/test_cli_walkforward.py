"""`tradesys backtest walkforward`: the command's figures are the library's (tradesys.backtest.walkforward) on the
same grid, and bad settings are one line naming the flag."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tradesys.backtest.overfit import cscv_pbo
from tradesys.backtest.sweep import trial_config
from tradesys.backtest.vectorized import bars_from_config
from tradesys.backtest.walkforward import config_evaluator, grid_returns, walk_forward_configs
from tradesys.cli import app

DATA = ['data.symbols=["AAPL","JPM","XOM","KO"]', "data.start=2013-01-01", "data.end=2017-12-31"]
SETS = [a for s in DATA for a in ("-s", s)]


@pytest.mark.slow
def test_walkforward_command_matches_the_library(tmp_path) -> None:
    png = tmp_path / "wf.png"
    r = CliRunner().invoke(app, ["backtest", "walkforward", *SETS, "-p", "strategy.fast=10,30",
                                 "-p", "strategy.slow=60,120", "--is", "2Y", "--oos", "6M", "--pbo-splits", "8",
                                 "--plot", str(png), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{"):])
    grid = [{"strategy.fast": f, "strategy.slow": s} for f in (10, 30) for s in (60, 120)]
    configs = [trial_config(None, DATA, g) for g in grid]
    result, ts = walk_forward_configs(configs, grid, is_span="2Y", oos_span="6M")
    want = result.summary(ts)
    assert [w["oos_dates"] for w in out["windows"]] == [w["oos_dates"] for w in want["windows"]]
    assert [{k: v for k, v in w["params"].items() if k != "trial"} for w in out["windows"]] == [
        {k: v for k, v in w["params"].items() if k != "trial"} for w in want["windows"]]
    assert out["oos_sharpe"] == pytest.approx(want["oos_sharpe"], rel=1e-12)
    # every out-of-sample window starts after its in-sample window ends: no look-ahead
    assert all(w["is"][1] <= w["oos"][0] for w in out["windows"])
    bars, n, bpy = bars_from_config(configs[0])
    m = grid_returns(config_evaluator(configs, bars, n, bpy), result.grid, result.windows[0].oos_start,
                     result.windows[-1].oos_end)
    assert out["pbo"] == pytest.approx(cscv_pbo(m, 8).pbo)
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--is", "two years"], "--is"),
        (["--objective", "sortino"], "--objective"),
        (["-s", "strategy.order_type=limit"], "strategy.name"),
        (["-p", "strategy.fast=200,300", "-p", "strategy.slow=60"], "--param"),
        (["-p", "strategy.fast=10", "-p", "strategy.fast=20"], "strategy.fast"),
    ],
)
def test_walkforward_bad_settings_are_one_line(args: list[str], flag: str) -> None:
    grid = [] if any(a.startswith("strategy.fast") for a in args) else ["-p", "strategy.fast=10,30"]
    r = CliRunner().invoke(app, ["backtest", "walkforward", *SETS, *grid, *args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("config error: ") and flag in lines[0], r.output
