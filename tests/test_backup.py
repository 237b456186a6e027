"""`tradesys backup` / `tradesys restore`: a disaster drill on a live loop, on SQLite and on the real PostgreSQL.

The drill: a live loop runs (paced, so it is still writing), the backup is taken mid-run through the CLI, the run
is stopped, its state is destroyed (ledger file or schema, MLflow store and artifacts, feature-store registry), the
backup is restored, and `tradesys live` resumes on the restored ledger. The resumed ledger must equal an undisturbed
run of the same configuration: every order and fill (the in-process backtest, which the live loop equals:
test_live_loop_on_actors_matches_backtest), the equity curve at every booked step, and the accounting invariants
recomputed from the fills and the raw bars. The smaller tests cover the PostgreSQL COPY dump (row for row, and the
identity sequences), S3 on a real S3-compatible server (moto's, on loopback), and every refusal.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray
from typer.testing import CliRunner

from tradesys.backtest.runner import run_backtest
from tradesys.cli import app
from tradesys.config import TradesysConfig, load_config
from tradesys.data import make_source
from tradesys.ledger import open_ledger
from tradesys.live import run_live

from .conftest import free_port
from .ledger_checks import assert_ledger_consistent, closes_by_ts, trade_record

SMALL: dict[str, Any] = {  # tests/test_live_recovery.py's configuration: every piece of state matters on resume
    "data.source": "synthetic", "data.symbols": ["ALPHA", "BRAVO", "CHARLIE"], "data.synthetic_days": 1,
    "strategy.fast": 5, "strategy.slow": 20, "strategy.vol_lookback": 10, "strategy.rebalance_band": 0.1,
    "strategy.order_type": "limit", "broker.participation_cap": 0.01,
    "risk.max_orders_per_window": 12, "risk.order_window_seconds": 1200,
    "risk.var_limit_pct": 0.00025, "risk.var_min_obs": 10,
    "ray.max_restarts": 3, "ray.include_dashboard": False,
}
BACKUP_STEP = 150  # of 390
runner = CliRunner()


def small_cfg(url: str, **extra: Any) -> TradesysConfig:
    return load_config(overrides={**SMALL, "ledger.url": url, **extra})


def curve(ledger: Any) -> list[tuple[int, float, float]]:
    """The equity curve as (time, equity, cash) at each booked time (the last row of a time)."""
    last = {r["ts_ns"]: (r["ts_ns"], round(r["equity"], 6), round(r["cash"], 6)) for r in ledger.equity_curve()}
    return [last[t] for t in sorted(last)]


@pytest.fixture(scope="module")
def undisturbed() -> tuple[tuple[list[tuple], list[tuple]], list[tuple[int, float, float]]]:
    _, ledger = run_backtest(small_cfg("sqlite:///:memory:"))
    return trade_record(ledger), curve(ledger)


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def one_line_error(result: Any, kind: str, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{kind} error: "), result.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _start(cfg: TradesysConfig, run_id: str) -> tuple[threading.Thread, dict[str, Any], Any]:
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(run_live(cfg, show_progress=False, run_id=run_id)))
    t.start()
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            return t, out, ray.get_actor(f"{run_id}:supervisor")
        except ValueError:
            time.sleep(0.05)
    raise AssertionError("the Supervisor did not start")


def _step(sup: Any) -> int:
    return int(ray.get(sup.progress.remote())["step"])


def _backup_mid_run(url: str, dest: Path, run_id: str, *extra: str) -> dict[str, Any]:
    """Run the loop, back up through the CLI while it writes, stop it; return the manifest."""
    t, out, sup = _start(small_cfg(url, **{"data.speed": 60.0}), run_id)
    deadline = time.time() + 300  # generous: six actors start first, and a loaded 2-core machine is slow at it
    while _step(sup) < BACKUP_STEP:
        assert time.time() < deadline, "the loop did not reach the backup step"
        time.sleep(0.02)
    before = _step(sup)
    result = cli("backup", str(dest), "--run", url, "--json", *extra)
    while _step(sup) < before + 10:  # the loop goes on writing after the snapshot: what the disaster will lose
        assert time.time() < deadline, "the loop stalled after the backup"
        time.sleep(0.02)
    sup.stop.remote("disaster drill")
    t.join(timeout=300)
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest == json.loads((dest / "manifest.json").read_text())
    assert out["reason"] == "disaster drill" and out["steps"] < 390
    with_rows = manifest["parts"]["ledger"]["rows"]["equity_curve"]
    at_stop = open_ledger(url)
    assert before <= len({r["ts_ns"] for r in at_stop.equity_curve()[:with_rows]})
    assert with_rows < len(at_stop.equity_curve()), "the backup must be a mid-run state, not the final one"
    at_stop.close()
    return manifest


def _resume_and_compare(url: str, manifest: dict[str, Any], undisturbed: Any) -> Any:
    """Resume on the restored ledger; it must end as the undisturbed run did."""
    led = open_ledger(url)
    rows = manifest["parts"]["ledger"]["rows"]
    assert len(led.orders()) == rows["orders"] and len(led.fills()) == rows["fills"]
    assert len(led.equity_curve()) == rows["equity_curve"]
    booked = len({r["ts_ns"] for r in led.equity_curve()})
    assert BACKUP_STEP <= booked < 390
    assert led.account()["ts_ns"] == manifest["parts"]["ledger"]["last_ts_ns"]
    led.close()
    rest = run_live(small_cfg(url), show_progress=False, run_id=f"bk-resume-{os.getpid()}-{time.time_ns()}")
    assert rest["reason"] == "completed"
    ledger = open_ledger(url)
    (orders, fills), equity = undisturbed
    assert trade_record(ledger) == (orders, fills)
    assert curve(ledger) == equity
    cfg = small_cfg(url)
    assert_ledger_consistent(ledger, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))
    resume = ledger.audit_log(kind="resume")
    assert len(resume) == 1 and resume[0]["payload"]["resume_ts"] == manifest["parts"]["ledger"]["last_ts_ns"]
    return ledger


def _mlflow_store(runs: Path) -> tuple[str, str, bytes]:
    """A real MLflow SQLite store with one run, a metric curve and an artifact; (tracking uri, run id, artifact)."""
    import mlflow

    from tradesys.train.tracking import ensure_experiment

    uri = f"sqlite:///{runs / 'mlflow.db'}"
    ensure_experiment("drill", uri, runs_dir=runs)
    payload = b"weights " + os.urandom(64)
    art = runs / "tmp-artifact.bin"
    art.write_bytes(payload)
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("drill").experiment_id) as r:
        mlflow.log_param("lr", 0.01)
        for i in range(5):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
        mlflow.log_artifact(str(art), artifact_path="model")
    art.unlink()
    return uri, r.info.run_id, payload


def _feature_store(root: Path) -> dict[str, Any]:
    import pandas as pd

    from tradesys.featurestore import FeatureDefinition, OfflineStore

    store = OfflineStore(root)
    defn = store.register(FeatureDefinition("drill_ret", 1, {"r": "float64"}, transform="drill v1"))
    store.write(defn, None, pd.DataFrame({"symbol": ["A", "B"], "ts": pd.to_datetime(["2024-01-02", "2024-01-02"],
                                                                                      utc=True), "r": [0.1, -0.2]}))
    return json.loads((root / "registry.json").read_text())


@pytest.mark.ray
@pytest.mark.slow
def test_drill_sqlite_backup_mid_run_destroy_restore_resume(
    ray_session: None, tmp_path: Path, undisturbed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    run_dir = runs / "drill-run"
    run_dir.mkdir(parents=True)
    url = f"sqlite:///{run_dir / 'ledger.db'}"
    (run_dir / "config.json").write_text(json.dumps(small_cfg(url).model_dump(mode="json")))
    ml_uri, ml_run, payload = _mlflow_store(runs)
    registry = _feature_store(tmp_path / "fs")
    dest = tmp_path / "backup"

    manifest = _backup_mid_run(url, dest, "bk-sqlite", "--runs-dir", str(runs), "--feature-store",
                               str(tmp_path / "fs"))
    led = manifest["parts"]["ledger"]
    assert led["kind"] == "sqlite" and led["method"] == "sqlite online backup API" and led["schema_version"] == 5
    assert manifest["parts"]["mlflow"]["present"] and manifest["parts"]["mlflow"]["runs"] == 1
    assert manifest["parts"]["feature_store"]["definitions"][0]["name"] == "drill_ret"
    assert manifest["parts"]["config"]["restore"] is True
    listed = {f["path"] for f in manifest["files"]}
    assert {"ledger/ledger.db", "mlflow/mlflow.db", "feature_store/registry.json", "config/config.json"} <= listed
    assert any(p.startswith("mlflow/mlartifacts/") and p.endswith("tmp-artifact.bin") for p in listed)

    # the disaster: the run folder (ledger, WAL, config), the MLflow store and artifacts, the feature registry
    shutil.rmtree(run_dir)
    (runs / "mlflow.db").unlink()
    shutil.rmtree(runs / "mlartifacts")
    (tmp_path / "fs" / "registry.json").unlink()

    result = cli("restore", str(dest))
    assert result.exit_code == 0, result.output
    assert "Restore complete" in result.output
    again = cli("restore", str(dest))  # everything is back now: a second restore would overwrite it
    one_line_error(again, "restore", "--force", "ledger at", "mlflow at")

    assert json.loads((tmp_path / "fs" / "registry.json").read_text()) == registry
    assert (run_dir / "config.json").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=ml_uri)
    got = client.get_run(ml_run)
    assert got.data.params == {"lr": "0.01"}
    assert [m.value for m in client.get_metric_history(ml_run, "loss")] == [1.0 / (i + 1) for i in range(5)]
    local = client.download_artifacts(ml_run, "model/tmp-artifact.bin", str(tmp_path))
    assert Path(local).read_bytes() == payload

    _resume_and_compare(url, manifest, undisturbed)


@pytest.mark.ray
@pytest.mark.slow
def test_drill_postgres_backup_mid_run_destroy_restore_resume(
    ray_session: None, pg_dsn: str, tmp_path: Path, undisturbed: Any
) -> None:
    import psycopg

    dest = tmp_path / "backup"
    manifest = _backup_mid_run(pg_dsn, dest, "bk-pg", "--no-mlflow")
    led = manifest["parts"]["ledger"]
    assert led["kind"] == "postgres" and led["method"] == ("pg_dump" if shutil.which("pg_dump") else "copy")
    schema = led["schema"]
    assert schema.startswith("t_")

    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the disaster: the ledger's schema is gone
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    result = cli("restore", str(dest), "--ledger", pg_dsn)
    assert result.exit_code == 0, result.output
    one_line_error(cli("restore", str(dest), "--ledger", pg_dsn), "restore", "--force", "ledger at")

    _resume_and_compare(pg_dsn, manifest, undisturbed)


def _tables(conn: Any, names: list[str]) -> dict[str, list[tuple]]:
    return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in names}


def test_postgres_copy_dump_restores_every_row_and_the_sequences(pg_dsn: str, tmp_path: Path) -> None:
    """The fallback for machines without pg_dump: every table row for row, and inserts continue after restore."""
    import psycopg

    from tradesys.backup.manifest import ledger_tables

    run_backtest(small_cfg(pg_dsn), ledger_url=pg_dsn)
    tables = ledger_tables()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        before = _tables(conn, tables)
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
    assert before["fills"] and before["equity_curve"] and before["outbox"]
    result = cli("backup", str(tmp_path / "bk"), "--run", pg_dsn, "--no-mlflow", "--pg-method", "copy", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parts"]["ledger"]["method"] == "copy"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    result = cli("restore", str(tmp_path / "bk"), "--ledger", pg_dsn)
    assert result.exit_code == 0, result.output
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert _tables(conn, tables) == before
        for t in ("equity_curve", "audit_log", "outbox"):
            top = conn.execute(f"SELECT MAX(id) FROM {t}").fetchone()[0]
            nxt = conn.execute(f"SELECT nextval(pg_get_serial_sequence('{t}', 'id'))").fetchone()[0]
            assert nxt == top + 1, t
    # --force replaces a live ledger in one transaction
    result = cli("restore", str(tmp_path / "bk"), "--ledger", pg_dsn, "--force")
    assert result.exit_code == 0, result.output
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert _tables(conn, tables) == before


def _sqlite_rows(path: Path) -> dict[str, list[tuple]]:
    from tradesys.backup.manifest import ledger_tables

    with sqlite3.connect(path) as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in ledger_tables()}


@pytest.fixture()
def sqlite_run(tmp_path: Path) -> Path:
    db = tmp_path / "runs" / "r1" / "ledger.db"
    db.parent.mkdir(parents=True)
    run_backtest(small_cfg(f"sqlite:///{db}"), ledger_url=f"sqlite:///{db}")
    return db


def test_refusals_are_one_line_naming_the_argument(sqlite_run: Path, tmp_path: Path) -> None:
    bk = tmp_path / "bk"
    runs = str(sqlite_run.parent.parent)
    one_line_error(cli("backup", str(bk), "--runs-dir", runs, "--no-mlflow"), "backup", "--run", "ledger.url")
    one_line_error(cli("backup", str(bk), "--run", "nope", "--runs-dir", runs), "backup", "--run", "nope")
    one_line_error(cli("backup", str(bk), "--run", "r1", "--runs-dir", runs, "--pg-method", "tape"), "backup",
                   "--pg-method")
    one_line_error(cli("backup", str(bk), "--run", "r1", "--runs-dir", runs, "--feature-store", str(tmp_path)),
                   "backup", "--feature-store", "registry.json")
    one_line_error(cli("backup", str(bk), "--run", "r1", "--runs-dir", runs, "--mlflow-uri", "http://127.0.0.1:1"),
                   "backup", "--no-mlflow")
    line = one_line_error(cli("backup", str(bk), "--run", f"postgresql://u:s3cret@127.0.0.1:{free_port()}/x",
                              "--no-mlflow"), "backup", "ledger.url", "u:***@")
    assert "s3cret" not in line and not bk.exists()
    ok = cli("backup", str(bk), "--run", "r1", "--runs-dir", runs)
    assert ok.exit_code == 0, ok.output
    assert "Backup complete" in ok.output
    one_line_error(cli("backup", str(bk), "--run", "r1", "--runs-dir", runs), "backup", "DEST", "not an empty")

    one_line_error(cli("restore", str(bk)), "restore", "--force", str(sqlite_run))
    one_line_error(cli("restore", str(bk), "--skip", "everything"), "restore", "--skip")
    one_line_error(cli("restore", str(tmp_path / "missing")), "restore", "SRC")
    one_line_error(cli("restore", str(bk), "--ledger", "postgresql://u:pw@127.0.0.1:1/x"), "restore", "--ledger",
                   "SQLite")

    # damage: a flipped byte, a missing file, no manifest; each refused before anything is written
    target = tmp_path / "elsewhere" / "ledger.db"
    bad = tmp_path / "bad"
    shutil.copytree(bk, bad)
    raw = bytearray((bad / "ledger" / "ledger.db").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (bad / "ledger" / "ledger.db").write_bytes(bytes(raw))
    one_line_error(cli("restore", str(bad), "--ledger", f"sqlite:///{target}"), "restore", "SRC",
                   "ledger/ledger.db", "sha256")
    (bad / "ledger" / "ledger.db").unlink()
    one_line_error(cli("restore", str(bad), "--ledger", f"sqlite:///{target}"), "restore", "SRC", "missing")
    (bad / "manifest.json").unlink()
    one_line_error(cli("restore", str(bad), "--ledger", f"sqlite:///{target}"), "restore", "SRC", "manifest.json")
    assert not target.exists()

    # a redirected restore, then --force over a changed ledger puts the backed-up rows back exactly
    original = _sqlite_rows(sqlite_run)
    ok = cli("restore", str(bk), "--ledger", f"sqlite:///{target}", "--skip", "config")
    assert ok.exit_code == 0, ok.output
    assert _sqlite_rows(target) == original
    with sqlite3.connect(sqlite_run) as conn:
        conn.execute("DELETE FROM equity_curve")
    ok = cli("restore", str(bk), "--force")
    assert ok.exit_code == 0, ok.output
    assert _sqlite_rows(sqlite_run) == original


@pytest.fixture()
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Any:
    """moto's S3-compatible server on loopback (tests/s3moto.py), and the environment boto3 reads to reach it."""
    from .s3moto import moto_s3

    with moto_s3("drill") as (client, env):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield client


def test_s3_backup_and_restore_on_a_real_s3_server(sqlite_run: Path, tmp_path: Path, s3_server: Any) -> None:
    runs = str(sqlite_run.parent.parent)
    ok = cli("backup", "s3://drill/backups/r1", "--run", "r1", "--runs-dir", runs, "--json")
    assert ok.exit_code == 0, ok.output
    manifest = json.loads(ok.stdout)
    keys = {o["Key"] for o in s3_server.list_objects_v2(Bucket="drill", Prefix="backups/r1/")["Contents"]}
    assert keys == {f"backups/r1/{f['path']}" for f in manifest["files"]} | {"backups/r1/manifest.json"}
    one_line_error(cli("backup", "s3://drill/backups/r1", "--run", "r1", "--runs-dir", runs), "backup", "DEST",
                   "already holds")
    one_line_error(cli("backup", "s3://nobucket/x", "--run", "r1", "--runs-dir", runs), "backup", "DEST", "nobucket")

    target = tmp_path / "restored" / "ledger.db"
    ok = cli("restore", "s3://drill/backups/r1", "--ledger", f"sqlite:///{target}", "--skip", "config")
    assert ok.exit_code == 0, ok.output
    assert _sqlite_rows(target) == _sqlite_rows(sqlite_run)

    s3_server.put_object(Bucket="drill", Key="backups/r1/ledger/ledger.db", Body=b"not the ledger")
    one_line_error(cli("restore", "s3://drill/backups/r1", "--ledger", f"sqlite:///{tmp_path / 'x.db'}"), "restore",
                   "SRC", "ledger/ledger.db")
    one_line_error(cli("restore", "s3://drill/nothing-here"), "restore", "SRC", "manifest.json")
