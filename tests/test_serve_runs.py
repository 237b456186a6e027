"""`GET /v1/runs/{id}/equity` and `/v1/runs/{id}/report` on a real backtest's run folder: the equity curve is the
ledger's (one point per step), the report is the tear sheet page, a changed ledger gives a new page; an unknown id is
404 naming `id`, a path-like id 422 before any file is touched, and both routes need the API key."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tradesys.backtest.metrics import per_step_equity
from tradesys.backtest.runner import run_backtest
from tradesys.config import load_config
from tradesys.ledger import AccountRow, LedgerBatch, open_ledger
from tradesys.serve import create_api

KEY = "runs-test-key-5c1d"
H = {"X-API-Key": KEY}
ROUTES = ("equity", "report")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("runs")
    (root / "bt-7").mkdir()
    cfg = load_config(overrides={"data.symbols": ["AAPL", "MSFT"], "data.start": "2019-01-01",
                                 "data.end": "2019-12-31", "strategy.slow": 40})
    summary, ledger = run_backtest(cfg, f"sqlite:///{root / 'bt-7' / 'ledger.db'}")
    ledger.close()
    empty = open_ledger(f"sqlite:///{root / 'empty-1' / 'ledger.db'}")
    empty.migrate()
    empty.close()
    (root / "no-ledger").mkdir()
    trial = root / "sweep-x" / "trials" / "00003"  # a sweep trial's folder, as `tradesys backtest sweep` lays it out
    trial.mkdir(parents=True)
    (trial / "ledger.db").write_bytes((root / "bt-7" / "ledger.db").read_bytes())
    return root, summary


@pytest.fixture()
def client(runs_root: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("TRADESYS_RUNS_DIR", str(runs_root[0]))
    monkeypatch.chdir(tmp_path)  # ./runs, the second folder looked in, is empty here
    with TestClient(create_api(None, api_key=KEY, analytics=False)) as c:
        yield c


def _error(r: Any, status: int, field: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and len(body["detail"]) == 1 and body["detail"][0]["field"] == field
    return str(body["detail"][0]["reason"])


def test_equity_is_the_ledgers_curve(client: TestClient, runs_root: tuple[Path, Any]) -> None:
    root, summary = runs_root
    r = client.get("/v1/runs/bt-7/equity", headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    ledger = open_ledger(f"sqlite:///{root / 'bt-7' / 'ledger.db'}")
    curve = ledger.equity_curve()
    ledger.close()
    assert body["run_id"] == "bt-7" and body["initial_cash"] == 1_000_000.0
    assert len(body["points"]) == summary.steps < len(curve)  # one point per step, not per ledger row
    assert [p["equity"] for p in body["points"]] == per_step_equity(curve).tolist()
    assert body["points"][-1]["equity"] == summary.equity
    ts = [p["ts_ns"] for p in body["points"]]
    assert ts == sorted(set(ts))
    for p in body["points"]:  # the account invariant holds at every point served
        assert p["equity"] == pytest.approx(p["cash"] + p["market_value"], rel=1e-12)


def test_a_sweep_trial_is_served_by_sweep_id_dot_trial(client: TestClient, runs_root: tuple[Path, Any]) -> None:
    _, summary = runs_root
    for rid in ("sweep-x.3", "sweep-x.00003"):
        r = client.get(f"/v1/runs/{rid}/equity", headers=H)
        assert r.status_code == 200, r.text
        assert r.json()["points"][-1]["equity"] == summary.equity
    assert "no run" in _error(client.get("/v1/runs/sweep-x.4/equity", headers=H), 404, "id")


@pytest.mark.slow  # draws the charts twice (seconds)
def test_report_is_the_tear_sheet_and_follows_the_ledger(client: TestClient, runs_root: tuple[Path, Any]) -> None:
    root, summary = runs_root
    r = client.get("/v1/runs/bt-7/report", headers=H)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert page.startswith("<!DOCTYPE html>") and "<title>tradesys run bt-7</title>" in page
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 5
    assert "<script" not in page and not re.search(r"(src|href)=['\"]?(https?:|//)", page)
    assert f"<th>Final equity</th><td>{summary.equity:,.2f}</td>" in page
    assert client.get("/v1/runs/bt-7/report", headers=H).text == page  # unchanged ledger: the same page
    # the run goes on: one more step booked, and both routes show it
    ledger = open_ledger(f"sqlite:///{root / 'bt-7' / 'ledger.db'}")
    last = ledger.account()
    assert last is not None
    later = {**last, "ts_ns": last["ts_ns"] + 86_400 * 10**9, "cash": last["cash"] + 12_345.0,
             "equity": last["equity"] + 12_345.0}
    ledger.write(LedgerBatch(account=AccountRow(**later)))
    ledger.close()
    assert client.get("/v1/runs/bt-7/equity", headers=H).json()["points"][-1]["equity"] == later["equity"]
    again = client.get("/v1/runs/bt-7/report", headers=H)
    assert again.status_code == 200 and f"<th>Final equity</th><td>{later['equity']:,.2f}</td>" in again.text


@pytest.mark.parametrize("route", ROUTES)
def test_unknown_run_is_404_naming_id(client: TestClient, route: str) -> None:
    assert _error(client.get(f"/v1/runs/nope-1/{route}", headers=H), 404, "id") == "no run 'nope-1'"
    assert _error(client.get(f"/v1/runs/no-ledger/{route}", headers=H), 404, "id") == "no run 'no-ledger'"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("bad", ["%2E%2E", "..%2Fbt-7", "a%2Fb", "bt-7%2F..%2Fbt-7", ".hidden", "x..y", "a%00b"])
def test_path_like_id_is_422(client: TestClient, route: str, bad: str) -> None:
    reason = _error(client.get(f"/v1/runs/{bad}/{route}", headers=H), 422, "id")
    assert "is not a run id" in reason


def test_empty_run(client: TestClient) -> None:
    """A run folder whose ledger has booked nothing yet: an empty curve; no report (404 naming id, and why)."""
    r = client.get("/v1/runs/empty-1/equity", headers=H)
    assert r.status_code == 200 and r.json() == {"run_id": "empty-1", "initial_cash": None, "points": []}
    assert "no equity rows yet" in _error(client.get("/v1/runs/empty-1/report", headers=H), 404, "id")


@pytest.mark.parametrize("route", ROUTES)
def test_key_required(client: TestClient, route: str) -> None:
    assert _error(client.get(f"/v1/runs/bt-7/{route}"), 401, "X-API-Key") == "missing X-API-Key header"
    assert _error(client.get(f"/v1/runs/bt-7/{route}", headers={"X-API-Key": "nope"}), 401,
                  "X-API-Key") == "invalid API key"
    assert _error(client.get(f"/v1/runs/%2E%2E/{route}"), 401, "X-API-Key")  # auth before anything else


def test_openapi_documents_the_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for route in ROUTES:
        op = spec["paths"][f"/v1/runs/{{id}}/{route}"]["get"]
        assert op["security"] == [{"ApiKeyAuth": []}]
        assert {"401", "404", "422"} <= set(op["responses"])
        (param,) = op["parameters"]
        assert param["name"] == "id" and param["in"] == "path" and "pattern" in param["schema"]
    html = spec["paths"]["/v1/runs/{id}/report"]["get"]["responses"]["200"]["content"]
    assert "text/html" in html
