"""`tradesys risk ...` and `tradesys price surface`: real data in, figures checked against independent
computations, PNGs written, bad input refused by name with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2
from typer.testing import CliRunner

from tradesys.cli import app

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_json(*args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def is_png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_var_on_real_stocks_is_the_empirical_quantile() -> None:
    from skfolio.datasets import load_sp500_dataset

    out = run_json("risk", "var", "--symbols", "AAPL,JPM", "--start", "2010-01-01", "--value", "1000000")
    r = load_sp500_dataset()[["AAPL", "JPM"]].pct_change().iloc[1:].loc["2010-01-01":].dropna()
    losses = -(r.to_numpy() @ [0.5, 0.5]) * 1e6
    assert out["var"] == pytest.approx(np.quantile(losses, 0.99, method="inverted_cdf"), rel=1e-12)
    assert out["n_obs"] == len(r)


def test_backtest_statistics_and_chart(tmp_path: Path) -> None:
    png = tmp_path / "bt.png"
    result = runner.invoke(app, ["risk", "backtest", "--start", "2012-01-01", "--window", "250", "--plot", str(png),
                                 "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.output)
    n, x, p = s["n_obs"], s["n_exceptions"], 0.01
    lr = -2 * ((n - x) * np.log(1 - p) + x * np.log(p) - (n - x) * np.log(1 - x / n) - x * np.log(x / n))
    assert s["kupiec"]["statistic"] == pytest.approx(lr, rel=1e-9)  # Kupiec's POF from the counts
    assert s["kupiec"]["p_value"] == pytest.approx(chi2.sf(lr, 1), rel=1e-9)
    assert is_png(png)


def test_optimize_regimes_and_stress(tmp_path: Path) -> None:
    out = run_json("risk", "optimize", "--objective", "min_variance", "--upper", "0.15", "--start", "2018-01-01")
    w = np.array(list(out["weights"].values()), dtype=float)
    assert w.sum() == pytest.approx(1.0, abs=1e-8) and w.max() <= 0.15 + 1e-8

    png = tmp_path / "regimes.png"
    result = runner.invoke(app, ["risk", "regimes", "--start", "2005-01-01", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert is_png(png)

    book = tmp_path / "book.json"
    book.write_text(json.dumps({"linear": [{"symbol": "AAPL", "quantity": 100, "price": 150.0}]}))
    out = run_json("risk", "stress", "--book", str(book), "--historical", "", "--hypothetical", "equity_crash")
    assert out["results"][0]["pnl"] == pytest.approx(-0.20 * 15_000, rel=1e-12)


def test_attribution_runs_on_real_fama_french() -> None:
    out = run_json("risk", "attribution", "--symbols", "KO,PEP,WMT", "--start", "2000-01-01")
    assert set(out["betas"]) == {"Mkt-RF", "SMB", "HML"}
    assert 0.2 < out["betas"]["Mkt-RF"] < 1.2  # consumer staples: a market beta below one


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["risk", "var", "--symbols", "NOPE"], "error: --symbols: 'NOPE' is not in stocks"),
        (["risk", "var", "--method", "magic"], "error: --method:"),
        (["risk", "backtest", "--data", "nowhere.csv"], "error: --data:"),
        (["risk", "stress", "--book", "nowhere.json"], "error: --book: cannot read"),
        (["risk", "stress", "--book", str(EXAMPLES / "book.json"), "--historical", "", "--hypothetical", ""],
         "error: --historical: give at least one of"),
    ],
)
def test_bad_input_exits_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr


def test_every_risk_command_has_the_same_data_default() -> None:
    """Regression: `risk backtest`/`garch --symbols AAPL,JPM` failed: their --data default was the index set."""
    import typer

    from tradesys.commands.risk import DATA_DEFAULT
    from tradesys.commands.risk import app as risk_app

    group = typer.main.get_command(risk_app)
    defaults = {name: p.default for name, cmd in group.commands.items() for p in cmd.params if p.name == "data"}
    assert set(defaults) >= {"var", "backtest", "garch", "optimize", "regimes"}
    assert set(defaults.values()) == {DATA_DEFAULT}
    bt = run_json("risk", "backtest", "--symbols", "AAPL,JPM", "--start", "2015-01-01", "--window", "250")
    assert bt["n_obs"] > 1000
    g = run_json("risk", "garch", "--symbols", "AAPL,JPM", "--start", "2015-01-01")
    assert set(g) == {"AAPL", "JPM"}


def test_stress_says_which_symbols_are_proxied(tmp_path: Path) -> None:
    """Regression: a symbol with no history was silently moved as the index with beta 1."""
    book = tmp_path / "book.json"
    book.write_text(json.dumps({"linear": [{"symbol": "AAPL", "quantity": 100, "price": 150.0},
                                           {"symbol": "ZZZZ", "quantity": 10, "price": 50.0},
                                           {"symbol": "YYYY", "quantity": 4, "price": 25.0}]}))
    args = ["risk", "stress", "--book", str(book), "--historical", "gfc_2008", "--hypothetical", ""]
    out = run_json(*args)
    assert out["default_beta_symbols"] == ["YYYY", "ZZZZ"]
    res = out["results"][0]
    ret = res["shocks"]["spot_return"]
    assert ret["ZZZZ"] == ret["YYYY"] != ret["AAPL"]  # both: the same index move, beta 1
    assert res["pnl_by_symbol"]["ZZZZ"] == pytest.approx(10 * 50.0 * ret["ZZZZ"], rel=1e-12)
    shown = runner.invoke(app, args, terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "proxied: no price history for YYYY, ZZZZ" in shown.stdout
    clean = run_json("risk", "stress", "--book", str(EXAMPLES / "book.json"), "--hypothetical", "")
    assert clean["default_beta_symbols"] == []


def test_example_book_runs_every_scenario() -> None:
    out = run_json("risk", "stress", "--book", str(EXAMPLES / "book.json"))
    kinds = {r["kind"] for r in out["results"]}
    assert kinds == {"historical", "hypothetical"} and len(out["results"]) >= 10
    for r in out["results"]:  # the headline P&L is the sum over symbols (conservation)
        assert r["pnl"] == pytest.approx(sum(r["pnl_by_symbol"].values()), rel=1e-9, abs=1e-6)


def test_example_chain_fits_cleanly_and_recovers_its_smile(tmp_path: Path) -> None:
    """examples/chain.csv as the README uses it: a clean fit, and the SVI it was quoted from comes back."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_chain", EXAMPLES / "make_chain.py")
    assert spec is not None and spec.loader is not None
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    pd.testing.assert_frame_equal(pd.read_csv(EXAMPLES / "chain.csv"), mk.chain(), check_exact=False, rtol=1e-9)
    png, js = tmp_path / "s.png", tmp_path / "s.json"
    result = runner.invoke(app, ["price", "surface", str(EXAMPLES / "chain.csv"), "--plot", str(png), "--out",
                                 str(js)])
    assert result.exit_code == 0, result.output
    assert "surface clean, quotes clean" in result.stdout and is_png(png)
    from tradesys.quant.vol import FittedSurface

    fitted = FittedSurface.from_dict(json.loads(js.read_text()))
    for T in list(mk.SVI)[1:]:  # the 1-month smile is quoted on a coarse grid of penny prices: checked below
        F = mk.SPOT * np.exp((mk.RATE - mk.DIV) * T)
        K = np.array([80.0, 95.0, 100.0, 110.0, 120.0])
        np.testing.assert_allclose(np.asarray(fitted.vol(K, np.full(5, T))), mk.svi_vol(np.log(K / F), T), atol=3e-3)
    T0 = next(iter(mk.SVI))
    F0 = mk.SPOT * np.exp((mk.RATE - mk.DIV) * T0)
    assert float(fitted.vol(100.0, T0)) == pytest.approx(float(mk.svi_vol(np.log(100.0 / F0), T0)), abs=5e-3)


def test_price_surface_from_a_chain_csv(tmp_path: Path) -> None:
    from tests.test_serve_options import _chain

    csv, png, js = tmp_path / "chain.csv", tmp_path / "surface.png", tmp_path / "surface.json"
    pd.DataFrame(_chain(smile=0.4)).to_csv(csv, index=False)
    result = runner.invoke(app, ["price", "surface", str(csv), "--plot", str(png), "--out", str(js),
                                 "--query-strike", "100", "--query-expiry", "0.5"])
    assert result.exit_code == 0, result.output
    assert "surface clean" in result.output and is_png(png)
    saved = json.loads(js.read_text())
    assert len(saved["expiries"]) == 3
    from tradesys.quant.vol import FittedSurface

    F = 100.0 * np.exp(0.02 * 0.5)
    assert float(FittedSurface.from_dict(saved).vol(100.0, 0.5)) == pytest.approx(0.25 + 0.4 * np.log(100 / F) ** 2,
                                                                                  abs=2e-3)
