"""Every batch entry point of the European pricer (numpy and torch, BSM and Black-76, the column layer) keeps one
contract over extreme FINITE inputs: a row is finite in every output with code OK, or NaN in every output with a
non-OK code; and an option type other than True/False/1/0 (or C/P where strings are accepted) is a coded bad row.

Reference: the contract itself (a conservation law of the API), plus put-call parity on the rows that come back OK.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradesys.quant.options.batch import american_columns, coerce_columns, iv_columns, option_columns, price_columns
from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.european import black76_greeks, bsm_greeks, bsm_price_checked

OK = int(OptionError.OK)
# finite floats of every magnitude, signs included: the inputs a fat-fingered request or a bad feed can send
big = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False)
pos = st.one_of(st.floats(min_value=1e-300, max_value=1e300), st.sampled_from([1e-300, 1.0, 100.0, 1e300]))
rate = st.one_of(big, st.sampled_from([0.0, 0.05, -0.05, 1e10, -1e10, 1e300]))
expiry = st.one_of(pos, st.sampled_from([0.0, 1e300, 1e-12]))


def assert_contract(outputs: dict[str, np.ndarray], codes: np.ndarray) -> None:
    """OK rows: every output finite; other rows: every output NaN."""
    codes = np.asarray(codes).reshape(-1)
    ok = codes == OK
    for name, v in outputs.items():
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        assert np.isfinite(v[ok]).all(), (name, v, codes)
        assert np.isnan(v[~ok]).all(), (name, v, codes)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(S=pos, K=pos, T=expiry, r=rate, q=rate, sigma=st.one_of(pos, st.just(0.0)), call=st.booleans())
def test_extreme_finite_inputs_are_finite_and_ok_or_nan_and_coded(
    S: float, K: float, T: float, r: float, q: float, sigma: float, call: bool
) -> None:
    g = bsm_greeks(S, K, T, r, q, sigma, call)
    assert_contract(g.as_dict(), g.codes)
    price, codes = bsm_price_checked(S, K, T, r, q, sigma, call)
    assert_contract({"price": price}, codes)
    b = black76_greeks(S, K, T, r, sigma, call)
    assert_contract(b.as_dict(), b.codes)
    t = bsm_greeks(*(torch.tensor([x], dtype=torch.float64) for x in (S, K, T, r, q, sigma)), torch.tensor([call]))
    assert_contract({k: v.numpy() for k, v in t.as_dict().items()}, t.codes.numpy())
    cols = coerce_columns({"S": S, "K": K, "T": T, "r": r, "q": q, "sigma": sigma, "is_call": call},
                          option_columns("bsm"))  # fmt: skip
    out = price_columns(cols, "bsm", ["all"])
    assert_contract({k: v for k, v in out.items() if k != "code"}, out["code"])
    for method in ("crr", "fd"):  # the American pricers behind the same column layer (small grids: speed)
        am = american_columns(cols, method, resolution=20)
        assert_contract({k: v for k, v in am.items() if k != "code"}, am["code"])
    price = out["price"][0] if out["code"][0] == OK else 1.0
    iv_cols = coerce_columns({"price": price, "S": S, "K": K, "T": T, "r": r, "q": q, "is_call": call},
                             option_columns("bsm", price=True, vol=False))  # fmt: skip
    iv = iv_columns(iv_cols, "bsm")
    assert_contract({"iv": iv["iv"]}, iv["code"])


def test_the_reported_cases_are_coded() -> None:
    """T = 1e300 and r = 1e10 used to return NaN with code OK; they are OVERFLOW now, in numpy and torch."""
    for args in [(100.0, 100.0, 1e300, 0.05, 0.0, 0.2, True), (100.0, 100.0, 1.0, 1e10, 0.0, 0.2, True)]:
        g = bsm_greeks(*args)
        assert int(g.codes) == int(OptionError.OVERFLOW) and math.isnan(float(g.price))
        t = bsm_greeks(*(torch.tensor([float(a)], dtype=torch.float64) for a in args))
        assert int(t.codes[0]) == int(OptionError.OVERFLOW) and torch.isnan(t.price).all()
    # an extreme but representable row keeps code OK: T = 1e300 with r = q = 0 is worth the spot (a call)
    g = bsm_greeks(100.0, 100.0, 1e300, 0.0, 0.0, 0.2, True, which=["price"])
    assert int(g.codes) == OK and float(g.price) == pytest.approx(100.0)


@pytest.mark.parametrize("flag", [7, 2, -1, 0.5, 1.5, 7.0])
def test_non_boolean_option_type_is_a_coded_bad_row(flag: float) -> None:
    S, K = np.array([100.0, 100.0, 100.0]), np.array([90.0, 100.0, 110.0])
    is_call = np.array([1.0, flag, 0.0])
    want = [OK, int(OptionError.BAD_OPTION_TYPE), OK]
    g = bsm_greeks(S, K, 0.5, 0.01, 0.0, 0.2, is_call)
    assert g.codes.tolist() == want and np.isnan(g.price[1]) and np.isfinite(g.price[[0, 2]]).all()
    ref = bsm_greeks(S[[0, 2]], K[[0, 2]], 0.5, 0.01, 0.0, 0.2, np.array([True, False]))
    np.testing.assert_array_equal(g.price[[0, 2]], ref.price)  # the good rows are untouched
    t = bsm_greeks(torch.as_tensor(S), torch.as_tensor(K), 0.5, 0.01, 0.0, 0.2, torch.as_tensor(is_call))
    assert t.codes.tolist() == want
    assert black76_greeks(S, K, 0.5, 0.01, 0.2, is_call).codes.tolist() == want


@pytest.mark.parametrize("flag", [7, 2.5, "X", "callx"])
def test_column_layer_codes_a_bad_option_type_for_every_entry_point(flag: object) -> None:
    """The column layer: refused by default (one line naming the field); with flags="code" one bad flag is one coded
    NaN row in price, iv and american, never a call and never a failed batch."""
    raw = {"S": 100.0, "K": [90.0, 100.0, 110.0], "T": 0.5, "r": 0.01, "q": 0.0, "sigma": 0.2,
           "is_call": ["C", flag, "P"] if isinstance(flag, str) else [1, flag, 0]}  # fmt: skip
    want = [OK, int(OptionError.BAD_OPTION_TYPE), OK]
    with pytest.raises(ValueError, match=r"^is_call: "):  # the default (the HTTP schema's rule) refuses the request
        coerce_columns(raw, option_columns("bsm"))
    priced = price_columns(coerce_columns(raw, option_columns("bsm"), flags="code"), "bsm", ["delta"])
    assert priced["code"].tolist() == want
    assert_contract({k: v for k, v in priced.items() if k != "code"}, priced["code"])
    ref = bsm_greeks(100.0, np.array([90.0, 110.0]), 0.5, 0.01, 0.0, 0.2, np.array([True, False]))
    np.testing.assert_array_equal(priced["price"][[0, 2]], ref.price)
    iv_raw = {k: v for k, v in raw.items() if k != "sigma"} | {"price": [ref.price[0], ref.price[0], ref.price[1]]}
    iv = iv_columns(coerce_columns(iv_raw, option_columns("bsm", price=True, vol=False), flags="code"), "bsm")
    assert iv["code"].tolist() == want and np.isnan(iv["iv"][1])
    assert iv["iv"][[0, 2]] == pytest.approx([0.2, 0.2], rel=1e-8)
    am = american_columns(coerce_columns(raw, option_columns("bsm"), flags="code"), "crr", resolution=50)
    assert am["code"].tolist() == want
    assert_contract({k: v for k, v in am.items() if k != "code"}, am["code"])


def test_column_layer_codes_nan_from_the_american_pricers() -> None:
    """FD at sigma = 1e300 and LSM at r = 1e10 returned NaN prices with code OK; the column layer now codes them."""
    cases = [({"S": 100.0, "K": 100.0, "T": 1e-300, "r": 0.0, "q": 0.0, "sigma": 1e300}, "fd", 50),
             ({"S": 100.0, "K": 100.0, "T": 1.0, "r": 1e10, "q": 0.0, "sigma": 0.2}, "lsm", 2000)]  # fmt: skip
    for raw, method, size in cases:
        cols = coerce_columns({**raw, "is_call": [True, False]}, option_columns("bsm"))
        am = american_columns(cols, method, resolution=size)
        assert_contract({k: v for k, v in am.items() if k != "code"}, am["code"])
        assert am["code"][0] == int(OptionError.OVERFLOW)  # the call: NaN from the pricer, now coded


@pytest.mark.parametrize("method", ["lr", "crr", "fd", "lsm"])
def test_american_rows_outside_the_numerical_domain_are_coded_not_raised(method: str) -> None:
    """T = 1e300 made LSM raise for the whole batch; r or q = 1e10 gave FD a finite but meaningless price (a call
    at 125 with S = K = 100). Such rows are coded OVERFLOW; the good row in the same batch is priced as alone."""
    from tradesys.quant.options.american import american_price

    kw = {"paths": 4000, "seed": 3} if method == "lsm" else {}
    T = np.array([0.5, 1e300, 0.5, 0.5, 0.5])
    r = np.array([0.03, 0.03, 1e10, 0.03, 0.03])
    q = np.array([0.0, 0.0, 0.0, 1e10, 0.0])
    sigma = np.array([0.2, 0.2, 0.2, 0.2, 50.0])
    res = american_price(100.0, 100.0, T, r, q, sigma, False, method, **kw)
    alone = american_price(100.0, 100.0, 0.5, 0.03, 0.0, 0.2, False, method, **kw)
    assert list(res.codes) == [OptionError.OK] + [OptionError.OVERFLOW] * 4
    assert np.isnan(res.price[1:]).all()
    assert res.price[0] == pytest.approx(float(np.asarray(alone.price)), rel=1e-12 if method != "lsm" else 0.05)
