"""Offline feature store: registry versioning, partitioned Parquet, point-in-time joins, backfill.

References: `pandas.merge_asof` (direction="backward", tolerance=ttl) and a brute-force scan over all rows
with event time <= the (lagged) label time. Planted future rows check that the join never looks ahead.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tradesys.featurestore import FeatureDefinition, FeatureRef, FeatureRegistry, OfflineStore, asof_indices

DAY0 = pd.Timestamp("2024-01-02", tz="UTC")
SYMS = ["AAA", "BBB", "CCC"]


def ret_def(version: int = 1, transform: str = "r1") -> FeatureDefinition:
    return FeatureDefinition("ret", version, {"r": "float64", "n": "int64"}, transform=transform, description="x")


def random_rows(rng: np.random.Generator, n: int, days: int = 4, syms: list[str] = SYMS) -> pd.DataFrame:
    ts = DAY0 + pd.to_timedelta(rng.integers(0, days * 86_400 * 10**9, n), unit="ns")
    return pd.DataFrame(
        {"symbol": rng.choice(syms, n), "ts": ts, "r": rng.normal(size=n), "n": rng.integers(0, 1000, n)}
    )


def random_labels(rng: np.random.Generator, n: int, days: int = 4, syms: list[str] = SYMS) -> pd.DataFrame:
    ts = DAY0 + pd.to_timedelta(rng.integers(0, days * 86_400 * 10**9, n), unit="ns")
    return pd.DataFrame({"symbol": rng.choice([*syms, "ZZZ"], n), "ts": ts, "label": rng.normal(size=n)})


def brute_force(
    rows: pd.DataFrame, labels: pd.DataFrame, col: str, lag: pd.Timedelta, ttl: pd.Timedelta | None, exact: bool
) -> np.ndarray:
    """Scan every row: the newest one of the label's symbol at or before the lagged label time, within ttl."""
    out = np.full(len(labels), np.nan)
    for i, (sym, t) in enumerate(zip(labels["symbol"], labels["ts"], strict=True)):
        cut = t - lag
        ok = (rows["symbol"] == sym) & ((rows["ts"] <= cut) if exact else (rows["ts"] < cut))
        if ttl is not None:
            ok &= (cut - rows["ts"]) <= ttl
        cand = rows[ok]
        if len(cand):
            out[i] = cand.loc[cand["ts"].idxmax(), col]
    return out


def merge_asof_ref(
    rows: pd.DataFrame, labels: pd.DataFrame, col: str, lag: pd.Timedelta, ttl: pd.Timedelta | None, exact: bool
) -> np.ndarray:
    left = labels.assign(cut=labels["ts"] - lag, _i=np.arange(len(labels))).sort_values("cut")
    right = rows[["symbol", "ts", col]].rename(columns={"ts": "rts"}).sort_values("rts")
    m = pd.merge_asof(
        left, right, left_on="cut", right_on="rts", by="symbol", direction="backward",
        allow_exact_matches=exact, tolerance=ttl,
    )  # fmt: skip
    return m.sort_values("_i")[col].to_numpy(dtype=float)


@pytest.fixture()
def store(tmp_path: Path) -> OfflineStore:
    s = OfflineStore(tmp_path)
    s.register(ret_def())
    return s


# ------------------------------------------------------------------ registry


def test_registry_refuses_incompatible_redefinition_and_persists(tmp_path: Path) -> None:
    reg = FeatureRegistry(tmp_path)
    v1 = reg.register(ret_def())
    reg.register(ret_def())  # identical: a no-op
    with pytest.raises(ValueError, match=r"^version: .*'ret' v1 is already registered"):
        reg.register(ret_def(transform="r2"))  # changed transformation under the same version
    with pytest.raises(ValueError, match="version"):
        reg.register(FeatureDefinition("ret", 1, {"r": "float32", "n": "int64"}, transform="r1"))  # changed dtype
    # description is documentation: same fingerprint
    assert FeatureDefinition("ret", 1, {"r": "float64", "n": "int64"}, transform="r1").fingerprint == v1.fingerprint
    v2 = reg.register_auto(ret_def(transform="r2"))
    assert v2.version == 2
    assert reg.register_auto(ret_def(version=7, transform="r1")).version == 1  # known fingerprint -> its version
    again = FeatureRegistry(tmp_path)  # reloaded from registry.json
    assert again.versions("ret") == [1, 2]
    assert again.get("ret") == v2 and again.get("ret", 1).fingerprint == v1.fingerprint
    with pytest.raises(ValueError, match="version"):
        again.register(ret_def(transform="r3"))
    with pytest.raises(ValueError, match="not registered"):
        again.get("nope")


def test_transform_source_fingerprint_changes_with_the_code() -> None:
    def f1(x: float) -> float:
        return x + 1

    def f2(x: float) -> float:
        return x + 2

    a = FeatureDefinition.from_transform("f", 1, {"v": "float64"}, f1)
    b = FeatureDefinition.from_transform("f", 1, {"v": "float64"}, f2)
    assert a.transform.startswith("src:") and a.fingerprint != b.fingerprint
    assert a.fingerprint == FeatureDefinition.from_transform("f", 1, {"v": "float64"}, f1).fingerprint


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "bad name"}, "name"),
        ({"version": 0}, "version"),
        ({"columns": {}}, "columns"),
        ({"columns": {"v": "floaty"}}, "columns"),
        ({"columns": {"date": "float64"}}, "columns"),
    ],
)
def test_definition_validation(kwargs: dict, field: str) -> None:
    base = {"name": "f", "version": 1, "columns": {"v": "float64"}}
    with pytest.raises(ValueError, match=f"^{field}: "):
        FeatureDefinition(**{**base, **kwargs})


def test_write_rejects_bad_rows(store: OfflineStore) -> None:
    df = pd.DataFrame({"symbol": ["A"], "ts": [DAY0], "r": [1.0]})
    with pytest.raises(ValueError, match=r"^n: missing column"):
        store.write("ret", 1, df)
    with pytest.raises(ValueError, match=r"^r: cannot cast"):
        store.write("ret", 1, df.assign(r=["x"], n=[1]))
    with pytest.raises(ValueError, match=r"^symbol: 1 null"):
        store.write("ret", 1, df.assign(symbol=[None], n=[1]))


# ------------------------------------------------------------------ point-in-time joins


def test_pit_join_hand_example_with_planted_future_values(store: OfflineStore) -> None:
    label = DAY0 + pd.Timedelta("1D 10h")
    rows = pd.DataFrame(
        {
            "symbol": ["AAA"] * 6,
            "ts": [
                DAY0 + pd.Timedelta("10h"),
                label - pd.Timedelta("1s"),  # the right answer: newest value not after the label
                label,  # exact match, visible only with allow_exact_matches
                label + pd.Timedelta(1, "ns"),  # planted future values, same and later partitions
                label + pd.Timedelta("1h"),
                label + pd.Timedelta("2D"),
            ],
            "r": [1.0, 2.0, 3.0, 99.0, 99.0, 99.0],
            "n": [1, 2, 3, 99, 99, 99],
        }
    )
    store.write("ret", 1, rows)
    labels = pd.DataFrame({"symbol": ["AAA"], "ts": [label]})
    incl = store.training_set(labels, ["ret"], with_event_time=True)
    excl = store.training_set(labels, ["ret"], allow_exact_matches=False, with_event_time=True)
    assert incl["ret_v1__r"].tolist() == [3.0] and incl["ret_v1__event_ts"].iloc[0] == label
    assert excl["ret_v1__r"].tolist() == [2.0] and excl["ret_v1__n"].tolist() == [2]
    lagged = store.training_set(labels, [FeatureRef("ret", 1, lag="1s")])  # cutoff = label - 1s, inclusive
    assert lagged["ret_v1__r"].tolist() == [2.0]
    # a look-ahead join would have picked a planted value
    nearest = pd.merge_asof(labels, rows.rename(columns={"ts": "rts"}), left_on="ts", right_on="rts",
                            by="symbol", direction="forward", allow_exact_matches=False)  # fmt: skip
    assert nearest["r"].tolist() == [99.0]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize(("lag", "ttl"), [(None, None), ("30min", None), (None, "3h"), ("5min", "90min")])
def test_pit_join_matches_merge_asof_and_brute_force(
    tmp_path: Path, seed: int, exact: bool, lag: str | None, ttl: str | None
) -> None:
    rng = np.random.default_rng(seed)
    store = OfflineStore(tmp_path)
    store.register(ret_def())
    rows = random_rows(rng, 400)
    labels = random_labels(rng, 120)
    # rows exactly at some label times (minus the lag) so allow_exact_matches matters
    lag_td = pd.Timedelta(lag) if lag else pd.Timedelta(0)
    hit = labels[labels["symbol"] != "ZZZ"].iloc[:15]
    exact_rows = pd.DataFrame({"symbol": hit["symbol"], "ts": hit["ts"] - lag_td, "r": 500.0, "n": 5})
    rows = pd.concat([rows, exact_rows], ignore_index=True)
    store.write("ret", 1, rows.iloc[:200])
    store.write("ret", 1, rows.iloc[200:])  # two files per partition
    ttl_td = pd.Timedelta(ttl) if ttl else None
    got = store.training_set(labels, [FeatureRef("ret", 1, lag=lag, ttl=ttl)], allow_exact_matches=exact,
                             with_event_time=True)  # fmt: skip
    assert got.index.equals(labels.index) and got["label"].equals(labels["label"])
    for col in ("r", "n"):
        ref = brute_force(rows, labels, col, lag_td, ttl_td, exact)
        np.testing.assert_array_equal(got[f"ret_v1__{col}"].to_numpy(dtype=float), ref)
        np.testing.assert_array_equal(merge_asof_ref(rows, labels, col, lag_td, ttl_td, exact), ref)
    ev = got["ret_v1__event_ts"]
    seen = ev.notna()
    cut = labels["ts"] - lag_td
    assert ((ev[seen] <= cut[seen]) if exact else (ev[seen] < cut[seen])).all()
    assert got.loc[labels["symbol"] == "ZZZ", "ret_v1__r"].isna().all()
    assert seen.sum() > len(labels) // 3  # the comparison is not vacuous


def test_planted_future_rows_do_not_change_the_training_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    store = OfflineStore(tmp_path)
    store.register(ret_def())
    rows = random_rows(rng, 300, days=3)
    store.write("ret", 1, rows)
    labels = random_labels(rng, 80, days=3, syms=SYMS)
    labels = labels[labels["symbol"] != "ZZZ"].reset_index(drop=True)
    labels.loc[labels["symbol"] == "CCC", "ts"] += pd.Timedelta("2D")  # CCC labels end last: the read reaches far
    before = store.training_set(labels, ["ret"], with_event_time=True)
    # plant values after each symbol's last label: 1 ns after, and inside the time range other symbols read
    last = labels.groupby("symbol")["ts"].max()
    planted = pd.DataFrame(
        [
            {"symbol": s, "ts": t + d, "r": 1e9, "n": 10**9}
            for s, t in last.items()
            for d in (pd.Timedelta(1, "ns"), pd.Timedelta("1min"), pd.Timedelta("1D"))
        ]
    )
    store.write("ret", 1, planted)
    after = store.training_set(labels, ["ret"], with_event_time=True)
    pd.testing.assert_frame_equal(before, after)
    assert (after["ret_v1__r"] < 1e9).all()
    # and they are in the dataset: a join as of later times does see them
    later = store.training_set(labels.assign(ts=labels["ts"] + pd.Timedelta("2D")), ["ret"])
    assert (later["ret_v1__r"] == 1e9).any()


def test_ttl_staleness_boundaries(store: OfflineStore) -> None:
    store.write("ret", 1, pd.DataFrame({"symbol": ["AAA"], "ts": [DAY0], "r": [1.0], "n": [1]}))
    labels = pd.DataFrame({"symbol": ["AAA"] * 3, "ts": [DAY0 + pd.Timedelta(h, "h") for h in (0, 1, 2)]})
    labels.loc[2, "ts"] += pd.Timedelta(1, "ns")
    got = store.training_set(labels, [FeatureRef("ret", 1, ttl="1h")])
    # ages 0 and 1h (== ttl) are fresh; 2h + 1ns is stale
    np.testing.assert_array_equal(got["ret_v1__r"].to_numpy(), [1.0, 1.0, np.nan])
    got3 = store.training_set(labels, [FeatureRef("ret", 1, ttl="3h")])
    assert got3["ret_v1__r"].tolist() == [1.0, 1.0, 1.0]
    # lag shifts the staleness clock too: cutoff = label - lag, age = cutoff - event time
    got4 = store.training_set(labels, [FeatureRef("ret", 1, lag="1h", ttl="1h")])
    np.testing.assert_array_equal(got4["ret_v1__r"].to_numpy(), [np.nan, 1.0, np.nan])
    got5 = store.training_set(labels, [FeatureRef("ret", 1, lag=1, ttl="2h")])  # lag 1 ns: last age is 2h exactly
    np.testing.assert_array_equal(got5["ret_v1__r"].to_numpy(), [np.nan, 1.0, 1.0])


def test_multiple_features_and_versions(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    store = OfflineStore(tmp_path)
    store.register(ret_def(1, "r1"))
    store.register(ret_def(2, "r2"))
    store.register(FeatureDefinition("vol", 1, {"sigma": "float64"}, transform="v1"))
    r1 = random_rows(rng, 200)
    r2 = r1.assign(r=r1["r"] * 2.0)  # v2 of the transformation doubles the value
    vol = random_rows(rng, 150).rename(columns={"r": "sigma"}).drop(columns="n")
    store.write("ret", 1, r1)
    store.write("ret", 2, r2)
    store.write("vol", 1, vol)
    labels = random_labels(rng, 60)
    got = store.training_set(labels, [("ret", 1), ("ret", 2), FeatureRef("vol", ttl="6h")])
    assert {"ret_v1__r", "ret_v2__r", "ret_v1__n", "ret_v2__n", "vol_v1__sigma"} <= set(got.columns)
    z = pd.Timedelta(0)
    np.testing.assert_array_equal(got["ret_v1__r"].to_numpy(), brute_force(r1, labels, "r", z, None, True))
    np.testing.assert_array_equal(got["ret_v2__r"].to_numpy(), brute_force(r2, labels, "r", z, None, True))
    ref_vol = brute_force(vol, labels, "sigma", z, pd.Timedelta("6h"), True)
    np.testing.assert_array_equal(got["vol_v1__sigma"].to_numpy(), ref_vol)
    ok = got["ret_v1__r"].notna()
    np.testing.assert_allclose(got.loc[ok, "ret_v2__r"], 2 * got.loc[ok, "ret_v1__r"], rtol=0, atol=0)
    # columns subset
    only = store.training_set(labels, [FeatureRef("ret", 2, columns=["n"])])
    assert "ret_v2__r" not in only.columns and "ret_v2__n" in only.columns


def test_asof_indices_tie_keeps_last_and_unsorted_input() -> None:
    ent = np.array(["b", "a", "a", "a", "b"])
    ns = np.array([5, 3, 1, 3, 2])
    got = asof_indices(ent, ns, np.array(["a", "a", "b", "c", "a"]), np.array([3, 2, 4, 9, 0]))
    assert got.tolist() == [3, 2, 4, -1, -1]


# ------------------------------------------------------------------ partitions and backfill


def test_partition_pruning_reads_only_the_range(store: OfflineStore) -> None:
    rng = np.random.default_rng(11)
    rows = random_rows(rng, 500, days=10)
    store.write("ret", 1, rows)
    assert len(store.fragments("ret", 1)) == 10
    start, end = DAY0 + pd.Timedelta("3D 6h"), DAY0 + pd.Timedelta("5D")
    frags = store.fragments("ret", 1, start, end)
    assert [Path(f).parent.name for f in frags] == ["date=2024-01-05", "date=2024-01-06"]
    got = store.read("ret", 1, start, end).to_pandas()
    ref = rows[(rows["ts"] >= start) & (rows["ts"] < end)].sort_values(["symbol", "ts"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, ref, check_dtype=False)
    # prove the other partitions are never opened: corrupt one, the ranged read still works
    victim = store.fragments("ret", 1, DAY0 + pd.Timedelta("8D"), DAY0 + pd.Timedelta("9D"))[0]
    Path(victim).write_bytes(b"not parquet")
    pd.testing.assert_frame_equal(store.read("ret", 1, start, end).to_pandas(), got)
    with pytest.raises(pa.ArrowInvalid):
        store.read("ret", 1)


def _day_rows(day: date, bump: float = 0.0) -> pd.DataFrame:
    base = pd.Timestamp(day, tz="UTC")
    ts = [base + pd.Timedelta(h, "h") for h in (1, 5, 9, 13)]
    return pd.DataFrame(
        {
            "symbol": [s for s in SYMS for _ in ts],
            "ts": ts * len(SYMS),
            "r": [day.toordinal() + i + bump for i in range(len(ts) * len(SYMS))],
            "n": list(range(len(ts) * len(SYMS))),
        }
    )


def test_backfill_is_idempotent_and_overwrites_only_its_partitions(store: OfflineStore) -> None:
    assert store.backfill("ret", 1, _day_rows, "2024-01-02", "2024-01-06") == 60
    first = store.read("ret", 1).to_pandas()
    files1 = store.fragments("ret", 1)
    assert store.backfill("ret", 1, _day_rows, "2024-01-02", "2024-01-06") == 60
    second = store.read("ret", 1).to_pandas()
    pd.testing.assert_frame_equal(first, second)
    assert len(second) == 60 and not second.duplicated(["symbol", "ts"]).any()
    assert len(store.fragments("ret", 1)) == len(files1) == 5
    # rewrite two days with new values: only those partitions change
    store.backfill("ret", 1, lambda d: _day_rows(d, bump=0.5), date(2024, 1, 3), date(2024, 1, 4))
    third = store.read("ret", 1).to_pandas()
    changed = third["ts"].dt.date.isin([date(2024, 1, 3), date(2024, 1, 4)])
    assert len(third) == 60
    np.testing.assert_array_equal(third.loc[changed, "r"], first.loc[changed, "r"] + 0.5)
    pd.testing.assert_frame_equal(third[~changed], first[~changed])
    # a day that now has no rows ends up empty; stray dates are refused
    store.backfill("ret", 1, lambda d: _day_rows(d).iloc[:0], "2024-01-06", "2024-01-06")
    assert len(store.read("ret", 1)) == 48
    with pytest.raises(ValueError, match=r"^ts: backfill of 2024-01-02 returned rows dated \['2024-01-03'\]"):
        store.backfill("ret", 1, lambda d: _day_rows(d + timedelta(days=1)), "2024-01-02", "2024-01-02")
    assert len(store.read("ret", 1)) == 48  # the refused day was left alone


def test_latest_per_entity_as_of(store: OfflineStore) -> None:
    rng = np.random.default_rng(5)
    rows = random_rows(rng, 300)
    store.write("ret", 1, rows)
    as_of = DAY0 + pd.Timedelta("2D 3h")
    got = store.latest("ret", 1, as_of).to_pandas().set_index("symbol")
    ref = rows[rows["ts"] <= as_of].sort_values("ts").groupby("symbol").last()
    pd.testing.assert_frame_equal(got, ref[got.columns], check_dtype=False)
