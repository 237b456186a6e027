"""The event-driven loop's speed work (issue 17, part 5) changes no order, fill or ledger row.

Reference backtests were recorded with the loop as it stood BEFORE the optimisations (commit 8c4e8a6: per-symbol
deque histories, the VaR quantile per order check, the OMS scanning every order it ever held). Each case's ledger
is reduced to one SHA-256 per table over its rows (floats to 9 significant digits: the same code differs in the
last bits between CPUs); the wall-clock
fields (`decision_wall_ns`, `wall_ns`) are left out, as they differ from run to run, and so is a column added
since (`orders.min_qty`) while it holds its default. A few explicit rows are pinned as well, so a failure says
what moved, not only that something did.

The cases cover the paths the optimisations touch: the default configuration (20 S&P 500 stocks, 2016-2022,
market orders, VaR and exposure limits); limit orders with VaR and exposure rejects on 40 synthetic symbols;
intraday bars with partial fills under the participation cap, DAY expiries and the daily-loss kill switch; and
the order-rate limit.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pytest

from tradesys.backtest.runner import run_backtest
from tradesys.config import load_config

_WALL = ("decision_wall_ns", "wall_ns")
# columns added to the ledger after the references were recorded, with their default: a row holding the default
# is hashed as it was recorded (without the column); any other value still changes the hash
_ADDED = {"min_qty": 0.0}


def _synthetic(n: int, days: int, bar_seconds: int, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "data.source": "synthetic",
        "data.symbols": [f"S{i:02d}" for i in range(n)],
        "data.synthetic_days": days,
        "data.synthetic_bar_seconds": bar_seconds,
        "data.end": None,
        **extra,
    }


CASES: dict[str, dict[str, Any]] = {
    "sp500_default": {},
    "limit_var": _synthetic(
        40, 260, 23_400,
        {"strategy.fast": 5, "strategy.slow": 30, "strategy.vol_lookback": 10, "strategy.order_type": "limit",
         "risk.var_limit_pct": 0.01},
    ),
    "intraday_kill_switch": _synthetic(
        12, 3, 600,
        {"strategy.fast": 4, "strategy.slow": 12, "strategy.vol_lookback": 6, "risk.daily_loss_limit_pct": 0.002,
         "risk.var_min_obs": 5, "risk.var_limit_pct": 0.004, "broker.participation_cap": 0.002,
         "risk.max_orders_per_window": 400, "risk.order_window_seconds": 3600},
    ),
    "order_rate": _synthetic(
        12, 3, 600,
        {"strategy.fast": 4, "strategy.slow": 12, "strategy.vol_lookback": 6, "risk.daily_loss_limit_pct": 0.002,
         "risk.var_min_obs": 5, "risk.var_limit_pct": 0.004, "broker.participation_cap": 0.0005},
    ),
}  # fmt: skip


def _canon(x: Any) -> Any:
    """A value as hashed: floats to 9 significant digits. The same code gives last-bit differences on different CPUs
    (numpy's SIMD reductions: 2 ulp in an average fill price between two x86-64 machines); a change to an order, a
    fill or a booking moves far more than that."""
    if isinstance(x, float):
        return x if not math.isfinite(x) else float(f"{x:.9g}")
    if isinstance(x, dict):
        return {k: _canon(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_canon(v) for v in x]
    return x


def _sha(rows: list[Any]) -> str:
    return hashlib.sha256(json.dumps(_canon(rows), sort_keys=True, allow_nan=True).encode()).hexdigest()


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _WALL and not (k in _ADDED and v == _ADDED[k])}


def ledger_digest(ledger: Any, summary: Any) -> dict[str, Any]:
    """One hash per ledger table (wall-clock fields left out), row counts, and the run's risk section."""
    outbox = []
    after = 0
    while batch := ledger.outbox(after, 10_000):
        outbox += [{**r, "payload": _strip(r["payload"])} for r in batch]
        after = batch[-1]["id"]
    tables = {
        "orders": [_strip(r) for r in ledger.orders()],
        "fills": [_strip(r) for r in ledger.fills()],
        "equity_curve": ledger.equity_curve(),
        "positions": ledger.positions(),
        "account": [ledger.account()],
        "audit_log": ledger.audit_log(),
        "outbox": outbox,
    }
    s = summary.as_dict()
    return {
        "sha256": {k: _sha(v) for k, v in tables.items()},
        "rows": {k: len(v) for k, v in tables.items()},
        "summary": {k: s[k] for k in ("equity", "total_return", "orders", "fills", "rejected", "steps")},
        "risk": s["risk"],
    }


def run_case(name: str) -> tuple[dict[str, Any], Any]:
    summary, ledger = run_backtest(load_config(overrides=CASES[name]))
    return ledger_digest(ledger, summary), ledger


ORDER_PIN = (
    "client_order_id",
    "side",
    "qty",
    "type",
    "limit_price",
    "status",
    "filled_qty",
    "avg_fill_price",
    "reason",
)
FILL_PIN = ("fill_id", "qty", "price", "fee", "ts_ns")

# Recorded before the optimisations (see the module docstring).
EXPECTED: dict[str, dict[str, Any]] = {
    "intraday_kill_switch": {
        "risk": {
            "kill_switch": True,
            "metrics": {
                "equity": 1001361.6159017044,
                "gross_exposure": 494783.8091122552,
                "gross_leverage": 0.4941110196906371,
                "net_exposure": -487603.97430062154,
                "net_leverage": -0.4869409477629565,
                "ts_ns": 1.4520276e18,
                "var": 1762.8574593436986,
                "var_obs": 116.0,
                "var_pct": 0.0017604603884844175,
            },
            "rejects_by_reason": {"kill_switch": 276},
        },
        "rows": {
            "account": 1,
            "audit_log": 278,
            "equity_curve": 148,
            "fills": 617,
            "orders": 842,
            "outbox": 5086,
            "positions": 12,
        },
        "sha256": {
            "account": "194352215b794a84b4b6d0fd8ae67814d285bb5581ff00d36f2b9b1f399de248",
            "audit_log": "6a010f14fee934e69edc268e7d6aad8c3ac2e7f7f592806e5b59c8187242ff52",
            "equity_curve": "99a35c2c1c66ed834a00ac016ee2bbca97d7a8b1492a9065407df7cf81479734",
            "fills": "492bad9b4c86250845fcc692cc7a4068561f7c69e0506c04be5a91093a166d33",
            "orders": "7c497f6658bc187971279ab33b42a8944b3a33e8142c68ca5db017d9d2ec3969",
            "outbox": "58eb4533f0647f779bd72e7ce97c8e3370d863b5d4a18367bcb5e4914cd78d05",
            "positions": "be7c3b5dd9c7ac11a9b7d95127b4463e5df94aca8458b1acb809c0d03e305cf3",
        },
        "summary": {
            "equity": 1001361.6159017044,
            "fills": 617,
            "orders": 842,
            "rejected": 276,
            "steps": 117,
            "total_return": 0.0013616159017044716,
        },
    },
    "limit_var": {
        "risk": {
            "kill_switch": False,
            "metrics": {
                "equity": 955877.3987038122,
                "gross_exposure": 1803287.2591326286,
                "gross_leverage": 1.8865256795253451,
                "net_exposure": 412220.5991341009,
                "net_leverage": 0.4312484003629334,
                "ts_ns": 1.4830452e18,
                "var": 8816.376316205902,
                "var_obs": 250.0,
                "var_pct": 0.00922333379590424,
            },
            "rejects_by_reason": {"exposure_limit": 2, "var_limit": 696},
        },
        "rows": {
            "account": 1,
            "audit_log": 699,
            "equity_curve": 470,
            "fills": 719,
            "orders": 1417,
            "outbox": 15861,
            "positions": 40,
        },
        "sha256": {
            "account": "072126fdfcda1e4ac153178729b2a207fd61715b730f89811431cfdb506e0f5d",
            "audit_log": "6cae04f478af884562c84a010c091f816fa9d559227f1eaf0f9a8ab80e6588d8",
            "equity_curve": "c2fcc3f967c2c7d39214a7488d525c2367a25b8af40bfdcc73ecf2e3b20e7456",
            "fills": "c51d73d917db849bbfdab60f2203aa483bba39b7d727b29d7030e5047cca3c3a",
            "orders": "da2371c78993b2197250983892d15ae65722f36027d589b4616428c8f3463edc",
            "outbox": "18af875be4959d40629814ee1bfec6e9a3c18f269078924ad6f40af855f6ac7d",
            "positions": "a07fb73c0c51c0f7a05e875a4d17d404dca73face9ef3c4af5979754a5def573",
        },
        "summary": {
            "equity": 955759.9819152382,
            "fills": 719,
            "orders": 1417,
            "rejected": 698,
            "steps": 260,
            "total_return": -0.044240018084761856,
        },
    },
    "order_rate": {
        "risk": {
            "kill_switch": False,
            "metrics": {
                "equity": 1001021.7174516246,
                "gross_exposure": 315388.06549649686,
                "gross_leverage": 0.31506615690557016,
                "net_exposure": 49011.396918210026,
                "net_leverage": 0.048961372229747405,
                "ts_ns": 1.4520276e18,
                "var": 364.6920064492313,
                "var_obs": 116.0,
                "var_pct": 0.00036431977457757346,
            },
            "rejects_by_reason": {"order_rate": 652},
        },
        "rows": {
            "account": 1,
            "audit_log": 653,
            "equity_curve": 126,
            "fills": 642,
            "orders": 1252,
            "outbox": 5960,
            "positions": 12,
        },
        "sha256": {
            "account": "3db788a04916fa5dd8d35e74686335be9bd6b592b5665b6cddba12a82d0d30d6",
            "audit_log": "cd24933484187cfeb2c6f04f0c60e2bbd54ddf47a1493ea74fe7b6d615e05e06",
            "equity_curve": "849f8750f4dbc5bbabf15fb193ca04d4f6e9cbf63f1d81bd7163c70a6fe65a43",
            "fills": "b1a236bf404a49ec130c653da5c1a1d1ef219031966180d5dea7d45a44696741",
            "orders": "08d0699bfa7be9e100ddc53e51784592bc9c9a979ef5ce9c6fc4329618d48909",
            "outbox": "22cca7330d3323280d6f47694d9d4e9abd28263e3aca23c4501a4095447b8494",
            "positions": "b6261f751862950db2199706c6d1e10fd4a56694671240171145eef867093a68",
        },
        "summary": {
            "equity": 1001021.7174516246,
            "fills": 642,
            "orders": 1252,
            "rejected": 652,
            "steps": 117,
            "total_return": 0.0010217174516244931,
        },
    },
    "sp500_default": {
        "risk": {
            "kill_switch": False,
            "metrics": {
                "equity": 1162388.5527813695,
                "gross_exposure": 1706223.8530000001,
                "gross_leverage": 1.4678601651034318,
                "net_exposure": 1017458.8150000002,
                "net_leverage": 0.8753173046701288,
                "ts_ns": 1.6722612e18,
                "var": 21503.295644386217,
                "var_obs": 250.0,
                "var_pct": 0.018499232113851273,
            },
            "rejects_by_reason": {"kill_switch": 3, "var_limit": 127},
        },
        "rows": {
            "account": 1,
            "audit_log": 132,
            "equity_curve": 2473,
            "fills": 1063,
            "orders": 1193,
            "outbox": 43248,
            "positions": 20,
        },
        "sha256": {
            "account": "ea96886850c20ac2537e3b6dd33871dea19739662ab5c038e2cf71d965527644",
            "audit_log": "50a65cd39e85d55e1792d0215069db6566911b3b57f2c6fb1c70de9d3ce89caf",
            "equity_curve": "c4ba7a993b137edc82de215e78150f3ecce6557b51c6b432946ea67d4b7030ca",
            "fills": "c46cc1e877431ed0d75ac4879aa805352e119ccdbfb95a4ebd726791e4423409",
            "orders": "684a881cca7627b681542ce2e1bc8a20b64e2185813625eb4b3bea677a9e70ab",
            "outbox": "b53c3dbcd362aee733079c70cc5f42bd598ff257f67b3a48b473e424cba5a8c1",
            "positions": "301357339f58dd84d46ab29582992cd4f7dfe8172e440b890df03cba232188b2",
        },
        "summary": {
            "equity": 1162388.5527813695,
            "fills": 1063,
            "orders": 1193,
            "rejected": 130,
            "steps": 1760,
            "total_return": 0.16238855278136954,
        },
    },
}
PINNED_ROWS: dict[str, dict[str, list[tuple[Any, ...]]]] = {
    "intraday_kill_switch": {
        "orders": [
            (
                "trend-1451665800000000000-S00",
                "buy",
                795.0,
                "market",
                None,
                "expired",
                104.64,
                100.56918322234478,
                None,
            ),
            (
                "trend-1452027600000000000-S10",
                "sell",
                608.1859999999999,
                "market",
                None,
                "rejected",
                0.0,
                0.0,
                "kill_switch",
            ),
            (
                "trend-1451682000000000000-S10",
                "sell",
                235.88599999999997,
                "market",
                None,
                "filled",
                235.88599999999997,
                100.38920844426077,
                None,
            ),
            ("trend-1452009000000000000-S01", "sell", 607.492, "market", None, "rejected", 0.0, 0.0, "kill_switch"),
        ],
        "fills": [
            ("trend-1451665800000000000-S00:1", 47.948, 100.56918322234478, 0.24110455985724938, 1451665800000000000),
            (
                "trend-1452008400000000000-S10:1",
                67.82600000000001,
                101.90003713944857,
                0.345573595951012,
                1452009000000000000,
            ),
        ],
    },
    "limit_var": {
        "orders": [
            ("trend-1455224400000000000-S00", "sell", 513.0, "limit", 99.5, "filled", 513.0, 99.58450109447962, None),
            ("trend-1483045200000000000-S29", "sell", 803.0, "limit", 94.22, "filled", 803.0, 94.29570031184868, None),
            ("trend-1455829200000000000-S35", "buy", 1064.0, "limit", 94.93, "rejected", 0.0, 0.0, "exposure_limit"),
            ("trend-1456174800000000000-S17", "buy", 1039.0, "limit", 95.46, "rejected", 0.0, 0.0, "var_limit"),
        ],
        "fills": [
            ("trend-1455224400000000000-S00:1", 513.0, 99.58450109447962, 2.5543424530734025, 1455224400000000000),
            ("trend-1483045200000000000-S29:1", 803.0, 94.29570031184868, 3.7859723675207246, 1483045200000000000),
        ],
    },
    "order_rate": {
        "orders": [
            ("trend-1451665800000000000-S00", "buy", 795.0, "market", None, "expired", 26.16, 100.56918322234478, None),
            (
                "trend-1452027600000000000-S11",
                "sell",
                959.8399999999999,
                "market",
                None,
                "rejected",
                0.0,
                0.0,
                "order_rate",
            ),
            ("trend-1451675400000000000-S08", "sell", 811.9835, "market", None, "rejected", 0.0, 0.0, "order_rate"),
        ],
        "fills": [
            ("trend-1451665800000000000-S00:1", 11.987, 100.56918322234478, 0.060276139964312345, 1451665800000000000),
            ("trend-1452015000000000000-S08:1", 23.8785, 99.6313491012113, 0.1189523584756637, 1452015600000000000),
        ],
    },
    "sp500_default": {
        "orders": [
            (
                "trend-1464210000000000000-AAPL",
                "sell",
                3478.0,
                "market",
                None,
                "filled",
                3478.0,
                22.991400799999997,
                None,
            ),
            ("trend-1671656400000000000-BBY", "buy", 538.0, "market", None, "filled", 538.0, 78.7447458, None),
            ("trend-1517864400000000000-AMD", "sell", 1060.0, "market", None, "rejected", 0.0, 0.0, "kill_switch"),
            ("trend-1595019600000000000-MRK", "buy", 2596.0, "market", None, "rejected", 0.0, 0.0, "var_limit"),
        ],
        "fills": [
            ("trend-1464210000000000000-AAPL:1", 3478.0, 22.991400799999997, 3.9982045991199997, 1464210000000000000),
            ("trend-1671656400000000000-BBY:1", 538.0, 78.7447458, 2.11823366202, 1671656400000000000),
        ],
    },
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "sp500_default" else n for n in sorted(CASES)]
)
def test_backtest_ledger_is_unchanged_by_the_speed_work(name: str) -> None:
    got, ledger = run_case(name)
    want = EXPECTED[name]
    assert got["rows"] == want["rows"]
    # the summary, the risk metrics and the pinned rows: floats to 1e-13 relative (the same code moved them by 2 ulp
    # between two CPUs, on `limit_var`), everything else exact; the tables' hashes (`_canon`) come last
    assert _nan_close(got["summary"], want["summary"])
    assert _nan_close(got["risk"], want["risk"])
    pinned = PINNED_ROWS[name]
    orders = {r["client_order_id"]: tuple(r[c] for c in ORDER_PIN) for r in ledger.orders()}
    fills = {r["fill_id"]: tuple(r[c] for c in FILL_PIN) for r in ledger.fills()}
    for row in pinned["orders"]:
        assert _nan_close(list(orders[row[0]]), list(row))
    for row in pinned["fills"]:
        assert _nan_close(list(fills[row[0]]), list(row))
    assert got["sha256"] == want["sha256"]


def _nan_close(a: Any, b: Any, rel: float = 1e-13) -> bool:
    """Equality where NaN equals NaN (the risk metrics hold NaN before the VaR window fills) and two floats need only
    agree to `rel`; ints, strings, bools and the keys of mappings must be equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_nan_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_nan_close(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=0.0)
    return type(a) is type(b) and a == b


def test_position_outbox_payload_is_the_text_json_dumps_writes() -> None:
    """The ledger builds each position's outbox payload directly (it writes one per held symbol every step): the
    text must be what `json.dumps` writes for the same row, for awkward symbols and floats too."""
    import math

    from tradesys.ledger.base import PositionRow
    from tradesys.ledger.sql import POSITION_COLUMNS, outbox_rows, position_params

    cases = [
        PositionRow("AAPL", 10.0, 123.456, -7.25, 130.0),
        PositionRow('ÉLÈVE "q"\\ \u2603', -0.0, 0.0, 5e-324, 1.7976931348623157e308),
        PositionRow("BRK.B", -1234.5678, 1 / 3, 2.0**60, math.pi),
        PositionRow("X", 3, 4, 5, 6),  # ints: checked and converted field by field first
    ]
    rows = [position_params(p, 1_700_000_000_123_456_789) for p in cases]
    got = [r[4] for r in outbox_rows([], [], [], rows, None)]
    want = [json.dumps(dict(zip(POSITION_COLUMNS, r, strict=True)), allow_nan=False) for r in rows]
    assert got == want
    assert json.loads(got[1])["symbol"] == 'ÉLÈVE "q"\\ \u2603'
    with pytest.raises(ValueError, match=r"position\.mark: must be finite"):
        position_params(PositionRow("Y", 1.0, 1.0, 0.0, float("nan")), 0)
