"""Transaction cost analysis: the Perold split on hand-computed parents (buy and sell, partial fills, no fills),
the parts adding up to Perold's paper-minus-real shortfall on random parents, parents and children grouped from
ledger rows with benchmarks read off the bars, and `tradesys tca RUN` / `GET /v1/tca` on real backtest runs whose
costs are known from the simulated venue's settings and agree with the ledger and the tear sheet."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tradesys.backtest.report import RunRef, load_tear_sheet
from tradesys.backtest.runner import run_backtest
from tradesys.cli import app
from tradesys.config import load_config
from tradesys.core.orders import Side
from tradesys.execution.tca import (
    COST_PARTS,
    TcaFill,
    TcaParent,
    parent_tca,
    perold_shortfall,
    tca_from_ledger,
    tca_totals,
    window_vwap,
)
from tradesys.serve import create_api

runner = CliRunner()
KEY = "tca-test-key-91be"
H = {"X-API-Key": KEY}


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# --- the formulas on hand cases (dyadic prices: every sum below is exact in binary floating point) -------------


def test_buy_partly_filled_by_hand() -> None:
    """X=1000 at P_d=100, arrival 100.5; 400 @ 100.75 (market 100.625) and 300 @ 101 (market 100.875), fees 3.5;
    the rest (300) marked at P_e=101.5; the window's VWAP 100.75."""
    parent = TcaParent("P", "AAA", Side.BUY, 1000, 100.0, 100.5, 101.5, market_vwap=100.75, algo="twap", children=2)
    fills = [TcaFill(400, 100.75, 2.0, 100.625), TcaFill(300, 101.0, 1.5, 100.875)]
    r = parent_tca(parent, fills)
    assert r.delay == 1000 * 0.5 == 500.0
    assert r.impact == 400 * 0.125 + 300 * 0.125 == 87.5
    assert r.timing == 400 * 0.125 + 300 * 0.375 == 162.5
    assert r.fees == 3.5
    assert r.opportunity == 300 * 1.0 == 300.0
    assert r.shortfall_decision == 1053.5
    # Perold: paper (1000 bought at 100, marked 101.5) minus real (700 bought at their prices, fees paid)
    assert r.shortfall_decision == 1000 * 1.5 - (400 * 0.75 + 300 * 0.5 - 3.5) == perold_shortfall(parent, fills)
    assert r.shortfall_arrival == 553.5 == r.shortfall_decision - r.delay
    assert r.filled_qty == 700 and r.avg_price == pytest.approx(70600 / 700, rel=1e-15)
    assert r.vwap_slippage == pytest.approx(70600 - 700 * 100.75, rel=1e-12)  # 75: x (avg - VWAP)
    assert r.bps["shortfall_decision"] == pytest.approx(105.35, rel=1e-12)  # 1053.5 / (1000 * 100) * 1e4
    assert r.bps["shortfall_arrival"] == pytest.approx(553.5 / 100_500 * 1e4, rel=1e-12)
    assert r.bps["vwap_slippage"] == pytest.approx((70600 / 700 - 100.75) / 100.75 * 1e4, rel=1e-12)
    assert sum(r.bps[k] for k in COST_PARTS) == pytest.approx(r.bps["shortfall_decision"], rel=1e-12)


def test_sell_by_hand_and_the_signs() -> None:
    """A sell pays when prices fall: decision 50, arrival 49.75, 500 @ 49.5 (market 49.625), fee 1, end 49."""
    parent = TcaParent("S", "BBB", Side.SELL, 500, 50.0, 49.75, 49.0, market_vwap=49.5)
    r = parent_tca(parent, [TcaFill(500, 49.5, 1.0, 49.625)])
    assert (r.delay, r.impact, r.timing, r.fees, r.opportunity) == (125.0, 62.5, 62.5, 1.0, 0.0)
    assert r.shortfall_decision == 251.0 == perold_shortfall(parent, [TcaFill(500, 49.5, 1.0, 49.625)])
    assert r.vwap_slippage == 0.0 and r.bps["vwap_slippage"] == 0.0
    # a better sale than the market's (price improvement) is a negative impact; a rise before arrival a gain
    up = parent_tca(TcaParent("S2", "BBB", Side.SELL, 100, 50.0, 50.5, 50.5), [TcaFill(100, 50.75, 0.0, 50.5)])
    assert up.delay == -50.0 and up.impact == -25.0 and up.timing == 0.0 and up.shortfall_decision == -75.0


def test_nothing_filled_is_all_delay_and_opportunity() -> None:
    parent = TcaParent("N", "CCC", Side.BUY, 200, 10.0, 10.25, 11.0, market_vwap=10.5)
    r = parent_tca(parent, [])
    assert (r.delay, r.impact, r.timing, r.fees, r.opportunity) == (50.0, 0.0, 0.0, 0.0, 150.0)
    assert r.shortfall_decision == 200.0 == perold_shortfall(parent, [])  # 200 x (11 - 10): the move missed
    assert r.filled_qty == 0 and math.isnan(r.avg_price) and math.isnan(r.vwap_slippage)


@pytest.mark.parametrize(("field", "kw"), [("N.decision_price", {"decision_price": math.nan}),
                                           ("N.qty", {"qty": 0.0}), ("N.end_price", {"end_price": -1.0})])
def test_bad_benchmarks_name_the_field(field: str, kw: dict[str, float]) -> None:
    base = {"parent_id": "N", "symbol": "C", "side": Side.BUY, "qty": 1.0, "decision_price": 1.0,
            "arrival_price": 1.0, "end_price": 1.0}
    with pytest.raises(ValueError, match=f"^{field}: must be a finite"):
        parent_tca(TcaParent(**{**base, **kw}), [])


_price = st.floats(1.0, 500.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(side=st.sampled_from(list(Side)), qty=st.floats(1.0, 1e6), p_d=_price, p_a=_price, p_e=_price,
       fills=st.lists(st.tuples(st.floats(0.01, 1.0), _price, _price, st.floats(0.0, 50.0)), max_size=8))
def test_parts_add_up_to_perolds_shortfall(side: Side, qty: float, p_d: float, p_a: float, p_e: float,
                                           fills: list[tuple[float, float, float, float]]) -> None:
    """Conservation: delay + impact + timing + fees + opportunity is the paper-minus-real shortfall, for any fills
    (over-fills included); the arrival shortfall is that minus the delay; totals are sums of parents."""
    tf = [TcaFill(share * qty / max(len(fills), 1), p, fee, m) for share, p, m, fee in fills]
    parent = TcaParent("R", "R", side, qty, p_d, p_a, p_e)
    r = parent_tca(parent, tf)
    scale = qty * 1000.0  # the size of the numbers summed
    assert sum(getattr(r, k) for k in COST_PARTS) == pytest.approx(perold_shortfall(parent, tf), abs=1e-9 * scale)
    assert r.shortfall_decision == pytest.approx(perold_shortfall(parent, tf), abs=1e-9 * scale)
    assert r.shortfall_arrival == pytest.approx(r.shortfall_decision - r.delay, abs=1e-9 * scale)
    total = tca_totals([r, r])
    assert total["shortfall_decision"] == 2 * r.shortfall_decision
    assert total["bps"]["shortfall_decision"] == pytest.approx(r.bps["shortfall_decision"], rel=1e-12)


# --- from ledger rows and bars -----------------------------------------------------------------------------------


def _bars() -> tuple[pd.DataFrame, pd.DataFrame]:
    idx = pd.Index([1, 2, 3, 4, 5], dtype="int64")
    return (pd.DataFrame({"AAA": [100.0, 101.0, 102.0, 103.0, 104.0]}, index=idx),
            pd.DataFrame({"AAA": [10.0, 20.0, 30.0, 40.0, 50.0]}, index=idx))


def _order(coid: str, side: str, qty: float, ts: int, status: str = "filled", symbol: str = "AAA",
           updated: int | None = None) -> dict[str, Any]:
    return {"client_order_id": coid, "symbol": symbol, "side": side, "qty": qty, "ts_ns": ts, "status": status,
            "updated_ts_ns": ts if updated is None else updated}


def _fill(coid: str, n: int, qty: float, price: float, fee: float, ts: int) -> dict[str, Any]:
    return {"fill_id": f"{coid}:{n}", "client_order_id": coid, "symbol": "AAA", "side": "buy", "qty": qty,
            "price": price, "fee": fee, "ts_ns": ts}


def test_vwap_over_a_window() -> None:
    closes, volumes = _bars()
    assert window_vwap(closes["AAA"], volumes["AAA"], 2, 4) == pytest.approx(9200 / 90, rel=1e-15)
    assert window_vwap(closes["AAA"], volumes["AAA"], 5, 5) == 104.0
    assert math.isnan(window_vwap(closes["AAA"], volumes["AAA"], 6, 9))
    assert math.isnan(window_vwap(closes["AAA"], None, 1, 5))


def test_parents_and_children_from_ledger_rows() -> None:
    """Parent rows (as `Ledger.parent_orders()` gives them) group their children `<parent>.<n>`; an order without
    a parent row is its own parent; benchmarks missing from a row come from the bars."""
    closes, volumes = _bars()
    parents = [
        {"parent_id": "P1", "symbol": "AAA", "side": "buy", "qty": 100.0, "algo": "twap", "start_ns": 2,
         "end_ns": 4, "ts_ns": 1, "decision_price": None, "status": "filled"},  # arrival: the close at start
        {"parent_id": "P2", "symbol": "AAA", "side": "sell", "qty": 50.0, "algo": "vwap", "start_ns": 4,
         "end_ns": 0, "ts_ns": 4, "decision_price": 103.0, "status": "active"},  # nothing sent yet, still working
    ]
    orders = [_order("P1.1", "buy", 40, 2), _order("P1.2", "buy", 60, 3, updated=4),
              _order("solo", "sell", 10, 5, status="rejected"), _order("Q.1", "buy", 5, 3, symbol="ZZZ")]
    fills = [_fill("P1.1", 1, 40, 101.25, 1.0, 2),  # in the bar it was sent in: market = that close, 101
             _fill("P1.2", 1, 60, 103.5, 2.0, 4),  # rested, filled a bar later: market = the close before, 102
             _fill("ghost", 1, 1, 1.0, 0.0, 2)]
    report = tca_from_ledger(orders, fills, closes, volumes, parents)
    got = {r.parent_id: r for r in report.parents}
    assert list(got) == ["P1", "P2", "solo"]  # oldest decision first; ZZZ has no bars
    p1 = got["P1"]
    assert (p1.decision_price, p1.arrival_price, p1.end_price) == (100.0, 101.0, 103.0)
    assert (p1.children, p1.fills, p1.filled_qty, p1.algo) == (2, 2, 100.0, "twap")
    assert (p1.delay, p1.impact, p1.timing, p1.fees, p1.opportunity) == (100.0, 100.0, 60.0, 3.0, 0.0)
    assert p1.shortfall_decision == 263.0 == 100 * 3.0 - (40 * 1.75 - 60 * 0.5 - 3.0)  # Perold, by hand
    assert p1.market_vwap == pytest.approx(9200 / 90, rel=1e-15)
    p2 = got["P2"]  # a sell not yet worked while the price rose 103 -> 104 (the last bar): a gain so far
    assert (p2.decision_price, p2.arrival_price, p2.end_price, p2.filled_qty) == (103.0, 103.0, 104.0, 0.0)
    assert p2.opportunity == -50.0 == p2.shortfall_decision and p2.delay == 0.0
    solo = got["solo"]  # rejected within its bar: decision = arrival = end = 104, nothing to pay
    assert (solo.decision_price, solo.arrival_price, solo.end_price, solo.shortfall_decision) == (104, 104, 104, 0)
    assert report.total["shortfall_decision"] == 263.0 - 50.0 and report.total["fees"] == 3.0
    assert any("1 fill(s) name no order" in n for n in report.notes)
    assert any("without bar prices" in n and "Q.1" in n for n in report.notes)
    no_volume = tca_from_ledger(orders, fills, closes, None, parents)
    assert math.isnan(no_volume.parents[0].vwap_slippage) and no_volume.parents[0].shortfall_decision == 263.0
    assert any("1 parent(s) with fills but no bar volume" in n for n in no_volume.notes)


# --- the command and the route on real backtest runs -------------------------------------------------------------

SYNTHETIC = {"data.source": "synthetic", "data.synthetic_days": 3, "data.synthetic_bar_seconds": 900,
             "strategy.fast": 3, "strategy.slow": 10, "strategy.vol_lookback": 5,
             "broker.slippage_bps": 5.0, "broker.fee_bps": 1.0}
THIN = {**SYNTHETIC, "broker.participation_cap": 0.002}  # orders rest and expire part-filled: opportunity costs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A runs folder: `full` (every order filled in its bar) and `thin` (a tight liquidity cap), both with their
    data section saved as config.json, and `bare` (full's ledger, no configuration: no bars)."""
    root = tmp_path_factory.mktemp("runs")
    out: dict[str, Any] = {"root": root}
    for name, overrides in (("full", SYNTHETIC), ("thin", THIN)):
        cfg = load_config(overrides=overrides)
        (root / name).mkdir()
        _, ledger = run_backtest(cfg, f"sqlite:///{root / name / 'ledger.db'}")
        out[name] = (cfg, ledger.orders(), ledger.fills())
        ledger.close()
        (root / name / "config.json").write_text(cfg.model_dump_json(include={"data"}))
    (root / "bare").mkdir()
    (root / "bare" / "ledger.db").write_bytes((root / "full" / "ledger.db").read_bytes())
    return out


def _tca_json(runs: dict[str, Any], name: str) -> dict[str, Any]:
    r = runner.invoke(app, ["tca", name, "--runs-dir", str(runs["root"]), "--json"])
    assert r.exit_code == 0, r.output
    return dict(_strict_json(r.stdout))


def test_cli_costs_are_the_venues_settings(runs: dict[str, Any]) -> None:
    """Every market order fills in its bar at close x (1 +/- 5 bps) and pays 1 bp: the impact is 5 bps and the
    fees 1 bp of each parent, no delay, timing or opportunity; the total is the tear sheet's fees + slippage."""
    cfg, orders, fills = runs["full"]
    got = _tca_json(runs, "full")
    parents = got["parents"]
    assert len(parents) == len(orders) == len(fills) > 10
    for p in parents:
        assert p["fills"] == 1 and p["filled_qty"] == p["qty"]
        assert p["bps"]["impact"] == pytest.approx(cfg.broker.slippage_bps, rel=1e-9)
        assert p["bps"]["fees"] == pytest.approx(cfg.broker.fee_bps, rel=1e-3)  # of the fill's notional
        assert p["delay"] == p["timing"] == p["opportunity"] == 0.0
        assert p["bps"]["vwap_slippage"] == pytest.approx(cfg.broker.slippage_bps, rel=1e-9)  # one-bar window
    t = got["total"]
    assert t["filled_qty"] == pytest.approx(sum(f["qty"] for f in fills), rel=1e-12)
    assert t["fees"] == pytest.approx(sum(f["fee"] for f in fills), rel=1e-12)
    sheet = load_tear_sheet(RunRef(f"sqlite:///{runs['root'] / 'full' / 'ledger.db'}", "full",
                                   runs["root"] / "full"))
    assert t["shortfall_decision"] == pytest.approx(sheet.costs["total"], rel=1e-9)
    assert t["impact"] == pytest.approx(sheet.costs["slippage"], rel=1e-9)
    # the files: the JSON written beside the run is what was printed, the plot is a PNG
    files = got["files"]
    assert files["png"] == str(runs["root"] / "full" / "tca.png")
    assert Path(files["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _strict_json(Path(files["json"]).read_text()) == got


def test_cli_partial_fills_conserve_quantity_and_add_up(runs: dict[str, Any]) -> None:
    """With a tight liquidity cap, orders fill over several bars or expire: each parent's fills are its ledger
    order's, and its parts add up to Perold's shortfall rebuilt from the printed prices."""
    _, orders, fills = runs["thin"]
    got = _tca_json(runs, "thin")
    by_order = {o["client_order_id"]: o for o in orders}
    assert len(got["parents"]) == len(orders)
    partial = 0
    for p in got["parents"]:
        o = by_order[p["parent_id"]]
        assert p["filled_qty"] == pytest.approx(o["filled_qty"], rel=1e-12, abs=1e-9)
        assert p["fills"] == sum(f["client_order_id"] == p["parent_id"] for f in fills)
        s = 1 if p["side"] == "buy" else -1
        x = p["filled_qty"]
        real = s * x * (p["end_price"] - p["avg_price"]) - p["fees"] if x > 0 else 0.0
        perold = s * p["qty"] * (p["end_price"] - p["decision_price"]) - real
        assert p["shortfall_decision"] == pytest.approx(perold, abs=1e-6)
        assert sum(p[k] for k in COST_PARTS) == pytest.approx(p["shortfall_decision"], abs=1e-6)
        partial += x < p["qty"] - 1e-9
    assert partial > 0 and got["total"]["opportunity"] != 0.0
    assert got["total"]["filled_qty"] == pytest.approx(sum(f["qty"] for f in fills), rel=1e-12)


def test_cli_table_and_errors(runs: dict[str, Any], tmp_path: Path) -> None:
    ledger = runs["root"] / "full" / "ledger.db"
    r = runner.invoke(app, ["tca", str(ledger), "--out", str(tmp_path / "t")], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert "total (bps)" in r.stdout and "total (currency)" in r.stdout
    assert f"Plot written to {tmp_path / 't' / 'tca.png'}" in r.stdout and (tmp_path / "t" / "tca.json").is_file()
    for args, start in ((["nope-1"], "run error: RUN: no run 'nope-1'"),
                        (["bare"], "run error: RUN: TCA needs the run's bars"),
                        (["full", "-s", "data.nope=1"], "config error:")):
        bad = runner.invoke(app, ["tca", *args, "--runs-dir", str(runs["root"])])
        assert bad.exit_code == 2, bad.output
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(start), bad.stderr


@pytest.fixture()
def client(runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("TRADESYS_RUNS_DIR", str(runs["root"]))
    monkeypatch.chdir(tmp_path)  # ./runs, the second folder looked in, is empty here
    with TestClient(create_api(None, api_key=KEY, analytics=False)) as c:
        yield c


def _error(r: Any, status: int, field: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and len(body["detail"]) == 1 and body["detail"][0]["field"] == field
    return str(body["detail"][0]["reason"])


def test_route_serves_the_commands_numbers(client: TestClient, runs: dict[str, Any]) -> None:
    r = client.get("/v1/tca", params={"run": "thin"}, headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    cli = _tca_json(runs, "thin")
    assert body == {k: cli[k] for k in ("run", "parents", "total", "notes")}
    assert client.get("/v1/tca", params={"run": "thin"}, headers=H).json() == body  # cached, same answer
    assert "/v1/tca" in client.get("/openapi.json").json()["paths"]


def test_route_errors(client: TestClient) -> None:
    assert _error(client.get("/v1/tca", params={"run": "nope-1"}, headers=H), 404, "run") == "no run 'nope-1'"
    assert "TCA needs the run's bars" in _error(client.get("/v1/tca", params={"run": "bare"}, headers=H), 404, "run")
    for bad in ("../full", "a/b", ".x"):
        assert "is not a run id" in _error(client.get("/v1/tca", params={"run": bad}, headers=H), 422, "run")
    assert _error(client.get("/v1/tca", headers=H), 422, "run") == "Field required"
    assert _error(client.get("/v1/tca", params={"run": "full"}), 401, "X-API-Key") == "missing X-API-Key header"
    assert np.isfinite(client.get("/v1/tca", params={"run": "full"}, headers=H).json()["total"]["fees"])


@pytest.fixture(scope="module")
def twap_run(runs: dict[str, Any]) -> dict[str, Any]:
    """A backtest whose orders are worked as TWAP parents over 4 bars (the ledger's parent_orders rows)."""
    cfg = load_config(overrides={**SYNTHETIC, "execution.algo": "twap", "execution.horizon_bars": 4})
    (runs["root"] / "twap").mkdir()
    _, ledger = run_backtest(cfg, f"sqlite:///{runs['root'] / 'twap' / 'ledger.db'}")
    out = {"cfg": cfg, "parents": ledger.parent_orders(), "orders": ledger.orders(), "fills": ledger.fills()}
    ledger.close()
    (runs["root"] / "twap" / "config.json").write_text(cfg.model_dump_json(include={"data"}))
    return out


def test_cli_on_parent_orders_worked_by_twap(runs: dict[str, Any], twap_run: dict[str, Any]) -> None:
    """Children `<parent>.<n>` are analysed under their parent row: its quantities and average price are the
    ledger's; each child filled in its bar at close x (1 +/- 5 bps), so the impact is 5 bps of the market value of
    what filled; the parts add up to Perold's shortfall; waiting a bar for the first slice shows up as delay."""
    rows = {r["parent_id"]: r for r in twap_run["parents"]}
    assert rows and all(r["algo"] == "twap" for r in rows.values())
    got = _tca_json(runs, "twap")
    parents = {p["parent_id"]: p for p in got["parents"]}
    assert set(parents) == set(rows)
    slip = twap_run["cfg"].broker.slippage_bps / 1e4
    kids = {pid: [o for o in twap_run["orders"] if o["client_order_id"].startswith(f"{pid}.")] for pid in rows}
    for pid, p in parents.items():
        r = rows[pid]
        assert p["algo"] == "twap" and p["children"] == max(len(kids[pid]), 1) == max(r["children"], 1)
        assert p["filled_qty"] == pytest.approx(r["filled_qty"], abs=1e-9)
        assert p["decision_price"] == r["decision_price"]
        assert p["start_ns"] == (r["start_ns"] or r["ts_ns"])  # 0 until the first slice
        s = 1 if p["side"] == "buy" else -1
        x = p["filled_qty"]
        if x > 0:
            assert p["avg_price"] == pytest.approx(r["avg_fill_price"], rel=1e-12)
            assert p["impact"] == pytest.approx(x * p["avg_price"] * slip / (1 + s * slip), rel=1e-9)
        real = s * x * (p["end_price"] - p["avg_price"]) - p["fees"] if x > 0 else 0.0
        perold = s * p["qty"] * (p["end_price"] - p["decision_price"]) - real
        assert sum(p[k] for k in COST_PARTS) == pytest.approx(perold, abs=1e-6)
    assert sum(p["delay"] != 0.0 for p in parents.values()) > len(parents) // 2  # the first slice is a bar later
    assert sum(p["fills"] > 1 for p in parents.values()) > 0 and got["total"]["timing"] != 0.0
    assert got["total"]["filled_qty"] == pytest.approx(sum(f["qty"] for f in twap_run["fills"]), rel=1e-12)
    assert not any("own parent" in n for n in got["notes"])


@pytest.mark.postgres
def test_cli_on_a_postgresql_ledger(pg_dsn: str, runs: dict[str, Any], twap_run: dict[str, Any],
                                    tmp_path: Path) -> None:
    """The same TWAP backtest booked in PostgreSQL (bars from --set, as the ledger does not say its source) gives
    the SQLite run's analysis, parent for parent."""
    _, ledger = run_backtest(twap_run["cfg"], pg_dsn)
    ledger.close()
    sets = [x for k, v in SYNTHETIC.items() if k.startswith("data.") for x in ("-s", f"{k}={json.dumps(v)}")]
    r = runner.invoke(app, ["tca", pg_dsn, "--out", str(tmp_path / "pg"), "--json", *sets])
    assert r.exit_code == 0, r.output
    got, want = _strict_json(r.stdout), _tca_json(runs, "twap")
    assert got["parents"] == want["parents"] and got["total"] == want["total"]
    assert (tmp_path / "pg" / "tca.png").is_file()
