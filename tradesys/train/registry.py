"""The MLflow model registry for the forecasters: versions, the ``champion``/``challenger`` aliases, promotion by a
Diebold-Mariano test, and rollback.

Why a test and not "lower holdout loss wins": on a few hundred holdout days two forecasts' mean losses differ by
noise most of the time; moving the served model on noise churns it for nothing. The champion alias moves only
when the challenger's holdout losses are significantly smaller.

Conventions:

* ``register(run_id_or_uri, name)`` creates a new version and points the ``challenger`` alias at it.
* `promote_if_better` tests d_t = L(challenger)_t - L(champion)_t on the SAME holdout observations with
  `tradesys.train.evaluate.diebold_mariano` (HLN correction, ``kernel="uniform"``, ``alternative="less"``:
  H1 "the challenger has the smaller expected loss"); ``h`` is the forecast horizon of the loss (the vol horizon
  for an overlapping h-period vol loss, 1 for next-period losses). It promotes when p < alpha (which needs
  mean(d) < 0). With no champion yet the challenger becomes champion without a test (reason ``no_champion``).
* The decision and its statistics go to the challenger version's run: tags ``promotion.decision``,
  ``promotion.reason``, ``promotion.champion_version`` and metrics ``promotion_dm_stat``, ``promotion_pvalue``,
  ``promotion_mean_diff``, ``promotion_alpha``, ``promotion_promoted`` (1/0); and on the registered model the tag
  ``champion_history`` (a JSON list of the versions that have held the alias, oldest first).
* `rollback` moves ``champion`` back to the previous entry of that history (and drops the current one from it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tradesys.train.evaluate import diebold_mariano

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PromotionDecision",
    "alias_version",
    "champion_history",
    "promote_if_better",
    "register",
    "rollback",
]

CHAMPION = "champion"
CHALLENGER = "challenger"
_HISTORY_TAG = "champion_history"


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of `promote_if_better`; statistics are NaN when no test ran (no champion yet)."""

    promoted: bool
    reason: str  # "no_champion" | "significantly_better" | "not_significant"
    challenger_version: int
    champion_version: int | None  # the champion the challenger was compared with
    dm_stat: float
    pvalue: float
    mean_diff: float  # mean(challenger loss - champion loss): negative = challenger better
    alpha: float
    n: int
    h: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _client(tracking_uri: str | None = None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def alias_version(name: str, alias: str, *, tracking_uri: str | None = None) -> int | None:
    """The version number the alias points at, or None if it is not set (or the model does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        return int(_client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion_history(name: str, *, tracking_uri: str | None = None) -> list[int]:
    """Versions that have held ``champion``, oldest first (the registered model's ``champion_history`` tag)."""
    tags = _client(tracking_uri).get_registered_model(name).tags
    return [int(v) for v in json.loads(tags.get(_HISTORY_TAG, "[]"))]


def _set_champion(client: Any, name: str, version: int, history: list[int]) -> None:
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_registered_model_tag(name, _HISTORY_TAG, json.dumps(history))


def register(model_uri: str, name: str, *, tracking_uri: str | None = None, tags: dict[str, str] | None = None) -> int:
    """Register `model_uri` (``runs:/<run>/model`` or a logged model's ``models:/m-...`` URI) as a new version of
    `name` (creating the model if needed), point ``challenger`` at it, and return the version number."""
    import mlflow

    if not name or not name.strip():
        raise ValueError("name: must be a non-empty registered model name")
    if tracking_uri is not None:
        mlflow.set_registry_uri(tracking_uri)
    mv = mlflow.register_model(model_uri, name, tags=tags)
    version = int(mv.version)
    _client(tracking_uri).set_registered_model_alias(name, CHALLENGER, str(version))
    return version


def promote_if_better(
    name: str,
    challenger_losses: np.ndarray,
    champion_losses: np.ndarray,
    alpha: float = 0.05,
    *,
    h: int = 1,
    tracking_uri: str | None = None,
) -> PromotionDecision:
    """Move ``champion`` to the ``challenger`` version iff a one-sided DM test (uniform kernel) finds the challenger's
    holdout losses significantly smaller at level `alpha`; log the decision to the challenger's run; return it.

    Losses are per-observation on the same holdout, in the same order (module docstring). With no champion yet the
    challenger is promoted without a test, and `champion_losses` may be empty.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: must be in (0, 1), got {alpha}")
    client = _client(tracking_uri)
    chall = alias_version(name, CHALLENGER, tracking_uri=tracking_uri)
    if chall is None:
        raise ValueError(f"name: registered model {name!r} has no {CHALLENGER!r} alias (register a version first)")
    champ = alias_version(name, CHAMPION, tracking_uri=tracking_uri)
    history = champion_history(name, tracking_uri=tracking_uri)
    a = np.asarray(challenger_losses, dtype=np.float64)
    if champ is None:
        dec = PromotionDecision(True, "no_champion", chall, None, math.nan, math.nan, math.nan, alpha, a.size, h)
    elif champ == chall:
        raise ValueError(f"name: {CHALLENGER!r} and {CHAMPION!r} both point at version {chall}")
    else:
        b = np.asarray(champion_losses, dtype=np.float64)
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise ValueError("losses: must be finite")
        dm = diebold_mariano(a, b, h=h, hln=True, alternative="less", kernel="uniform")
        promoted = bool(dm.pvalue < alpha and dm.mean_diff < 0)
        dec = PromotionDecision(
            promoted, "significantly_better" if promoted else "not_significant", chall, champ,
            dm.stat, dm.pvalue, dm.mean_diff, alpha, dm.n, h,
        )  # fmt: skip
    if dec.promoted:
        _set_champion(client, name, chall, [*history, chall])
    run_id = client.get_model_version(name, str(chall)).run_id
    if run_id:
        client.set_tag(run_id, "promotion.decision", "promoted" if dec.promoted else "refused")
        client.set_tag(run_id, "promotion.reason", dec.reason)
        client.set_tag(run_id, "promotion.champion_version", "" if champ is None else str(champ))
        for key in ("dm_stat", "pvalue", "mean_diff", "alpha"):
            v = float(getattr(dec, key))
            if math.isfinite(v):
                client.log_metric(run_id, f"promotion_{key}", v)
        client.log_metric(run_id, "promotion_promoted", float(dec.promoted))
    return dec


def rollback(name: str, *, tracking_uri: str | None = None) -> int:
    """Point ``champion`` back at the previous champion; return that version. ValueError if there is none."""
    client = _client(tracking_uri)
    history = champion_history(name, tracking_uri=tracking_uri)
    if len(history) < 2:
        raise ValueError(f"name: {name!r} has no previous champion to roll back to (history {history})")
    current = alias_version(name, CHAMPION, tracking_uri=tracking_uri)
    if current != history[-1]:
        raise ValueError(f"name: champion alias ({current}) disagrees with the history's last entry ({history[-1]})")
    prev = history[-2]
    _set_champion(client, name, prev, history[:-1])
    return prev
