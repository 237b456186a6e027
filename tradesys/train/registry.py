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
  mean(d) < 0). With no champion yet the challenger becomes champion without a champion test (reason
  ``no_champion``), but only if it passes the baseline gate.
* The baseline gate (`compare_to_baselines`): when `promote_if_better` is given the per-observation losses of the
  baselines the model is reported against (naive, GARCH), the challenger must beat EACH of them by the same
  one-sided DM test at ``alpha``, before and independently of any champion; otherwise it is refused with reason
  ``not_better_than_baselines``, first model included. A network that loses to GARCH on the holdout is never
  served just because nothing was served before.
* The decision and its statistics go to the challenger version's run: tags ``promotion.decision``,
  ``promotion.reason``, ``promotion.champion_version`` and metrics ``promotion_dm_stat``, ``promotion_pvalue``,
  ``promotion_mean_diff``, ``promotion_alpha``, ``promotion_promoted`` (1/0); and on the registered model the tag
  ``champion_history`` (a JSON list of the versions that have held the alias, oldest first).
* `rollback` moves ``champion`` back to the previous entry of that history (and drops the current one from it).
* `set_champion` is the manual override (an operator's decision, no test): it appends to the same history, so
  `rollback` undoes it, and tags the version's run and the model version ``promotion.decision=promoted``,
  ``promotion.reason=manual``, ``promotion.champion_version`` (the one replaced), ``promotion.manual_reason`` and
  ``promotion.at`` (UTC, ISO 8601).
* `list_models` / `describe_version` read the registry back (aliases, run, ``holdout_*`` metrics, the decision);
  `export_versions` downloads the run artifacts ``exports/model.onnx``, ``exports/model.pt`` and
  ``standardizer.json`` of each version into ``dest/<version>/``, the layout `tradesys.serve.predict` serves.

Errors are ``ValueError("field: reason")`` with the field ``name``, ``version``, ``versions``, ``reason``,
``champion`` (nothing to roll back to) or ``dest_dir``, so a command line can name its own argument.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tradesys.train.evaluate import diebold_mariano

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "EXPORT_FILES",
    "BaselineComparison",
    "ExportFile",
    "PromotionDecision",
    "VersionInfo",
    "alias_version",
    "champion_history",
    "compare_to_baselines",
    "describe_version",
    "export_versions",
    "list_models",
    "plan_export",
    "promote_if_better",
    "register",
    "resolve_version",
    "rollback",
    "set_champion",
]

CHAMPION = "champion"
CHALLENGER = "challenger"
_HISTORY_TAG = "champion_history"


DM_TEST = "one-sided Diebold-Mariano (HLN, uniform kernel)"


@dataclass(frozen=True)
class BaselineComparison:
    """The challenger against one baseline on the same holdout: mean losses and the one-sided DM test
    (H1: the challenger's expected loss is smaller). ``beaten`` iff p < alpha and the challenger's mean is lower."""

    baseline: str
    loss: str
    model_loss: float  # mean holdout loss of the challenger
    baseline_loss: float  # mean holdout loss of the baseline
    dm_stat: float
    pvalue: float
    beaten: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_to_baselines(
    losses: np.ndarray, baselines: Mapping[str, np.ndarray], alpha: float, *, h: int = 1, loss: str = "loss"
) -> tuple[BaselineComparison, ...]:
    """Test the challenger's per-observation `losses` against each baseline's (same holdout, same order)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: must be in (0, 1), got {alpha}")
    a = np.asarray(losses, dtype=np.float64)
    out = []
    for who, bl in baselines.items():
        b = np.asarray(bl, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"baselines: {who!r} has {b.size} losses, the challenger {a.size}")
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise ValueError(f"losses: must be finite (challenger or baseline {who!r})")
        dm = diebold_mariano(a, b, h=h, hln=True, alternative="less", kernel="uniform")
        beaten = bool(dm.pvalue < alpha and dm.mean_diff < 0)
        out.append(BaselineComparison(str(who), loss, float(a.mean()), float(b.mean()), dm.stat, dm.pvalue, beaten))
    return tuple(out)


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of `promote_if_better`; champion statistics are NaN when no champion test ran."""

    promoted: bool
    reason: str  # "no_champion" | "significantly_better" | "not_significant" | "not_better_than_baselines"
    challenger_version: int
    champion_version: int | None  # the champion the challenger was compared with
    dm_stat: float
    pvalue: float
    mean_diff: float  # mean(challenger loss - champion loss): negative = challenger better
    alpha: float
    n: int
    h: int
    baselines: tuple[BaselineComparison, ...] = ()
    test: str = DM_TEST

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["baselines"] = [b.to_dict() for b in self.baselines]
        return d


def _client(tracking_uri: str | None = None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _registered_model(client: Any, name: str) -> Any:
    """The registered model, or ValueError naming ``name`` when it does not exist."""
    from mlflow.exceptions import MlflowException

    if not name or not name.strip():
        raise ValueError("name: must be a non-empty registered model name")
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if _not_found(exc):
            raise ValueError(f"name: registered model {name!r} not found") from None
        raise


def alias_version(name: str, alias: str, *, tracking_uri: str | None = None) -> int | None:
    """The version number the alias points at, or None if it is not set (or the model does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        return int(_client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion_history(name: str, *, tracking_uri: str | None = None) -> list[int]:
    """Versions that have held ``champion``, oldest first (the registered model's ``champion_history`` tag)."""
    tags = _registered_model(_client(tracking_uri), name).tags
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
    baselines: Mapping[str, np.ndarray] | None = None,
    loss: str = "loss",
) -> PromotionDecision:
    """Move ``champion`` to the ``challenger`` version iff a one-sided DM test (uniform kernel) finds the challenger's
    holdout losses significantly smaller at level `alpha`; log the decision to the challenger's run; return it.

    Losses are per-observation on the same holdout, in the same order (module docstring). With no champion yet the
    champion test is skipped, and `champion_losses` may be empty. `baselines` (name -> losses, `loss` names the
    loss) must each be beaten first (the baseline gate, module docstring), whether or not there is a champion.
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
    gate = compare_to_baselines(a, baselines, alpha, h=h, loss=loss) if baselines else ()
    if champ is not None and champ == chall:
        raise ValueError(f"name: {CHALLENGER!r} and {CHAMPION!r} both point at version {chall}")
    if not all(g.beaten for g in gate):
        dec = PromotionDecision(False, "not_better_than_baselines", chall, champ, math.nan, math.nan, math.nan,
                                alpha, a.size, h, gate)  # fmt: skip
    elif champ is None:
        dec = PromotionDecision(True, "no_champion", chall, None, math.nan, math.nan, math.nan, alpha, a.size, h, gate)
    else:
        b = np.asarray(champion_losses, dtype=np.float64)
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise ValueError("losses: must be finite")
        dm = diebold_mariano(a, b, h=h, hln=True, alternative="less", kernel="uniform")
        promoted = bool(dm.pvalue < alpha and dm.mean_diff < 0)
        dec = PromotionDecision(
            promoted, "significantly_better" if promoted else "not_significant", chall, champ,
            dm.stat, dm.pvalue, dm.mean_diff, alpha, dm.n, h, gate,
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
        for g in gate:
            if math.isfinite(g.pvalue):
                client.log_metric(run_id, f"promotion_vs_{g.baseline}_pvalue", g.pvalue)
            client.set_tag(run_id, f"promotion.beats_{g.baseline}", str(g.beaten).lower())
    return dec


def rollback(name: str, *, tracking_uri: str | None = None) -> int:
    """Point ``champion`` back at the previous champion; return that version.

    ValueError with the field ``champion`` (not ``name``: the model exists, it has nothing to roll back to) when
    there is no previous champion, naming the model and its champion history.
    """
    client = _client(tracking_uri)
    history = champion_history(name, tracking_uri=tracking_uri)  # an unknown model is a ``name`` error
    if len(history) < 2:
        now = f"only version {history[0]} has been champion" if history else "it has never had a champion"
        raise ValueError(f"champion: no previous champion of {name!r} to roll back to ({now})")
    current = alias_version(name, CHAMPION, tracking_uri=tracking_uri)
    if current != history[-1]:
        raise ValueError(f"champion: {name!r} champion alias ({current}) disagrees with its champion history's last "
                         f"entry ({history[-1]}); set it with a manual promotion")  # fmt: skip
    prev = history[-2]
    _set_champion(client, name, prev, history[:-1])
    return prev


# --- reading the registry back, manual promotion, export ------------------------------------------------------------

EXPORT_FILES: tuple[str, ...] = ("exports/model.onnx", "exports/model.pt", "standardizer.json")
_MODEL_EXPORTS = EXPORT_FILES[:2]
_MAX_REASON = 1000


@dataclass(frozen=True)
class VersionInfo:
    """One registry version as `list_models` reports it; ``holdout`` has the run's ``holdout_<loss>`` metrics under
    ``<loss>``, ``promotion`` the ``promotion.*`` tags (run, then model version) and ``promotion_stats`` the
    ``promotion_*`` metrics, both without their prefix."""

    version: int
    aliases: tuple[str, ...]
    run_id: str | None
    created: str  # UTC, ISO 8601
    status: str
    source: str
    holdout: dict[str, float] = field(default_factory=dict)
    promotion: dict[str, str] = field(default_factory=dict)
    promotion_stats: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["aliases"] = list(self.aliases)
        return d


@dataclass(frozen=True)
class ExportFile:
    """One artifact `export_versions` will download: ``artifact_path`` of ``run_id`` -> ``<dest>/<version>/<name>``."""

    version: int
    run_id: str
    artifact_path: str
    size: int | None

    @property
    def filename(self) -> str:
        return self.artifact_path.rsplit("/", 1)[-1]


def _iso(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000.0, UTC).isoformat(timespec="seconds")


def _all_versions(client: Any, name: str) -> list[Any]:
    quote = "'" if "'" not in name else '"'
    if quote in name:
        raise ValueError("name: a registered model name cannot contain both quote characters")
    out: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(f"name = {quote}{name}{quote}", page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return sorted(out, key=lambda mv: int(mv.version))


def _aliases_by_version(rm: Any) -> dict[int, list[str]]:
    by: dict[int, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        by.setdefault(int(v), []).append(str(alias))
    return {k: sorted(v) for k, v in by.items()}


def _run_or_none(client: Any, run_id: str | None) -> Any:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if _not_found(exc):
            return None  # the run was deleted; the version row still lists what the registry knows
        raise


def _version_info(client: Any, mv: Any, aliases: dict[int, list[str]]) -> VersionInfo:
    run = _run_or_none(client, mv.run_id)
    metrics = dict(run.data.metrics) if run is not None else {}
    tags = {k: v for k, v in (run.data.tags if run is not None else {}).items() if k.startswith("promotion.")}
    tags.update({k: v for k, v in (mv.tags or {}).items() if k.startswith("promotion.")})
    v = int(mv.version)
    return VersionInfo(
        version=v, aliases=tuple(aliases.get(v, [])), run_id=mv.run_id or None, created=_iso(mv.creation_timestamp),
        status=str(mv.status or ""), source=str(mv.source or ""),
        holdout={k.removeprefix("holdout_"): float(x) for k, x in sorted(metrics.items())
                 if k.startswith("holdout_")},
        promotion={k.removeprefix("promotion."): str(x) for k, x in sorted(tags.items())},
        promotion_stats={k.removeprefix("promotion_"): float(x) for k, x in sorted(metrics.items())
                         if k.startswith("promotion_")},
    )  # fmt: skip


def list_models(name: str, *, tracking_uri: str | None = None) -> list[VersionInfo]:
    """Every version of `name`, oldest first, with its aliases, run, holdout metrics and promotion decision."""
    client = _client(tracking_uri)
    rm = _registered_model(client, name)
    aliases = _aliases_by_version(rm)
    return [_version_info(client, mv, aliases) for mv in _all_versions(client, name)]


def resolve_version(name: str, ref: int | str, *, tracking_uri: str | None = None) -> int:
    """A version number from a number or an alias (``champion``, ``challenger``, ...); ValueError naming
    ``version`` when `name` has no such version or alias."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    rm = _registered_model(client, name)
    text = str(ref).strip()
    if text.isdigit():
        try:
            return int(client.get_model_version(name, str(int(text))).version)
        except MlflowException as exc:
            if not _not_found(exc):
                raise
        have = [int(mv.version) for mv in _all_versions(client, name)]
        raise ValueError(f"version: {name!r} has no version {int(text)} (versions: {have})")
    aliases = dict(rm.aliases or {})
    if text in aliases:
        return int(aliases[text])
    raise ValueError(f"version: {text!r} is neither a version number nor an alias of {name!r} "
                     f"(aliases: {sorted(aliases) or 'none'})")


def _list_artifacts(client: Any, run_id: str, path: str | None = None, limit: int = 500) -> list[tuple[str, int]]:
    """(path, size) of the run's artifact files under `path`, recursively, at most `limit`."""
    out: list[tuple[str, int]] = []
    stack = [path]
    while stack and len(out) < limit:
        for f in client.list_artifacts(run_id, stack.pop()):
            if f.is_dir:
                stack.append(f.path)
            else:
                out.append((f.path, int(f.file_size or 0)))
    return sorted(out)[:limit]


def describe_version(name: str, ref: int | str, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """`list_models`'s row for one version (number or alias), plus its run's parameters, the version's tags and
    description, and the run's artifact files (path, bytes)."""
    client = _client(tracking_uri)
    v = resolve_version(name, ref, tracking_uri=tracking_uri)
    rm = _registered_model(client, name)
    mv = client.get_model_version(name, str(v))
    info = _version_info(client, mv, _aliases_by_version(rm))
    run = _run_or_none(client, mv.run_id)
    return {
        **info.to_dict(), "name": name, "description": mv.description or "", "tags": dict(mv.tags or {}),
        "run_name": run.info.run_name if run is not None else None,
        "params": dict(sorted(run.data.params.items())) if run is not None else {},
        "artifacts": [{"path": p, "bytes": n} for p, n in _list_artifacts(client, mv.run_id)] if run else [],
    }  # fmt: skip


def set_champion(name: str, version: int | str, reason: str, *, tracking_uri: str | None = None) -> int | None:
    """Point ``champion`` at `version` by hand (no test); return the champion it replaced (None if none).

    The history grows exactly as in `promote_if_better`, so `rollback` undoes this; the decision is tagged as
    manual with `reason` on the version's run and on the model version (module docstring).
    """
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("reason: a manual promotion needs a non-empty reason")
    if len(reason) > _MAX_REASON:
        raise ValueError(f"reason: at most {_MAX_REASON} characters, got {len(reason)}")
    client = _client(tracking_uri)
    v = resolve_version(name, version, tracking_uri=tracking_uri)
    current = alias_version(name, CHAMPION, tracking_uri=tracking_uri)
    if current == v:
        raise ValueError(f"version: {v} is already the champion of {name!r}")
    history = champion_history(name, tracking_uri=tracking_uri)
    _set_champion(client, name, v, [*history, v])
    tags = {
        "promotion.decision": "promoted", "promotion.reason": "manual",
        "promotion.champion_version": "" if current is None else str(current),
        "promotion.manual_reason": reason.strip(), "promotion.at": _iso(int(datetime.now(UTC).timestamp() * 1000)),
    }  # fmt: skip
    for k, val in tags.items():
        client.set_model_version_tag(name, str(v), k, val)
    run_id = client.get_model_version(name, str(v)).run_id
    if run_id and _run_or_none(client, run_id) is not None:
        for k, val in tags.items():
            client.set_tag(run_id, k, val)
        client.log_metric(run_id, "promotion_promoted", 1.0)
    return current


def plan_export(name: str, versions: Iterable[int | str], *, tracking_uri: str | None = None) -> list[ExportFile]:
    """The files `export_versions` would download, checked before anything is written: each version (number or
    alias, duplicates dropped) must exist and its run must hold ``exports/model.onnx`` or ``exports/model.pt``."""
    client = _client(tracking_uri)
    resolved: list[int] = []
    for ref in versions:
        v = resolve_version(name, ref, tracking_uri=tracking_uri)
        if v not in resolved:
            resolved.append(v)
    if not resolved:
        raise ValueError("versions: at least one version to export")
    plan: list[ExportFile] = []
    for v in resolved:
        run_id = client.get_model_version(name, str(v)).run_id
        if not run_id or _run_or_none(client, run_id) is None:
            raise ValueError(f"versions: version {v} of {name!r} has no run, hence no exports")
        present = dict(_list_artifacts(client, run_id, "exports"))
        present.update((f.path, int(f.file_size or 0)) for f in client.list_artifacts(run_id) if not f.is_dir)
        if not any(p in present for p in _MODEL_EXPORTS):
            raise ValueError(f"versions: version {v} of {name!r} has no exports (its run {run_id} has neither "
                             f"{' nor '.join(_MODEL_EXPORTS)})")
        plan += [ExportFile(v, run_id, p, present[p]) for p in EXPORT_FILES if p in present]
    return plan


def export_versions(
    name: str,
    dest_dir: str | os.PathLike[str],
    versions: Iterable[int | str],
    *,
    tracking_uri: str | None = None,
    on_file: Callable[[ExportFile, Path], None] | None = None,
) -> dict[int, list[Path]]:
    """Download each version's exports (`EXPORT_FILES` that exist) to ``dest_dir/<version>/<file name>``; return
    the written paths by version. Everything is checked first (`plan_export`), so a version without exports fails
    before any file is written. Each file is downloaded to a scratch folder in `dest_dir` and moved into place;
    `on_file(file, path)` is called after each one (progress)."""
    plan = plan_export(name, versions, tracking_uri=tracking_uri)
    dest = Path(dest_dir).expanduser()
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"dest_dir: {str(dest)!r} exists and is not a directory")
    dest.mkdir(parents=True, exist_ok=True)
    import mlflow.artifacts

    out: dict[int, list[Path]] = {}
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as scratch:
        for i, f in enumerate(plan):
            local = mlflow.artifacts.download_artifacts(
                run_id=f.run_id, artifact_path=f.artifact_path, dst_path=os.path.join(scratch, str(i)),
                tracking_uri=tracking_uri,
            )  # fmt: skip
            target = dest / str(f.version) / f.filename
            target.parent.mkdir(exist_ok=True)
            shutil.move(local, target)
            out.setdefault(f.version, []).append(target)
            if on_file is not None:
                on_file(f, target)
    return out
