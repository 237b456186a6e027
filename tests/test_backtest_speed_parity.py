"""The event-driven loop's speed work (issue 17, part 5) changes no order, fill or ledger row.

Reference backtests were recorded with the loop as it stood BEFORE the optimisations (commit 8c4e8a6: per-symbol
deque histories, the VaR quantile per order check, the OMS scanning every order it ever held). Each case's ledger
is reduced to one SHA-256 per table over its rows (floats by `repr`, so a last-bit change shows); the wall-clock
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


def _sha(rows: list[Any]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, allow_nan=True).encode()).hexdigest()


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
            "account": "0de3ef05bd408fd567e569f4b738cb18ab26231e1997aad9ac971fd088aefd27",
            "audit_log": "e0edf6aa2b77cda57b9aa8904273a89dfe2f39037f2e78c2c7ac2db8f127cb32",
            "equity_curve": "9e5cc7012bbbfda7b4de282345dc1d42587f9afbec8a660374e3943085f49801",
            "fills": "9f64d8fe022c90cc1b6d95a92423a0d7d171dcab8ad681ecec9900ab5f9a33de",
            "orders": "aee78e371e982ff8431c92cc641b518d190348dd06c1504da89178a34de4792c",
            "outbox": "7da2d5edc02eb99bde212f64a81cb33359aeef69c3a72801ca404fbdd118042e",
            "positions": "7ae6470dc7adc4625c42b7edb0c061c20705540027bf9d67fe8af3ef33fe9dc1",
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
            "account": "492423ec487359810d6a6314b90df2a171bd7063dbe38f6f54a8aa0784e0db52",
            "audit_log": "6cae04f478af884562c84a010c091f816fa9d559227f1eaf0f9a8ab80e6588d8",
            "equity_curve": "4df23d82625539bb9a2912604e3d2e2c032a62fb3a0225480eb0a27d76aa982b",
            "fills": "d1c96973b4a1feafa45187fb0156d3372d5035de4c4175b19838425be90ecc24",
            "orders": "012334c7bf0fab64a9fcfdaa6758a0c846679370badb8e5eb291bd3b16399074",
            "outbox": "1c1df259779a26d4a2bb1ae5d46d754c931908eff18007296247c373ec9ca5e2",
            "positions": "7d1d4718df8f842045086d4cfa59b08215afb61b5210944bdd1acbc4f10175e2",
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
            "account": "d02f6ed1decf51b5f08376991a8942ec09a188aefb3a7f1756085958b1f755e9",
            "audit_log": "cd24933484187cfeb2c6f04f0c60e2bbd54ddf47a1493ea74fe7b6d615e05e06",
            "equity_curve": "4e98ace6461e10ec84da9fe5a695de164dbf9009aad65c50fd82526ddbb8658a",
            "fills": "58ffabacc3db5e9f648e0428f01e2e55eda575d53a2dc285205b6a6bf0a49d05",
            "orders": "b9f6936c973d4b9aad947a7c30dc599748b888c6308c590e4790a124948ebb0e",
            "outbox": "89b6647b85d991c2509b14ee0a1dcd9578388f6ec4287d60857cbaf5875c682f",
            "positions": "8fcc47beab7ccee3c09823bc43e1a6fac54cd3d3c7e9328325f9dba13b8fa8c9",
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
            "account": "83057d698f3b79fca6fff7cd5051488bc1999ad52fe8ed14716e4a99fd483ac1",
            "audit_log": "e1bee3b02b85fc5d0f2ced0baf7513f5830c9a9d56e51db7ac0fb64464b1a077",
            "equity_curve": "0d3e2691a3429fb73ee3346edba735df4d6a2eff1072ba4e3827ee2afc758484",
            "fills": "22956d6f33c99b7f7f9ddd559500a58164b25bbc01f0d9673612aac6a98e6bd3",
            "orders": "8cca31f0ac0eddcac9e6372c39ede3ce593573da84e2308399bd7ff35f2eca07",
            "outbox": "662d3ce874d564638365267005d9de37e09e9eb86bb6edbdfa9f5f8e49784fa9",
            "positions": "6d72019ecf70acb3e8d41e1ff01cd2d9d7c3251b4445676671724c0578ea6522",
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
    assert got["summary"] == want["summary"]
    assert _nan_equal(got["risk"], want["risk"])
    pinned = PINNED_ROWS[name]
    orders = {r["client_order_id"]: tuple(r[c] for c in ORDER_PIN) for r in ledger.orders()}
    fills = {r["fill_id"]: tuple(r[c] for c in FILL_PIN) for r in ledger.fills()}
    for row in pinned["orders"]:
        assert orders[row[0]] == row
    for row in pinned["fills"]:
        assert fills[row[0]] == row
    assert got["sha256"] == want["sha256"]


def _nan_equal(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (the risk metrics hold NaN before the VaR window fills)."""
    return json.dumps(a, sort_keys=True, allow_nan=True) == json.dumps(b, sort_keys=True, allow_nan=True)


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
