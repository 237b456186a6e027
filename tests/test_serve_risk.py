"""Risk and allocation routes, in-process: answers against independent references (PyPortfolioOpt, Bacon's
published Brinson example, numpy least squares, closed forms) and 422s that name the field for bad input."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tradesys.serve import create_api

KEY = "risk-test-key-0c1d"
H = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_api(None, api_key=KEY)) as c:
        yield c


@pytest.fixture(scope="module")
def stocks() -> pd.DataFrame:
    from skfolio.datasets import load_sp500_dataset

    return load_sp500_dataset().pct_change().dropna().iloc[-750:, :8]


def post(c: TestClient, path: str, body: dict[str, Any]) -> Any:
    return c.post(path, json=body, headers=H)


def columns(frame: pd.DataFrame) -> dict[str, list[float]]:
    return {str(k): v.tolist() for k, v in frame.items()}


# --- /v1/portfolio/optimize ------------------------------------------------------------------------------------------


def test_min_variance_and_max_sharpe_match_pypfopt(client: TestClient, stocks: pd.DataFrame) -> None:
    from pypfopt import EfficientFrontier

    mu, cov = stocks.mean() * 252, stocks.cov() * 252
    for objective, solve in (("min_variance", "min_volatility"), ("max_sharpe", "max_sharpe")):
        r = post(client, "/v1/portfolio/optimize", {"returns": columns(stocks), "objective": objective,
                                                    "constraints": {"upper": 0.3}})
        assert r.status_code == 200, r.text
        body = r.json()
        ef = EfficientFrontier(mu, cov, weight_bounds=(0, 0.3))
        getattr(ef, solve)(**({"risk_free_rate": 0.0} if solve == "max_sharpe" else {}))
        ref = ef.clean_weights(rounding=None)
        for asset, w in ref.items():
            assert body["weights"][asset] == pytest.approx(w, abs=2e-4), (objective, asset)
        assert sum(body["weights"].values()) == pytest.approx(1.0, abs=1e-8)
        assert max(body["weights"].values()) <= 0.3 + 1e-8


def test_mu_cov_input_closed_form_and_frontier(client: TestClient) -> None:
    cov = np.array([[0.04, 0.006, 0.0], [0.006, 0.09, 0.01], [0.0, 0.01, 0.16]])
    body = post(client, "/v1/portfolio/optimize", {"mu": [0.05, 0.08, 0.12], "cov": cov.tolist(),
                                                   "assets": ["a", "b", "c"],
                                                   "constraints": {"long_only": False, "lower": -1, "upper": 2},
                                                   "frontier_points": 6}).json()
    inv = np.linalg.solve(cov, np.ones(3))
    np.testing.assert_allclose([body["weights"][k] for k in "abc"], inv / inv.sum(), atol=1e-6)
    vols = [p["volatility"] for p in body["frontier"]]
    rets = [p["expected_return"] for p in body["frontier"]]
    assert len(vols) >= 6 and vols == sorted(vols) and rets == sorted(rets)  # monotone frontier


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mu": [0.1, 0.1], "cov": [[0.04, 0.05], [0.05, 0.01]], "assets": ["a", "b"]}, "cov"),  # not PSD
        ({"mu": [0.1, 0.1, 0.1], "cov": [[0.04, 0.0], [0.0, 0.01]], "assets": ["a", "b"]}, "mu"),  # lengths
        ({"returns": {"a": [0.01, None, 0.02], "b": [0.0, 0.01, 0.02]}}, "returns"),  # a missing value
        ({"returns": {"a": [0.01, 0.02], "b": [0.0]}}, "returns.b"),  # ragged columns
        ({"mu": [0.1, 0.2], "cov": [[0.04, 0.0], [0.0, 0.01]], "assets": ["a", "b"],
          "constraints": {"upper": 0.4}}, "constraints"),  # infeasible: two assets capped at 40% cannot sum to 1
        ({"mu": [0.1], "cov": [[0.04]], "assets": ["a"], "objective": "best"}, "objective"),
        ({"mu": [0.1], "cov": [[0.04]], "assets": ["a"], "objective": "target_return"}, "target_return"),
    ],
)
def test_optimize_bad_input_names_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    r = post(client, "/v1/portfolio/optimize", body)
    assert r.status_code == 422, r.text
    got = r.json()["detail"][0]["field"]
    assert got == field or got.startswith(field), r.json()


# --- /v1/risk/attribution --------------------------------------------------------------------------------------------


def test_brinson_reproduces_bacon(client: TestClient) -> None:
    """Bacon (2008) Table 5.3, Brinson-Fachler: allocation -1.2%, selection 3.0%, interaction 0.1%."""
    sectors = ["UK", "Japan", "US"]
    body = post(client, "/v1/risk/attribution", {
        "kind": "brinson",
        "portfolio_weights": dict(zip(sectors, [0.4, 0.3, 0.3], strict=True)),
        "benchmark_weights": dict(zip(sectors, [0.4, 0.2, 0.4], strict=True)),
        "portfolio_returns": dict(zip(sectors, [0.20, -0.05, 0.06], strict=True)),
        "benchmark_returns": dict(zip(sectors, [0.10, -0.04, 0.08], strict=True)),
    }).json()
    assert body["portfolio_return"] == pytest.approx(0.083) and body["benchmark_return"] == pytest.approx(0.064)
    assert body["total_allocation"] == pytest.approx(-0.012, abs=1e-12)
    assert body["total_selection"] == pytest.approx(0.030, abs=1e-12)
    assert body["total_interaction"] == pytest.approx(0.001, abs=1e-12)


def test_factor_attribution_matches_least_squares(client: TestClient) -> None:
    rng = np.random.default_rng(5)
    n = 120
    f = pd.DataFrame(rng.normal(0, 0.04, (n, 3)), columns=["mkt", "smb", "hml"])
    y = 0.001 + f.to_numpy() @ np.array([1.1, 0.3, -0.2]) + rng.normal(0, 0.01, n)
    dates = pd.date_range("2010-01-31", periods=n, freq="ME").strftime("%Y-%m-%d").tolist()
    body = post(client, "/v1/risk/attribution", {"portfolio_returns": y.tolist(), "factor_returns": columns(f),
                                                 "dates": dates}).json()
    X = np.column_stack([np.ones(n), f.to_numpy()])
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    assert body["alpha"] == pytest.approx(coef[0], abs=1e-12)
    np.testing.assert_allclose([body["betas"][k] for k in ["mkt", "smb", "hml"]], coef[1:], atol=1e-12)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"portfolio_returns": [0.1, 0.2], "factor_returns": {"m": [0.1, 0.2, 0.3]}}, "portfolio_returns"),
        ({"portfolio_returns": [0.1], "factor_returns": {"m": [0.1]}, "dates": ["x", "y"]}, "dates.0"),
        ({"kind": "brinson", "portfolio_weights": {"a": 0.5, "b": 0.2}, "benchmark_weights": {"a": 0.5, "b": 0.5},
          "portfolio_returns": {"a": 0.1, "b": 0.1}, "benchmark_returns": {"a": 0.1, "b": 0.1}},
         "portfolio_weights"),  # weights sum to 0.7
    ],
)
def test_attribution_bad_input_names_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    r = post(client, "/v1/risk/attribution", body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field, r.json()


# --- /v1/risk/var ------------------------------------------------------------------------------------------------


def test_var_historical_and_normal_against_independent_formulas(client: TestClient, stocks: pd.DataFrame) -> None:
    from scipy.stats import norm

    w = np.full(stocks.shape[1], 1.0 / stocks.shape[1])
    body = post(client, "/v1/risk/var", {"returns": columns(stocks), "weights": w.tolist(), "value": 1e6,
                                         "alpha": 0.99}).json()
    losses = -(stocks.to_numpy() @ w) * 1e6
    assert body["var"] == pytest.approx(np.quantile(losses, 0.99, method="inverted_cdf"), rel=1e-12)
    assert body["es"] >= body["var"]
    body = post(client, "/v1/risk/var", {"returns": columns(stocks), "weights": w.tolist(), "value": 1e6,
                                         "alpha": 0.975, "horizon_days": 10, "method": "normal",
                                         "options": {"zero_mean": True}}).json()
    sigma = np.sqrt(w @ stocks.cov().to_numpy() @ w) * 1e6 * np.sqrt(10)
    assert body["var"] == pytest.approx(norm.ppf(0.975) * sigma, rel=1e-9)
    assert body["es"] == pytest.approx(norm.pdf(norm.ppf(0.975)) / 0.025 * sigma, rel=1e-9)


def test_var_of_a_book_revalued_in_full(client: TestClient, stocks: pd.DataFrame) -> None:
    a, b = stocks.columns[:2]
    book = {"linear": [{"symbol": a, "quantity": 100, "price": 50.0}, {"symbol": b, "quantity": -40, "price": 80.0}]}
    body = post(client, "/v1/risk/var", {"returns": columns(stocks[[a, b]]), "book": book}).json()
    pnl = 100 * 50.0 * stocks[a].to_numpy() - 40 * 80.0 * stocks[b].to_numpy()
    assert body["var"] == pytest.approx(np.quantile(-pnl, 0.99, method="inverted_cdf"), rel=1e-12)
    assert body["details"]["revaluation"] == "full" and body["details"]["scenarios"] == len(stocks)
    # a long put on top can only cut the worst losses of the long stock leg
    hedged = {**book, "options": [{"symbol": a, "strike": 50.0, "T": 0.25, "is_call": False, "quantity": 100,
                                   "implied_vol": 0.3}]}
    body2 = post(client, "/v1/risk/var", {"returns": columns(stocks[[a, b]]), "book": hedged}).json()
    assert body2["var"] < body["var"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pnl": [1.0] * 300, "weights": [1.0]}, "request"),
        ({"pnl": [1.0] * 300, "method": "magic"}, "method"),
        ({"pnl": [1.0] * 300, "alpha": 1.5}, "alpha"),
        ({"returns": {"x": [0.01] * 300}, "book": {"linear": [{"symbol": "y", "quantity": 1, "price": 1.0}]}},
         "returns"),
        ({"returns": {"x": [0.01] * 300}, "weights": {"z": 1.0}}, "weights"),
    ],
)
def test_var_bad_input_names_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    r = post(client, "/v1/risk/var", body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field, r.json()


# --- /v1/risk/stress ---------------------------------------------------------------------------------------------


def test_stress_hypothetical_reverse_and_historical(client: TestClient) -> None:
    from skfolio.datasets import load_sp500_dataset

    book = {"linear": [{"symbol": "AAPL", "quantity": 100, "price": 150.0}]}
    body = post(client, "/v1/risk/stress", {"book": book, "hypothetical": ["equity_crash"],
                                            "historical": ["gfc_2008"], "reverse": {"loss": 3000.0}}).json()
    gfc, crash, rev = body["results"]  # historical, then hypothetical, then reverse
    assert crash["pnl"] == pytest.approx(-0.20 * 15_000, rel=1e-12)  # -20% x beta 1 on a linear book
    assert rev["pnl"] == pytest.approx(-3000.0, rel=1e-6)  # the smallest uniform move loses exactly the threshold
    start, end = gfc["details"]["window"]
    px = load_sp500_dataset()["AAPL"]
    daily = px.pct_change().loc[start:end]
    assert gfc["pnl"] == pytest.approx(15_000 * (np.prod(1 + daily.to_numpy()) - 1), rel=1e-9)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"book": {"linear": [{"symbol": "A", "quantity": 1, "price": 1.0}]}, "historical": ["1929"]}, "historical.0"),
        ({"book": {"linear": [{"symbol": "A", "quantity": 1, "price": -1.0}]}, "hypothetical": "all"},
         "book.linear.0.price"),
        ({"book": {"linear": [{"symbol": "A", "quantity": 1, "price": 1.0}]}}, "request"),
    ],
)
def test_stress_bad_input_names_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    r = post(client, "/v1/risk/stress", body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field, r.json()
