"""`tradesys price ...`: the command line gives the library's numbers, reads CSV, and refuses bad input by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tradesys.cli import app
from tradesys.quant.options.american import american_price
from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.european import bsm_greeks

runner = CliRunner()


def run_json(*args: str) -> dict:
    result = runner.invoke(app, ["price", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_european_lists_broadcast_and_match_the_library() -> None:
    out = run_json("european", "--spot", "100", "--strike", "90,100,110", "--expiry", "0.5", "--vol", "0.2",
                   "--rate", "0.03", "--div", "0.01", "--type", "P", "--greeks", "delta,vega")
    g = bsm_greeks(100.0, np.array([90.0, 100.0, 110.0]), 0.5, 0.03, 0.01, 0.2, False)
    rows = out["rows"]
    assert [r["K"] for r in rows] == [90.0, 100.0, 110.0]
    np.testing.assert_allclose([r["price"] for r in rows], g.price, rtol=1e-14)
    np.testing.assert_allclose([r["vega"] for r in rows], g.vega, rtol=1e-14)


def test_iv_reports_codes_for_impossible_prices() -> None:
    out = run_json("iv", "--price", "5,150", "--spot", "100", "--strike", "100", "--expiry", "1", "--type", "C")
    assert out["rows"][0]["iv"] == pytest.approx(0.125414, abs=1e-6)  # 5 = 100 (2 N(s/2) - 1): s = 0.12541...
    assert out["rows"][1]["iv"] is None and out["rows"][1]["code"] == OptionError.PRICE_ABOVE_MAX
    assert "PRICE_ABOVE_MAX" in out["reasons"][str(int(OptionError.PRICE_ABOVE_MAX))]


def test_american_from_csv_to_csv(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    pd.DataFrame({"S": [36.0, 40.0, 44.0], "K": 40.0, "T": 1.0, "r": 0.06, "sigma": 0.2, "type": "put"}).to_csv(
        src, index=False)
    result = runner.invoke(app, ["price", "american", "--csv", str(src), "--method", "lr", "--out", str(dst)])
    assert result.exit_code == 0, result.output
    got = pd.read_csv(dst)
    ref = american_price(got["S"].to_numpy(), 40.0, 1.0, 0.06, 0.0, 0.2, False, method="lr").price
    np.testing.assert_allclose(got["price"], ref, rtol=1e-12)
    assert got["price"].iloc[0] == pytest.approx(4.4867, abs=2e-3)  # Longstaff-Schwartz Table 1, S=36 sigma=.2 T=1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["european", "--spot", "100", "--strike", "1,2,3", "--expiry", "1,2", "--vol", "0.2", "--type", "C"],
         "error: --expiry: has 2 values but --strike has 3"),
        (["european", "--spot", "abc", "--strike", "100", "--expiry", "1", "--vol", "0.2", "--type", "C"],
         "error: --spot: 'abc' is not a number"),
        (["european", "--spot", "100", "--strike", "100", "--expiry", "1", "--type", "C"], "error: --vol: required"),
        (["european", "--spot", "100", "--expiry", "1", "--vol", "0.2", "--type", "C"], "error: --strike: required"),
        (["american", "--spot", "100", "--strike", "100", "--expiry", "1", "--vol", ".2", "--type", "C",
          "--method", "tree"], "error: --method:"),
        (["european", "--csv", "/nonexistent/chain.csv"], "error: --csv: cannot read"),
    ],
)
def test_bad_input_exits_2_naming_the_flag(args: list[str], message: str) -> None:
    """Regression: errors named the library's variables (K, sigma) instead of the flags the user typed."""
    result = runner.invoke(app, ["price", *args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    for internal in ("K:", "sigma:", "T has", "S:"):
        assert internal not in lines[0]


def test_greek_units_are_labelled_and_true() -> None:
    """The labels say vega per 1.00 of vol and theta per year: check both against repricing by the CLI itself."""
    base = ["european", "--spot", "100", "--strike", "95,105", "--rate", "0.03", "--div", "0.01", "--type", "C"]
    out = run_json(*base, "--expiry", "0.5", "--vol", "0.2")
    assert out["units"]["vega"] == "per 1.00 vol" and out["units"]["theta"] == "per year"
    h = 1e-5
    up = run_json(*base, "--expiry", "0.5", "--vol", str(0.2 + h))
    dn = run_json(*base, "--expiry", "0.5", "--vol", str(0.2 - h))
    for r, u, d in zip(out["rows"], up["rows"], dn["rows"], strict=True):
        assert r["vega"] == pytest.approx((u["price"] - d["price"]) / (2 * h), rel=1e-6)
    dt = 1e-5  # years; theta is dV/dt in calendar time: the option one dt later has T - dt left
    later = run_json(*base, "--expiry", str(0.5 - dt), "--vol", "0.2")
    earlier = run_json(*base, "--expiry", str(0.5 + dt), "--vol", "0.2")
    for r, lt, er in zip(out["rows"], later["rows"], earlier["rows"], strict=True):
        assert r["theta"] == pytest.approx((lt["price"] - er["price"]) / (2 * dt), rel=1e-5)
    table = runner.invoke(app, ["price", *base, "--expiry", "0.5", "--vol", "0.2"], terminal_width=80)
    assert table.exit_code == 0, table.output
    assert "per 1.00 vol" in table.stdout and "per year" in table.stdout and "…" not in table.stdout
