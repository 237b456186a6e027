"""`tradesys report RUN` on real backtest ledgers: the HTML is self-contained (its images are the PNGs written beside
it), the statistics are the run's own, the bars come from the saved configuration or the packaged source (or the
report says there are none), and every bad RUN is one line naming it, exit code 2."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tradesys.backtest.runner import run_backtest
from tradesys.cli import app
from tradesys.config import load_config

runner = CliRunner()
PNGS = ("equity", "monthly", "rolling", "exposure", "pnl_by_symbol")
SP500 = {"data.symbols": ["AAPL", "JPM", "XOM"], "data.start": "2019-06-01", "data.end": "2020-09-30",
         "strategy.slow": 60}
SYNTHETIC = {"data.source": "synthetic", "data.synthetic_days": 3, "data.synthetic_bar_seconds": 900,
             "strategy.fast": 3, "strategy.slow": 10, "strategy.vol_lookback": 5}


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _one_line_error(r: Result, prefix: str) -> str:
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), r.stderr
    assert "Traceback" not in r.output
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A runs folder: bt-1 (sp500 stocks), syn-saved (synthetic, config.json saved), syn-bare (same, no config)."""
    root = tmp_path_factory.mktemp("runs")
    out: dict[str, Any] = {"root": root}
    for name, overrides in (("bt-1", SP500), ("syn-saved", SYNTHETIC)):
        cfg = load_config(overrides=overrides)
        (root / name).mkdir()
        summary, ledger = run_backtest(cfg, f"sqlite:///{root / name / 'ledger.db'}")
        out[name] = (cfg, summary, len(ledger.fills()))
        ledger.close()
    (root / "syn-saved" / "config.json").write_text(out["syn-saved"][0].model_dump_json())
    (root / "syn-bare").mkdir()
    shutil.copy(root / "syn-saved" / "ledger.db", root / "syn-bare" / "ledger.db")
    return out


@pytest.mark.slow  # a backtest and a report: several seconds
def test_report_on_a_ledger_file(runs: dict[str, Any], tmp_path: Path) -> None:
    cfg, summary, n_fills = runs["bt-1"]
    out = tmp_path / "sheet"
    r = runner.invoke(app, ["report", str(runs["root"] / "bt-1" / "ledger.db"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"Report written to {out / 'report.html'}" in r.stdout
    page = (out / "report.html").read_text()
    # self-contained: every image is embedded, and is byte for byte the PNG written beside the page
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(embedded) == len(PNGS)
    for name, data in zip(PNGS, embedded, strict=True):
        png = (out / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and base64.b64decode(data) == png
    assert not re.search(r"(src|href)=['\"]?(https?:|//|/)", page) and "<script" not in page and "<link" not in page
    stats = _strict_json((out / "stats.json").read_text())
    s = stats["stats"]
    assert s["sharpe"] == pytest.approx(summary.sharpe, rel=1e-9)
    assert s["total_return"] == pytest.approx(summary.total_return, rel=1e-9)
    assert s["final_equity"] == pytest.approx(summary.equity, rel=1e-12)
    assert sum(v["total"] for v in stats["per_symbol_pnl"].values()) == pytest.approx(
        summary.equity - cfg.initial_cash, abs=1e-6)
    # bars inferred from the traded symbols (the ledger does not record its source), and the page says so
    assert stats["benchmark"]["available"] and stats["benchmark"]["symbols"] == ["AAPL", "JPM", "XOM"]
    assert any("inferred from the ledger's symbols" in n for n in stats["notes"])
    assert "equal-weight buy-and-hold of 3 symbols" in page
    trades = (out / "trades.csv").read_text().strip().splitlines()
    assert len(trades) - 1 == s["trades"] > 0 and n_fills > s["trades"]


@pytest.mark.slow
def test_report_by_run_id_json_and_saved_config(runs: dict[str, Any]) -> None:
    """A run id under --runs-dir; the synthetic run's saved config.json gives its bars: benchmark and capacity."""
    _, summary, n_fills = runs["syn-saved"]
    r = runner.invoke(app, ["report", "syn-saved", "--runs-dir", str(runs["root"]), "--json"])
    assert r.exit_code == 0, r.output
    got = _strict_json(r.stdout)
    assert got["files"]["html"] == str(runs["root"] / "syn-saved" / "report" / "report.html")
    assert Path(got["files"]["html"]).is_file()
    assert got["stats"]["sharpe"] == pytest.approx(summary.sharpe, rel=1e-9)
    assert any("from the run's configuration saved in" in n for n in got["notes"])
    assert got["benchmark"]["available"]
    # synthetic bars carry volume: every fill has one, and the estimate is a positive equity level
    cap = got["capacity"]
    assert cap["fills_with_volume"] == n_fills and cap["capacity"] > 0 and cap["capacity_p95"] >= cap["capacity"]
    # the same ledger without the saved config: synthetic symbols are in no packaged source, so no bars
    bare = runner.invoke(app, ["report", "syn-bare", "--runs-dir", str(runs["root"]), "--json"])
    assert bare.exit_code == 0, bare.output
    b = _strict_json(bare.stdout)
    assert b["benchmark"]["available"] is False and "no bar data" in b["benchmark"]["reason"]
    assert b["costs"]["slippage"] is None and b["stats"]["sharpe"] == got["stats"]["sharpe"]
    # ... and --set with the run's settings brings them back
    sets = [x for k, v in SYNTHETIC.items() for x in ("-s", f"{k}={json.dumps(v)}")]
    again = runner.invoke(app, ["report", "syn-bare", "--runs-dir", str(runs["root"]), "--json", *sets])
    assert again.exit_code == 0, again.output
    assert _strict_json(again.stdout)["capacity"]["capacity"] == pytest.approx(cap["capacity"], rel=1e-12)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["no-such-run"], "run error: RUN: no run 'no-such-run' (looked for ledger.db under"),
        (["../etc"], "run error: RUN: '../etc' is neither a ledger file nor a run id"),
        (["sqlite:///:memory:"], "run error: RUN: an in-memory ledger ends with its process"),
        (["sqlite:////nonexistent/dir/l.db"], "run error: RUN: no ledger file at /nonexistent/dir/l.db"),
        (["mysql://u:s3cret@h/db"], "run error: RUN: unsupported URL scheme in 'mysql://u:***@h/db'"),
        (["bt-1", "--participation", "0"], "config error: --participation: must be in (0, 1], got 0.0"),
        (["bt-1", "-s", "data.source=nope"], "config error: data.source"),
    ],
)
def test_bad_run_is_one_line_naming_it(args: list[str], expected: str, tmp_path: Path) -> None:
    r = runner.invoke(app, ["report", *args, "--runs-dir", str(tmp_path)])
    line = _one_line_error(r, expected)
    assert "s3cret" not in r.output, line


def test_a_file_that_is_not_a_ledger(tmp_path: Path) -> None:
    junk = tmp_path / "notes.db"
    junk.write_text("not a database\n" * 100)
    _one_line_error(runner.invoke(app, ["report", str(junk)]), "run error: RUN: DatabaseError: file is not a database")
    empty = tmp_path / "run-empty"
    empty.mkdir()
    from tradesys.ledger import open_ledger

    led = open_ledger(f"sqlite:///{empty / 'ledger.db'}")
    led.migrate()
    led.close()
    _one_line_error(runner.invoke(app, ["report", "run-empty", "--runs-dir", str(tmp_path)]),
                    "run error: RUN: the ledger of 'run-empty' has no equity rows yet")


def test_cli_defaults_are_the_tear_sheets() -> None:
    from tradesys.backtest import tearsheet
    from tradesys.commands import report

    assert report.DEFAULT_ROLLING_WINDOW == tearsheet.DEFAULT_ROLLING_WINDOW
    assert report.DEFAULT_PARTICIPATION == tearsheet.DEFAULT_PARTICIPATION


@pytest.mark.postgres
@pytest.mark.slow
def test_report_on_a_postgresql_ledger(pg_dsn: str, tmp_path: Path) -> None:
    """Any ledger: the same backtest booked in PostgreSQL gives the same statistics as the run's summary."""
    cfg = load_config(overrides={"data.symbols": ["AAPL", "MSFT"], "data.start": "2019-01-01",
                                 "data.end": "2019-12-31", "strategy.slow": 40})
    summary, ledger = run_backtest(cfg, pg_dsn)
    ledger.close()
    r = runner.invoke(app, ["report", pg_dsn, "--out", str(tmp_path / "pg"), "--json"])
    assert r.exit_code == 0, r.output
    got = _strict_json(r.stdout)
    assert got["stats"]["sharpe"] == pytest.approx(summary.sharpe, rel=1e-9)
    assert got["stats"]["final_equity"] == pytest.approx(summary.equity, rel=1e-12)
    assert got["benchmark"]["symbols"] == ["AAPL", "MSFT"]
    assert (tmp_path / "pg" / "report.html").is_file()


def test_saved_configuration_of_a_run_and_of_a_sweep_trial(tmp_path: Path) -> None:
    """config.json / config.toml in the run folder; a sweep trial falls back to the sweep's base configuration unless
    the sweep varies the data (then the trial's bars are unknown)."""
    from tradesys.backtest.report import saved_config

    cfg = load_config(overrides=SYNTHETIC)
    run = tmp_path / "run-1"
    run.mkdir()
    assert saved_config(run) == (None, "")
    (run / "config.json").write_text(cfg.model_dump_json())
    got, origin = saved_config(run)
    assert got == cfg and origin == f" saved in {run / 'config.json'}"
    (run / "config.json").write_text('{"data": {"source": "nope"}}')
    with pytest.raises(ValueError, match=r"config.json: not a readable run configuration: data.source"):
        saved_config(run)
    trial = tmp_path / "sweep-1" / "trials" / "00003"
    trial.mkdir(parents=True)
    spec = {"sweep_id": "sweep-1", "params": {"strategy.fast": "3,5"}, "base_config": cfg.model_dump(mode="json")}
    (tmp_path / "sweep-1" / "spec.json").write_text(json.dumps(spec))
    got, origin = saved_config(trial)
    assert got == cfg and "the sweep's base configuration" in origin
    spec["params"] = {"data.symbols": "..."}
    (tmp_path / "sweep-1" / "spec.json").write_text(json.dumps(spec))
    assert saved_config(trial) == (None, "")
