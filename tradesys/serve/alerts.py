"""`POST /v1/alerts`: an Alertmanager webhook receiver (payload version 4) that records each alert once.

Alertmanager resends a group on every `repeat_interval` and retries a failed POST, so the record is idempotent:
an alert is kept once per (fingerprint, startsAt, status) in the key store's `api_alerts` table, and, when the API
has a ledger, the first time it is seen it is also written to the ledger's `audit_log` (kind `alert`), next to
the restarts, kill-switch trips and rejects it is usually about. `GET /v1/alerts` reads the record back.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from tradesys.serve.keystore import KeyStore

MAX_ALERTS = 1000  # Alertmanager's max_alerts is 0 (all) by default; a group this large is a misconfiguration


class AmLabels(BaseModel):
    """An alert's labels: any string labels, `alertname` among them (Prometheus always sets it)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, str] = Field(init=False)

    alertname: str = Field(..., min_length=1)


class AmAlert(BaseModel):
    """One alert as Alertmanager sends it (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: AmLabels
    annotations: dict[str, str] = {}
    startsAt: datetime
    endsAt: datetime | None = None  # Alertmanager sends 0001-01-01T00:00:00Z while firing
    generatorURL: str = ""
    fingerprint: str = Field(..., min_length=1, max_length=128)


class AmWebhook(BaseModel):
    """The webhook body, version 4."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    groupKey: str = ""
    truncatedAlerts: int = Field(0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = Field(..., max_length=256)
    groupLabels: dict[str, str] = {}
    commonLabels: dict[str, str] = {}
    commonAnnotations: dict[str, str] = {}
    externalURL: str = ""
    alerts: list[AmAlert] = Field(..., min_length=1, max_length=MAX_ALERTS)


class AlertsReceived(BaseModel):
    received: int
    recorded: int  # new (fingerprint, startsAt, status) triples
    duplicates: int


class AlertRow(BaseModel):
    fingerprint: str
    starts_at: str
    status: str
    alertname: str
    ends_at: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    receiver: str
    key_id: str | None
    received_ns: int


class AlertList(BaseModel):
    alerts: list[AlertRow]


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None or ts.year <= 1 else ts.isoformat()


def record(store: KeyStore, ledger: Any, body: AmWebhook, key_id: str | None) -> AlertsReceived:
    """Write each new alert to the store (and the ledger's audit log); the count of new ones and duplicates."""
    from tradesys.ledger import AuditEntry, LedgerBatch

    new = 0
    for a in body.alerts:
        now = time.time_ns()
        starts = a.startsAt.isoformat()
        labels = a.labels.model_dump()
        row = {"fingerprint": a.fingerprint, "starts_at": starts, "status": a.status,
               "alertname": a.labels.alertname, "ends_at": _iso(a.endsAt), "labels": labels,
               "annotations": a.annotations, "receiver": body.receiver, "key_id": key_id, "received_ns": now}
        if not store.record_alert(row):
            continue
        new += 1
        if ledger is not None:
            summary = a.annotations.get("summary") or a.annotations.get("description") or ""
            entry = AuditEntry(now, "alert", f"{a.status} {a.labels.alertname}: {summary}"[:500], None,
                               {k: v for k, v in row.items() if k != "received_ns"})
            try:
                ledger.write(LedgerBatch(audit=[entry]))
            except BaseException:
                store.forget_alert(a.fingerprint, starts, a.status)  # the sender's retry records it again
                raise
    return AlertsReceived(received=len(body.alerts), recorded=new, duplicates=len(body.alerts) - new)


def alerts_router(store: KeyStore, ledger: Any, admin: list[Any], errors: dict[int | str, dict[str, Any]]) -> APIRouter:
    """The receiver and its read-back; both need an admin key (give Alertmanager a key of its own)."""
    from tradesys.serve.access import PRINCIPAL_KEY
    from tradesys.serve.errors import BadRequest

    router = APIRouter(tags=["alerts"])

    @router.post("/v1/alerts", response_model=AlertsReceived, dependencies=admin, responses=errors)
    async def receive_alerts(body: AmWebhook, request: Request) -> AlertsReceived:
        """Alertmanager webhook (version 4): each alert recorded once per (fingerprint, startsAt, status)."""
        p = request.scope.get("state", {}).get(PRINCIPAL_KEY)
        try:
            return await run_in_threadpool(record, store, ledger, body, None if p is None else p.key_id)
        except ValueError as exc:
            raise BadRequest.from_value_error(exc) from None

    @router.get("/v1/alerts", response_model=AlertList, dependencies=admin, responses=errors)
    async def list_alerts() -> dict[str, Any]:
        """Every alert received, oldest first."""
        return {"alerts": await run_in_threadpool(store.alerts)}

    return router
