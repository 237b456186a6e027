"""What access control costs the HTTP API: p50/p99 latency and requests/s with auth, rate limiting and the access log
on, against the same app with them off, in one run.

What runs: two copies of the API app (`tradesys.serve.create_api`, the ASGI app a Serve replica builds), each in its
own child process under uvicorn on loopback, on the same SQLite ledger (20 positions):
  * ``on``: a key from the key store (SQLite), role read, checked by the access gate (store lookup, HMAC-SHA256,
    constant-time compare), its token bucket (set to 1e9 requests/s so it is exercised but never refuses), the
    role dependency, and the JSON-lines access log;
  * ``off``: ``auth_enabled=False`` (no gate, no bucket, no role check) and no access log.
Serve's HTTP proxy is left out on purpose: it adds the same cost to both (about 10 ms a request here, see
docs/benchmarks.md) and would hide the difference being measured.

The load generator is this process: ``concurrency`` asyncio workers over keep-alive httpx connections, sending
back to back for ``--seconds`` per cell, after a warm-up. Cells: `POST /v1/options/price` with 1 and with 1,000
options, `GET /v1/portfolio`, at each concurrency; on and off alternate cell by cell (the order flips each cell) so
drift in the machine's load falls on both. Latency and requests/s count 200 answers only; the others (and any reset
connection) are counted and printed. Last, the
gate's own cost in process (authenticate + token bucket, per call), which HTTP and scheduling noise do not blur.

    .venv/bin/python benchmarks/api_auth.py [--concurrency 1,8,32] [--seconds 3] [--out result.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import asyncio
import json
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

BOOT_ENV = "API_AUTH_BENCH_BOOT_KEY"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _populate(url: str) -> None:
    from tradesys.ledger import AccountRow, LedgerBatch, PositionRow, SqliteLedger

    positions = [PositionRow(f"S{i:02d}", 10.0 + i, 100.0 + i, 0.0, 101.0 + i) for i in range(20)]
    mv = sum(p.qty * p.mark for p in positions)
    account = AccountRow(ts_ns=1_000, cash=1e6 - mv, market_value=mv, equity=1e6, realized_pnl=0.0,
                         unrealized_pnl=0.0, fees=0.0, initial_cash=1e6)
    with SqliteLedger(url) as led:
        led.migrate()
        led.write(LedgerBatch(positions=positions, account=account))


def serve_main(mode: str, port: int, ledger: str, keys: str, log: str) -> None:
    """The child: one app, under uvicorn, until killed."""
    import uvicorn

    from tradesys.serve import create_api
    from tradesys.serve.access import AccessSettings

    on = mode == "on"
    acc = AccessSettings(keys_url=keys, access_log=log if on else None, rate_limit_per_s=1e9, rate_limit_burst=10**9)
    app = create_api(ledger, api_key=os.environ[BOOT_ENV], access=acc, auth_enabled=on)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="critical", access_log=False, timeout_keep_alive=120)


async def _cell(base: str, method: str, path: str, body: bytes | None, headers: dict[str, str], concurrency: int,
                seconds: float) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    bad = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60, headers=headers) as client:
        async def worker(stop: float, record: bool) -> None:
            nonlocal bad
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    code = (await client.request(method, path, content=body)).status_code
                except httpx.TransportError:  # counted, not timed: a reset connection under overload
                    code = 0
                dt = time.perf_counter() - t0
                if record:
                    bad += code != 200
                    if code == 200:
                        lat.append(dt)

        warm = time.perf_counter() + min(0.5, seconds / 3)
        await asyncio.gather(*(worker(warm, False) for _ in range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    a = np.asarray(lat) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "rps": len(lat) / elapsed, "requests": len(lat), "non_200": bad}


def _wait_up(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"server at {base} did not come up in {timeout_s:g} s")


def _direct(keys: str, token: str, n: int = 20_000) -> dict[str, float]:
    """The gate's own cost, in process: `authenticate` (key id lookup, HMAC-SHA256, constant-time compare) plus
    `admit` (the token bucket), per call; immune to HTTP and scheduling noise."""
    from pydantic import SecretStr

    from tradesys.serve.access import AccessControl, AccessSettings
    from tradesys.serve.keystore import KeyStore

    boot = "b" * 32
    store = KeyStore(keys)
    ac = AccessControl(SecretStr(boot), AccessSettings(keys_url=keys, rate_limit_per_s=1e9, rate_limit_burst=10**9),
                       store)
    out: dict[str, float] = {}
    for name, tok in (("gate_us", token), ("bootstrap_us", boot)):
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                ac.admit(ac.authenticate(tok))
            runs.append((time.perf_counter() - t0) / n * 1e6)
        out[name] = float(np.median(runs))
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--server", choices=["on", "off"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ledger", help=argparse.SUPPRESS)
    ap.add_argument("--keys", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.server:
        serve_main(args.server, args.port, args.ledger, args.keys, args.log)
        return

    import secrets

    from tradesys.serve.keystore import KeyStore

    levels = [int(c) for c in args.concurrency.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="api_auth_"))
    ledger, keys, log = f"sqlite:///{tmp / 'ledger.db'}", f"sqlite:///{tmp / 'keys.db'}", str(tmp / "access.jsonl")
    _populate(ledger)
    store = KeyStore(keys)
    _, token = store.create("read", "bench", rate_per_s=1e9, burst=10**9)
    store.close()
    env = {**os.environ, BOOT_ENV: secrets.token_urlsafe(24)}
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for mode in ("on", "off"):
            port = _free_port()
            cmd = [sys.executable, __file__, "--server", mode, "--port", str(port), "--ledger", ledger, "--keys",
                   keys, "--log", log]
            procs[mode] = (subprocess.Popen(cmd, env=env), f"http://127.0.0.1:{port}")
        for proc, base in procs.values():
            _wait_up(base, proc)
        one = {"S": [100.0], "K": 100.0, "T": 0.5, "r": 0.01, "q": 0.0, "sigma": 0.2, "type": "C"}
        rng = np.random.default_rng(7)
        many = {"S": rng.uniform(80, 120, 1000).round(4).tolist(), "K": 100.0, "T": 0.5, "r": 0.01, "q": 0.0,
                "sigma": 0.2, "type": "C"}
        cells = [("POST /v1/options/price", "batch 1", "POST", "/v1/options/price", json.dumps(one).encode()),
                 ("POST /v1/options/price", "batch 1,000", "POST", "/v1/options/price", json.dumps(many).encode()),
                 ("GET /v1/portfolio", "20 positions", "GET", "/v1/portfolio", None)]
        rows: list[dict[str, Any]] = []
        flip = False
        for route, what, method, path, body in cells:
            for c in levels:
                res: dict[str, Any] = {}
                for mode in (("off", "on") if flip else ("on", "off")):
                    headers = {"Content-Type": "application/json", "X-API-Key": token if mode == "on" else ""}
                    if mode == "off":
                        headers.pop("X-API-Key")
                    res[mode] = asyncio.run(_cell(procs[mode][1], method, path, body, headers, c, args.seconds))
                flip = not flip
                rows.append({"route": route, "request": what, "concurrency": c, **res})
                on, off = res["on"], res["off"]
                print(f"{route} {what} c={c}: on p50 {on['p50_ms']:.2f} ms p99 {on['p99_ms']:.2f} ms "
                      f"{on['rps']:.0f}/s | off p50 {off['p50_ms']:.2f} ms p99 {off['p99_ms']:.2f} ms "
                      f"{off['rps']:.0f}/s | non-200 on {on['non_200']} off {off['non_200']}", flush=True)
    finally:
        for proc, _ in procs.values():
            proc.terminate()
        for proc, _ in procs.values():
            proc.wait(timeout=30)
    per_call = _direct(keys, token)
    print(f"\nin process, per request: access gate (authenticate + bucket) {per_call['gate_us']:.2f} us, "
          f"bootstrap key {per_call['bootstrap_us']:.2f} us (median of 5 x 20,000 calls)")
    logged = len(Path(log).read_text(encoding="utf-8").splitlines()) if os.path.exists(log) else 0
    print(f"\naccess log lines written by the 'on' server: {logged:,}")
    print("\n| route | request | concurrency | on p50 ms | on p99 ms | on req/s | off p50 ms | off p99 ms | off req/s "
          "| p50 on/off |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        on, off = r["on"], r["off"]
        print(f"| `{r['route']}` | {r['request']} | {r['concurrency']} | {on['p50_ms']:.2f} | {on['p99_ms']:.2f} | "
              f"{on['rps']:,.0f} | {off['p50_ms']:.2f} | {off['p99_ms']:.2f} | {off['rps']:,.0f} | "
              f"{on['p50_ms'] / off['p50_ms']:.2f} |")
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
            "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "seconds_per_cell": args.seconds, **per_call}
    print(f"\n{json.dumps(meta)}")
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
