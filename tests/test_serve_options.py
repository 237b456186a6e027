"""The option analytics routes, in-process: values against QuantLib and the library, both encodings, and every
way a request can be wrong (4xx naming the field) versus a row that is wrong (200, null and a reason code)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.european import GREEK_NAMES, bsm_greeks
from tradesys.serve import create_api
from tradesys.serve.columnar import ARROW_STREAM, MAX_JSON_ROWS, arrow_stream, read_arrow_stream

ql = pytest.importorskip("QuantLib")

KEY = "options-test-key-51aa"
H = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_api(None, api_key=KEY)) as c:
        yield c


def post(c: TestClient, path: str, body: dict[str, Any]) -> Any:
    return c.post(path, json=body, headers=H)


def ql_european(S: float, K: float, T: float, r: float, q: float, sigma: float, call: bool) -> Any:
    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    maturity = today + round(T * 365)  # callers pass whole days: T = days / 365 exactly
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(S)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), sigma, dc)),
    )
    opt = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, K),
                           ql.EuropeanExercise(maturity))
    opt.setPricingEngine(ql.AnalyticEuropeanEngine(process))
    return opt, process, today, maturity


def test_price_and_greeks_match_quantlib(client: TestClient) -> None:
    rows = [(100.0, 90.0, 182 / 365, 0.03, 0.01, 0.25, True), (100.0, 120.0, 1.0, 0.05, 0.02, 0.3, False),
            (50.0, 50.0, 2.0, 0.0, 0.0, 0.15, True)]
    S, K, T, r, q, sigma, call = map(list, zip(*rows, strict=True))
    r_ = post(client, "/v1/options/price", {"S": S, "K": K, "T": T, "r": r, "q": q, "sigma": sigma,
                                            "type": ["C" if c else "P" for c in call], "greeks": ["delta", "gamma"]})
    assert r_.status_code == 200, r_.text
    body = r_.json()
    assert body["n"] == 3 and body["code"] == [0, 0, 0] and body["reasons"] == {}
    for i, row in enumerate(rows):
        opt, *_ = ql_european(*row)
        assert body["price"][i] == pytest.approx(opt.NPV(), rel=1e-10)
        assert body["delta"][i] == pytest.approx(opt.delta(), rel=1e-10)
        assert body["gamma"][i] == pytest.approx(opt.gamma(), rel=1e-10)
    assert set(body) == {"n", "price", "delta", "gamma", "code", "model", "reasons"}


def test_all_greeks_are_the_library_values_and_scalars_broadcast(client: TestClient) -> None:
    K = [80.0, 100.0, 125.0]
    body = post(client, "/v1/options/price", {"S": 100, "K": K, "T": 0.75, "r": 0.02, "q": 0.01, "sigma": 0.2,
                                              "is_call": False, "greeks": "all"}).json()
    g = bsm_greeks(100.0, np.array(K), 0.75, 0.02, 0.01, 0.2, False)
    for name in GREEK_NAMES:
        np.testing.assert_array_equal(np.array(body[name]), np.asarray(g[name]))


def test_black76(client: TestClient) -> None:
    body = post(client, "/v1/options/price", {"F": 100.0, "K": 105.0, "T": 0.5, "r": 0.04, "sigma": 0.3,
                                              "is_call": True, "model": "black76"}).json()
    d1 = (np.log(100 / 105) + 0.5 * 0.09 * 0.5) / (0.3 * np.sqrt(0.5))
    from scipy.stats import norm

    ref = np.exp(-0.02) * (100 * norm.cdf(d1) - 105 * norm.cdf(d1 - 0.3 * np.sqrt(0.5)))
    assert body["price"][0] == pytest.approx(ref, rel=1e-12)


def test_bad_rows_are_null_with_a_reason_and_the_rest_are_priced(client: TestClient) -> None:
    body = post(client, "/v1/options/price", {"S": [100, -1, 100, 100], "K": 100, "T": [1, 1, -1, 1],
                                              "sigma": [0.2, 0.2, 0.2, -0.1],
                                              "is_call": True}).json()
    assert body["price"][0] == pytest.approx(7.965567455405804, rel=1e-12)  # r = q = 0: 2 N(0.1) - 1, times 100
    assert body["price"][1:] == [None, None, None]
    assert body["code"] == [0, OptionError.NON_POSITIVE_SPOT, OptionError.NEGATIVE_EXPIRY, OptionError.NEGATIVE_VOL]
    assert set(body["reasons"]) == {str(int(c)) for c in body["code"][1:]}
    assert "NEGATIVE_VOL" in body["reasons"][str(int(OptionError.NEGATIVE_VOL))]


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"S": [1, 2], "K": [1, 2, 3], "T": 1, "sigma": 0.2, "is_call": True}, "S", 422),
        ({"S": 100, "K": 100, "T": 1, "is_call": True}, "sigma", 422),
        ({"S": 100, "K": 100, "T": 1, "sigma": 0.2}, "is_call", 422),
        ({"S": 100, "K": 100, "T": 1, "sigma": 0.2, "type": "X"}, "is_call", 422),
        ({"S": 100, "K": 100, "T": 1, "sigma": "abc", "is_call": True}, "sigma", 422),
        ({"S": 100, "K": 100, "T": 1, "sigma": 0.2, "is_call": True, "model": "heston"}, "model", 422),
        ({"S": 100, "K": 100, "T": 1, "sigma": 0.2, "is_call": True, "greeks": ["delta", "foo"]}, "greeks.1", 422),
        ({"S": 100, "K": 100, "T": 1, "sigam": 0.2, "is_call": True}, "sigam", 422),
        ({"S": [[1, 2]], "K": 100, "T": 1, "sigma": 0.2, "is_call": True}, "S", 422),
    ],
)
def test_bad_requests_name_the_field(client: TestClient, body: dict[str, Any], field: str, status: int) -> None:
    r = post(client, "/v1/options/price", body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["error"] == "validation_error"
    assert err["detail"][0]["field"] == field, err
    assert "Traceback" not in r.text


def test_transport_errors(client: TestClient) -> None:
    r = client.post("/v1/options/price", content=b"{not json", headers={**H, "Content-Type": "application/json"})
    assert (r.status_code, r.json()["detail"][0]["field"]) == (422, "body")
    r = client.post("/v1/options/price", content=b"[1, 2]", headers={**H, "Content-Type": "application/json"})
    assert (r.status_code, r.json()["detail"][0]["field"]) == (422, "body")
    r = client.post("/v1/options/price", content=b"S=1", headers={**H, "Content-Type": "text/csv"})
    assert (r.status_code, r.json()["error"]) == (415, "unsupported_media_type")
    r = client.post("/v1/options/price", content=b"garbage", headers={**H, "Content-Type": ARROW_STREAM})
    assert (r.status_code, r.json()["detail"][0]["field"]) == (422, "body")
    assert client.post("/v1/options/price", json={"S": 1}).status_code == 401


def test_implied_vol_round_trip_and_bounds(client: TestClient) -> None:
    rng = np.random.default_rng(7)
    n = 500
    S, K = 100.0, rng.uniform(40, 250, n)
    T, sigma = rng.uniform(0.02, 3, n), rng.uniform(0.05, 1.2, n)
    call = rng.random(n) < 0.5
    cols = {"S": S, "K": K.tolist(), "T": T.tolist(), "r": 0.03, "q": 0.01, "sigma": sigma.tolist(),
            "is_call": call.tolist()}
    prices = post(client, "/v1/options/price", cols).json()["price"]
    fwd_intrinsic = np.maximum(np.where(call, 1, -1) * (S * np.exp(-0.01 * T) - K * np.exp(-0.03 * T)), 0)
    keep = np.array(prices) - fwd_intrinsic > 1e-8 * S  # no time value left in double: no vol information left
    iv = post(client, "/v1/options/iv", {**{k: v for k, v in cols.items() if k != "sigma"}, "price": prices}).json()
    got = np.array(iv["iv"], dtype=float)
    assert np.max(np.abs(got[keep] / sigma[keep] - 1)) < 1e-9
    bad = post(client, "/v1/options/iv", {"price": [0.5, 200.0], "S": 100, "K": [50, 100], "T": 1,
                                          "is_call": True}).json()
    assert bad["iv"] == [None, None]
    assert bad["code"] == [OptionError.PRICE_BELOW_INTRINSIC, OptionError.PRICE_ABOVE_MAX]


def test_american_put_matches_quantlib_and_methods_agree(client: TestClient) -> None:
    S, K, T, r, q, sigma = 36.0, 40.0, 1.0, 0.06, 0.0, 0.2
    _, process, today, maturity = ql_european(S, K, T, r, q, sigma, False)
    amer = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Put, K), ql.AmericanExercise(today, maturity))
    amer.setPricingEngine(ql.FdBlackScholesVanillaEngine(process, 2000, 2000))
    ref = amer.NPV()
    cols = {"S": S, "K": K, "T": T, "r": r, "q": q, "sigma": sigma, "is_call": False}
    for method, tol in (("lr", 2e-3), ("crr", 5e-3), ("fd", 2e-3)):
        body = post(client, "/v1/options/american", {**cols, "method": method}).json()
        assert body["price"][0] == pytest.approx(ref, abs=tol), method
        assert body["code"] == [0]
    lsm = post(client, "/v1/options/american", {**cols, "method": "lsm", "resolution": 20_000, "style": "bermudan",
                                                "exercise_per_year": 50}).json()
    assert abs(lsm["price"][0] - ref) < 4 * lsm["stderr"][0] + 0.01  # Bermudan(50/yr) sits just below American


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"method": "binomial"}, "method"), ({"resolution": 10**7}, "resolution"),
     ({"style": "bermudan"}, "exercise_per_year"), ({"style": "asian"}, "style")],
)
def test_american_bad_options(client: TestClient, extra: dict[str, Any], field: str) -> None:
    r = post(client, "/v1/options/american", {"S": 100, "K": 100, "T": 1, "sigma": 0.2, "is_call": False, **extra})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == field, r.text


def test_arrow_in_and_out_for_a_batch_beyond_the_json_limit(client: TestClient) -> None:
    n = MAX_JSON_ROWS + 1
    rng = np.random.default_rng(3)
    cols = {"S": np.full(n, 100.0), "K": rng.uniform(50, 150, n), "T": rng.uniform(0.1, 2, n),
            "r": np.full(n, 0.01), "q": np.zeros(n), "sigma": rng.uniform(0.1, 0.6, n), "is_call": rng.random(n) < 0.5}
    too_big = {k: v.tolist() for k, v in cols.items()}
    r = post(client, "/v1/options/price", too_big)
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "rows"
    r = client.post("/v1/options/price", params={"greeks": "delta,vega"}, content=arrow_stream(cols),
                    headers={**H, "Content-Type": ARROW_STREAM, "Accept": ARROW_STREAM})
    assert r.status_code == 200 and r.headers["content-type"] == ARROW_STREAM
    out, meta = read_arrow_stream(r.content)
    g = bsm_greeks(cols["S"], cols["K"], cols["T"], cols["r"], cols["q"], cols["sigma"], cols["is_call"])
    for name in ("price", "delta", "vega"):
        np.testing.assert_array_equal(out[name], g[name])
    assert out["code"].dtype == np.int8 and not out["code"].any() and meta == {"model": "bsm", "reasons": {}}


def test_arrow_nulls_are_refused_with_the_column_named(client: TestClient) -> None:
    import pyarrow as pa

    table = pa.table({"S": pa.array([100.0, None]), "K": [100.0, 100.0], "T": [1.0, 1.0], "sigma": [0.2, 0.2],
                      "is_call": [True, True]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    r = client.post("/v1/options/price", content=sink.getvalue().to_pybytes(),
                    headers={**H, "Content-Type": ARROW_STREAM})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "S"
    assert json.loads(r.text)["error"] == "validation_error"


# --- /v1/vol/surface -------------------------------------------------------------------------------------------------


def _chain(smile: float = 0.0) -> dict[str, list]:
    """A chain priced with BSM from a known smile, vol(K) = 0.25 + smile * ln(K/F)^2, 2 bp bid/ask around the price."""
    from tradesys.quant.options.european import bsm_price

    rows: dict[str, list] = {k: [] for k in ("strike", "expiry", "bid", "ask", "type", "underlying", "rate",
                                             "dividend")}
    S, r, q = 100.0, 0.03, 0.01
    for T in (0.25, 0.5, 1.0):
        F = S * np.exp((r - q) * T)
        for K in np.linspace(70, 140, 15):
            vol = 0.25 + smile * np.log(K / F) ** 2
            for kind in ("C", "P"):
                p = float(bsm_price(S, K, T, r, q, vol, kind == "C"))
                rows["strike"].append(float(K))
                rows["expiry"].append(T)
                rows["bid"].append(max(p - 0.0002 * S, 0.0))
                rows["ask"].append(p + 0.0002 * S)
                rows["type"].append(kind)
                rows["underlying"].append(S)
                rows["rate"].append(r)
                rows["dividend"].append(q)
    return rows


def test_vol_surface_recovers_the_smile_it_was_priced_with(client: TestClient) -> None:
    chain = _chain(smile=0.4)
    K, T = [80.0, 100.0, 125.0], [0.5, 0.5, 1.0]
    r = post(client, "/v1/vol/surface", {**chain, "query_K": K, "query_T": T})
    assert r.status_code == 200, r.text
    body = r.json()
    for k, t, v in zip(K, T, body["query"]["vol"], strict=True):
        F = 100.0 * np.exp(0.02 * t)
        assert v == pytest.approx(0.25 + 0.4 * np.log(k / F) ** 2, abs=2e-3), (k, t)
    assert len(body["expiries"]) == 3
    assert body["report"]["butterfly"] is not None


def test_vol_surface_over_arrow(client: TestClient) -> None:
    chain = _chain()
    r = client.post("/v1/vol/surface", params={"query_K": "90,110", "query_T": "0.75", "model": "svi"},
                    content=arrow_stream(chain), headers={**H, "Content-Type": ARROW_STREAM})
    assert r.status_code == 200, r.text
    assert r.json()["query"]["vol"] == pytest.approx([0.25, 0.25], abs=2e-3)  # flat 25%, inside the spread


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda c: c.pop("bid"), "bid"),
        (lambda c: c.update(ask=c["ask"][:-1]), "ask"),
        (lambda c: c.update(model="heston"), "model"),
        (lambda c: c.update(query_K=[100.0]), "query_T"),
    ],
)
def test_vol_surface_bad_input(client: TestClient, mutate: Any, field: str) -> None:
    chain: dict[str, Any] = _chain()
    mutate(chain)
    r = post(client, "/v1/vol/surface", chain)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field, r.json()


@pytest.mark.parametrize("strike", [[[90, 100], 110], [{"a": 1}, 110]])
def test_vol_surface_refuses_a_nested_column_with_a_4xx(client: TestClient, strike: list[Any]) -> None:
    """A ragged or nested chain column is a 422 naming the problem, not a 500 (found by tests/test_api_fuzz.py)."""
    body = {"strike": strike, "expiry": [0.5, 0.5], "bid": [1.0, 1.0], "ask": [2.0, 2.0], "type": ["C", "C"],
            "underlying": 100.0}
    r = client.post("/v1/vol/surface", json=body, headers={"X-API-Key": KEY})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error" and r.json()["detail"], r.text
