"""Access control of the HTTP API: keys with roles in a real store (SQLite and the real PostgreSQL), rotation
without restart, per-key rate limits (429 + Retry-After), the access log (never bodies or keys), the Alertmanager
receiver (idempotent, into the ledger's audit log), `tradesys keys`, and TLS over real HTTPS on Ray Serve."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import free_port
from tradesys.config import ConfigError
from tradesys.ledger import SqliteLedger
from tradesys.serve import create_api, run_serve
from tradesys.serve.access import AccessSettings, check_routes, replica_share, require
from tradesys.serve.keys import ROLES, TokenBucket, allows, hash_token
from tradesys.serve.keystore import KeyStore
from tradesys.serve.tls import check_tls

BOOT = "bootstrap-admin-key-5d1e"
PRICE = {"S": [100.0], "K": 100.0, "T": 0.5, "r": 0.0, "q": 0.0, "sigma": 0.2, "type": "C"}


@pytest.fixture(params=["sqlite", "postgres"])
def keys_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keys.db'}"
    return str(request.getfixturevalue("pg_dsn"))


def _client(keys_url: str, tmp_path: Path, **settings: Any) -> TestClient:
    acc = AccessSettings(keys_url=keys_url, keys_refresh_s=settings.pop("keys_refresh_s", 0.05), **settings)
    return TestClient(create_api(f"sqlite:///{tmp_path / 'ledger.db'}", api_key=BOOT, access=acc))


def _poll(fn: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return fn()


def _am_payload(status: str = "firing", fingerprint: str = "c5a3b1f7e8d90a12", alertname: str = "KillSwitchTripped",
                starts: str = "2026-12-07T01:00:00.123Z") -> dict[str, Any]:
    """Alertmanager's webhook body, version 4, as its docs give it (a firing alert's endsAt is the zero time)."""
    ends = "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-07T01:05:00Z"
    return {
        "version": "4", "groupKey": f'{{}}:{{alertname="{alertname}"}}', "truncatedAlerts": 0, "status": status,
        "receiver": "tradesys", "groupLabels": {"alertname": alertname},
        "commonLabels": {"alertname": alertname, "severity": "page"}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": status, "labels": {"alertname": alertname, "severity": "page", "run_id": "r1"},
                    "annotations": {"summary": "kill switch tripped on run r1"}, "startsAt": starts,
                    "endsAt": ends, "generatorURL": "http://prometheus:9090/graph", "fingerprint": fingerprint}],
    }


# --- pure parts -------------------------------------------------------------------------------------------------


def test_role_order_and_token_bucket_against_its_formula() -> None:
    assert [allows(h, n) for h in ROLES for n in ROLES] == [
        True, False, False, True, True, False, True, True, True]
    b = TokenBucket(rate=4.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.25)  # one token needs 1/rate seconds
    assert b.take(0.1) == pytest.approx(0.15)  # 0.4 tokens refilled: 0.6 more needed at 4/s
    assert b.take(0.25) == 0.0
    # over a long run the admitted count is burst + rate * elapsed
    b2, admitted = TokenBucket(rate=10.0, burst=5, now=0.0), 0
    for i in range(2051):  # 0 .. 2.05 s
        admitted += b2.take(i / 1000) == 0.0
    assert admitted == 5 + 20


# --- the store, on SQLite and on the real PostgreSQL ------------------------------------------------------------


def test_store_keeps_only_a_salted_hash_and_revokes(keys_url: str, tmp_path: Path) -> None:
    store = KeyStore(keys_url)
    try:
        rec, token = store.create("trade", "desk", rate_per_s=5.0, burst=2)
        rec2, token2 = store.create("trade", "desk")
        assert token.startswith(f"tsk_{rec.key_id}_") and len(token) == 4 + 12 + 1 + 43
        listed = {k.key_id: k for k in store.list_keys()}
        assert set(listed) == {rec.key_id, rec2.key_id}
        got = listed[rec.key_id]
        assert (got.role, got.name, got.rate_per_s, got.burst, got.active) == ("trade", "desk", 5.0, 2, True)
        assert got.token_hash == hash_token(token, got.salt) != hash_token(token, listed[rec2.key_id].salt)
        assert got.matches(token) and not got.matches(token2) and not got.matches(token[:-1] + "x")
        assert token not in json.dumps([k.public() for k in listed.values()])
        assert "salt" not in got.public() and "token_hash" not in got.public()
        assert store.revoke(rec.key_id) and not store.revoke(rec.key_id) and not store.revoke("nope")
        assert [k.active for k in store.list_keys()] == [False, True]
        with pytest.raises(ValueError, match=r"^role: must be one of read, trade, admin"):
            store.create("root")
    finally:
        store.close()
    if keys_url.startswith("sqlite"):
        raw = (tmp_path / "keys.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("keys.db-*"))
        assert token.encode() not in raw and token2.encode() not in raw


# --- the API: roles, rotation, limits, log ----------------------------------------------------------------------


def test_every_v1_route_declares_a_role_in_openapi(tmp_path: Path) -> None:
    app = create_api(f"sqlite:///{tmp_path / 'l.db'}", api_key=BOOT)
    doc = app.openapi()
    ops = [(p, m, op) for p, item in doc["paths"].items() if p.startswith("/v1/") for m, op in item.items()]
    assert len(ops) >= 15
    for path, method, op in ops:
        assert op.get("x-tradesys-role") in ROLES, (method, path)
        assert op.get("security") == [{"ApiKeyAuth": []}], (method, path)
    roles = {(p, m): op["x-tradesys-role"] for p, m, op in ops}
    assert roles[("/v1/alerts", "post")] == "admin" and roles[("/v1/portfolio", "get")] == "read"
    bare = FastAPI()
    bare.get("/v1/open")(lambda: {})
    with pytest.raises(RuntimeError, match=r"^route /v1/open: declares no role"):
        check_routes(bare.routes)
    ok = FastAPI()
    ok.get("/v1/closed", dependencies=[Depends(require("trade", None))])(lambda: {})
    assert check_routes(ok.routes) == {"GET /v1/closed": "trade"}


def test_roles_401_403_and_rotation_without_restart(keys_url: str, tmp_path: Path) -> None:
    store = KeyStore(keys_url)
    read, read_tok = store.create("read", "viewer")
    with _client(keys_url, tmp_path) as c:
        def status(method: str, path: str, token: str | None, **kw: Any) -> int:
            headers = {} if token is None else {"X-API-Key": token}
            return c.request(method, path, headers=headers, **kw).status_code

        assert status("GET", "/v1/portfolio", None) == 401
        assert c.get("/v1/portfolio", headers={"X-API-Key": read_tok[:-2] + "zz"}).json()["detail"] == [
            {"field": "X-API-Key", "reason": "invalid API key"}]
        assert status("GET", "/v1/portfolio", read_tok) == 200
        assert status("POST", "/v1/options/price", read_tok, json=PRICE) == 200
        r = c.post("/v1/alerts", json=_am_payload(), headers={"X-API-Key": read_tok})
        assert r.status_code == 403 and r.json() == {"error": "forbidden", "detail": [{"field": "X-API-Key", "reason":
            f"key {read.key_id} has role 'read'; this route needs 'admin'"}]}  # fmt: skip
        assert status("POST", "/v1/alerts", BOOT, json=_am_payload()) == 200  # the env key is admin
        # without a key nothing about the route or the body is answered: 401 before the body is parsed
        assert status("POST", "/v1/options/price", None, content=b"{not json") == 401
        assert status("GET", "/v1/no-such-route", None) == 401
        assert status("GET", "/health", None) == 200

        # rotation: a key created and one revoked while the API runs take effect without a restart
        _, admin_tok = store.create("admin", "pager")
        assert _poll(lambda: status("POST", "/v1/alerts", admin_tok, json=_am_payload()) == 200)
        assert store.revoke(read.key_id)
        assert _poll(lambda: status("GET", "/v1/portfolio", read_tok) == 401)
        assert status("GET", "/v1/portfolio", admin_tok) == 200
    store.close()


def test_rate_limit_429_with_retry_after_per_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    store = KeyStore(url)
    _, slow = store.create("read", "slow", rate_per_s=1.0, burst=3)
    _, other = store.create("read", "other")  # the server default: no limit here
    with _client(url, tmp_path) as c:
        codes = [c.get("/v1/portfolio", headers={"X-API-Key": slow}).status_code for _ in range(3)]
        r = c.get("/v1/portfolio", headers={"X-API-Key": slow})
        assert codes == [200, 200, 200] and r.status_code == 429
        wait = int(r.headers["Retry-After"])
        assert 1 <= wait <= 2 and r.json()["detail"][0]["field"] == "X-API-Key"
        assert "1 requests/s (burst 3)" in r.json()["detail"][0]["reason"]
        assert all(c.get("/v1/portfolio", headers={"X-API-Key": other}).status_code == 200 for _ in range(20))
        time.sleep(wait)
        assert c.get("/v1/portfolio", headers={"X-API-Key": slow}).status_code == 200
    with _client(url, tmp_path, rate_limit_per_s=2.0, rate_limit_burst=2) as c:  # the server default applies
        codes = [c.get("/v1/portfolio", headers={"X-API-Key": other}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
    store.close()


def test_the_limit_is_the_apps_each_of_n_replicas_enforces_its_share(tmp_path: Path) -> None:
    """With N replicas each enforces rate/N and ceil(burst/N): two replicas (two apps on one store, as Serve runs
    them) admit together the key's burst at once, and the 429 says the limit is spread over the replicas."""
    assert replica_share(10.0, 4, 2) == (5.0, 2) and replica_share(10.0, 5, 2) == (5.0, 3)
    assert replica_share(None, 50, 4) == (None, 13) and replica_share(3.0, 1, 8) == (3.0 / 8, 1)
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    store = KeyStore(url)
    _, tok = store.create("read", "desk", rate_per_s=0.01, burst=4)  # no refill within the test
    with _client(url, tmp_path, replicas=2) as a, _client(url, tmp_path, replicas=2) as b:
        h = {"X-API-Key": tok}
        codes_a = [a.get("/v1/portfolio", headers=h).status_code for _ in range(4)]
        codes_b = [b.get("/v1/portfolio", headers=h).status_code for _ in range(4)]
        assert codes_a == codes_b == [200, 200, 429, 429]  # 2 + 2 = the key's burst of 4, app-wide
        reason = a.get("/v1/portfolio", headers=h).json()["detail"][0]["reason"]
        assert "0.01 requests/s (burst 4 over 2 replicas)" in reason
    with _client(url, tmp_path) as one:  # one replica: the whole limit
        assert [one.get("/v1/portfolio", headers=h).status_code for _ in range(5)] == [200] * 4 + [429]
    store.close()


def test_bearer_authorization_is_the_same_key(tmp_path: Path) -> None:
    """`Authorization: Bearer <key>` (what Alertmanager 0.25's `authorization:` block sends, with the key read from
    `credentials_file`) authenticates like `X-API-Key`: same roles, same 401s; X-API-Key wins when both come."""
    import yaml

    am = yaml.safe_load((Path(__file__).resolve().parents[1] / "deploy/prometheus/alertmanager.yml").read_text())
    http = am["receivers"][0]["webhook_configs"][0]["http_config"]
    assert http["authorization"]["type"] == "Bearer" and "credentials_file" in http["authorization"]
    assert "http_headers" not in http  # needs Alertmanager 0.28
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    store = KeyStore(url)
    _, admin_tok = store.create("admin", "alertmanager")
    _, read_tok = store.create("read", "viewer")
    cred = tmp_path / "alertmanager-api-key"
    cred.write_text(admin_tok + "\n")

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"{http['authorization']['type']} {token}"}

    with _client(url, tmp_path) as c:
        r = c.post("/v1/alerts", json=_am_payload(), headers=bearer(cred.read_text().strip()))
        assert r.status_code == 200 and r.json()["recorded"] == 1
        assert c.get("/v1/alerts", headers=bearer(admin_tok)).json()["alerts"][0]["key_id"] == admin_tok[4:16]
        assert c.get("/v1/alerts", headers={"Authorization": f"bearer {BOOT}"}).status_code == 200
        assert c.get("/v1/portfolio", headers=bearer(read_tok)).status_code == 200
        r = c.post("/v1/alerts", json=_am_payload(), headers=bearer(read_tok))
        assert r.status_code == 403 and "needs 'admin'" in r.json()["detail"][0]["reason"]
        for headers in (bearer(admin_tok[:-1] + "x"), {"Authorization": f"Basic {admin_tok}"},
                        {"Authorization": "Bearer"}, {**bearer(admin_tok), "X-API-Key": "wrong"}):
            r = c.get("/v1/alerts", headers=headers)
            assert r.status_code == 401 and r.json()["detail"][0]["field"] == "X-API-Key", headers
    store.close()


def test_access_log_has_key_route_status_latency_and_never_bodies_or_keys(tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path / 'keys.db'}", tmp_path / "logs" / "access.jsonl"
    store = KeyStore(url)
    rec, tok = store.create("read", "viewer")
    marker = "BODY-MARKER-93c1"
    with _client(url, tmp_path, access_log=str(log)) as c:
        c.post("/v1/options/price", json={**PRICE, "note": marker}, headers={"X-API-Key": tok})
        c.get("/v1/orders/o-1", headers={"X-API-Key": tok})
        c.post("/v1/alerts", json=_am_payload(alertname=marker), headers={"X-API-Key": tok})  # 403
        c.post("/v1/alerts", json=_am_payload(alertname=marker), headers={"X-API-Key": BOOT})
        c.get("/v1/fills", headers={"X-API-Key": "wrong-" + marker})
        c.get("/health")
    store.close()
    text = log.read_text()
    for secret in (marker, tok, BOOT, rec.salt, rec.token_hash):
        assert secret not in text
    rows = [json.loads(line) for line in text.splitlines()]
    got = [(r["key_id"], r["method"], r["route"], r["status"]) for r in rows]
    assert got == [
        (rec.key_id, "POST", "/v1/options/price", 422),  # the extra field is refused (and not logged)
        (rec.key_id, "GET", "/v1/orders/{client_order_id}", 404),
        (rec.key_id, "POST", "/v1/alerts", 403),
        ("env", "POST", "/v1/alerts", 200),
        (None, "GET", "/v1/fills", 401),
        (None, "GET", "/health", 200),
    ]
    assert all(r["latency_ms"] > 0 and set(r) == {"ts", "key_id", "role", "method", "route", "status", "latency_ms"}
               for r in rows)


# --- the Alertmanager receiver ----------------------------------------------------------------------------------


def test_alerts_recorded_once_per_fingerprint_start_and_status(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    h = {"X-API-Key": BOOT}
    with _client(url, tmp_path) as c:
        r = c.post("/v1/alerts", json=_am_payload(), headers=h)
        assert r.json() == {"received": 1, "recorded": 1, "duplicates": 0}
        assert c.post("/v1/alerts", json=_am_payload(), headers=h).json()["recorded"] == 0  # a retry
        assert c.post("/v1/alerts", json=_am_payload("resolved"), headers=h).json()["recorded"] == 1
        two = _am_payload(fingerprint="ffff000011112222", alertname="VarOverLimit")
        two["alerts"].append(_am_payload()["alerts"][0])
        assert c.post("/v1/alerts", json=two, headers=h).json() == {"received": 2, "recorded": 1, "duplicates": 1}
        listed = c.get("/v1/alerts", headers=h).json()["alerts"]
        assert [(a["alertname"], a["status"]) for a in listed] == [
            ("KillSwitchTripped", "firing"), ("KillSwitchTripped", "resolved"), ("VarOverLimit", "firing")]
        assert listed[0]["ends_at"] is None and listed[1]["ends_at"].startswith("2026-12-07T01:05:00")
        assert listed[0]["labels"]["run_id"] == "r1" and listed[0]["key_id"] == "env"
        assert dt.datetime.fromisoformat(listed[0]["starts_at"]) == dt.datetime(
            2026, 12, 7, 1, 0, 0, 123000, tzinfo=dt.UTC)

        # bad bodies: 422 naming the field
        for body, field in [({**_am_payload(), "version": "3"}, "version"), ({**_am_payload(), "alerts": []}, "alerts"),
                            ({k: v for k, v in _am_payload().items() if k != "status"}, "status")]:
            r = c.post("/v1/alerts", json=body, headers=h)
            assert r.status_code == 422 and r.json()["detail"][0]["field"] == field, r.json()
        nameless = _am_payload()
        nameless["alerts"][0]["labels"] = {"severity": "page"}
        r = c.post("/v1/alerts", json=nameless, headers=h)
        assert (r.status_code, r.json()["detail"][0]["field"]) == (422, "alerts.0.labels.alertname")
    with SqliteLedger(tmp_path / "ledger.db") as led:
        audit = led.audit_log("alert")
    assert [a["message"] for a in audit] == [
        "firing KillSwitchTripped: kill switch tripped on run r1",
        "resolved KillSwitchTripped: kill switch tripped on run r1",
        "firing VarOverLimit: kill switch tripped on run r1"]


# --- tradesys keys ----------------------------------------------------------------------------------------------


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    from tradesys.cli import app

    s = ["-s", f'serve.keys_url="sqlite:///{tmp_path / "k.db"}"']
    run = CliRunner().invoke
    r = run(app, ["keys", "create", "--role", "trade", "--name", "algo", "--rate-limit", "20", "--json", *s])
    assert r.exit_code == 0, r.output
    made = json.loads(r.stdout)
    assert made["role"] == "trade" and made["rate_per_s"] == 20.0 and made["token"].startswith("tsk_")
    listed = run(app, ["keys", "list", *s])
    assert made["key_id"] in listed.stdout and "algo" in listed.stdout and made["token"] not in listed.stdout
    assert json.loads(run(app, ["keys", "list", "--json", *s]).stdout)[0]["key_id"] == made["key_id"]
    assert run(app, ["keys", "revoke", made["key_id"], *s]).stdout.strip() == f"revoked {made['key_id']}"
    assert json.loads(run(app, ["keys", "list", "--json", *s]).stdout) == []
    assert len(json.loads(run(app, ["keys", "list", "--json", "--all", *s]).stdout)) == 1
    for args, line in [(["revoke", made["key_id"]], f"usage error: KEY_ID: no active key '{made['key_id']}'"),
                       (["create", "--role", "root"], "usage error: --role: must be one of read, trade, admin"),
                       (["create", "--role", "read", "--rate-limit", "0"], "usage error: --rate-limit: must be > 0"),
                       (["list"], "config error: serve.keys_url")]:
        r = run(app, ["keys", *args, *(s if args != ["list"] else ["-s", 'serve.keys_url="mysql://x"'])])
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
        assert r.stderr.startswith(line), r.stderr


# --- TLS --------------------------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_settings_are_checked_with_one_line_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _self_signed(tmp_path)
    assert check_tls(None, None) is None
    assert check_tls(str(cert), str(key)) == (str(cert), str(key))
    (tmp_path / "other").mkdir()
    other_cert, _ = _self_signed(tmp_path / "other")
    cases = [((str(cert), None), "serve.tls_keyfile: required with the other TLS setting"),
             ((str(tmp_path / "none.pem"), str(key)), "serve.tls_certfile: "),
             ((str(cert), str(tmp_path)), "serve.tls_keyfile: "),
             ((str(other_cert), str(key)), "serve.tls_certfile: "),
             ((str(key), str(cert)), "serve.tls_certfile: ")]
    for (c, k), msg in cases:
        with pytest.raises(ConfigError) as e:
            check_tls(c, k)
        assert str(e.value).startswith(msg) and "\n" not in str(e.value)
    from tradesys.cli import app

    monkeypatch.setenv("TRADESYS_API_KEY", "k")
    r = CliRunner().invoke(app, ["serve", "-s", f'serve.tls_certfile="{tmp_path / "missing.pem"}"', "-s",
                                 f'serve.tls_keyfile="{key}"'])  # refused before Ray starts
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        f"config error: serve.tls_certfile: '{tmp_path / 'missing.pem'}' is not a file"]


@pytest.fixture()
def serve_shutdown() -> Iterator[None]:
    yield
    from ray import serve

    serve.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_https_on_ray_serve_with_a_self_signed_certificate_and_store_keys(
    ray_session: None, serve_shutdown: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real proxy speaks HTTPS only; a key written to the store by this process works through the replica,
    the access log is written by the replica, and a revoked key stops working without a restart."""
    cert, key = _self_signed(tmp_path)
    keys_url, log = f"sqlite:///{tmp_path / 'keys.db'}", tmp_path / "access.jsonl"
    monkeypatch.setenv("TRADESYS_API_KEY", BOOT)
    port = free_port()
    run_serve(None, "127.0.0.1", port, name="tls", tls_certfile=str(cert), tls_keyfile=str(key),
              access=AccessSettings(keys_url=keys_url, keys_refresh_s=0.2, access_log=str(log)))
    base = f"https://127.0.0.1:{port}"
    with httpx.Client(verify=str(cert), timeout=30) as c:
        assert _poll(lambda: _ok(c, f"{base}/health"), 120)
        assert c.post(f"{base}/v1/options/price", json=PRICE).status_code == 401
        store = KeyStore(keys_url)  # this process writes, the replica (another process) re-reads
        rec, tok = store.create("read", "tls-client")
        kid = rec.key_id
        assert _poll(lambda: c.post(f"{base}/v1/options/price", json=PRICE, headers={"X-API-Key": tok})
                     .status_code == 200)
        r = c.post(f"{base}/v1/options/price", json=PRICE, headers={"X-API-Key": tok})
        assert r.json()["price"][0] == pytest.approx(5.637197779701664, rel=1e-12)  # BSM(100, 100, 0.5, 0.2)
        assert store.revoke(kid)
        store.close()
        assert _poll(lambda: c.post(f"{base}/v1/options/price", json=PRICE, headers={"X-API-Key": tok})
                     .status_code == 401)
    with pytest.raises(httpx.TransportError):  # plain HTTP is not served on the TLS port
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
    with pytest.raises(httpx.ConnectError):  # and the certificate is checked: an unknown issuer is refused
        httpx.get(f"{base}/health", timeout=10)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(r["key_id"] == kid and r["status"] == 200 and r["route"] == "/v1/options/price" for r in rows)
    assert tok not in log.read_text() and BOOT not in log.read_text()


def _ok(c: httpx.Client, url: str) -> bool:
    try:
        return c.get(url).status_code == 200
    except httpx.TransportError:
        return False
