"""Check ``ledger`` of :func:`~posledger.audit.verify`: loading a key the Ledger's way, through
its latest snapshot plus the events after it, equals the bulk replay."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from posledger.audit.findings import Check, Findings, state_differences
from posledger.audit.source import audit_storage_errors
from posledger.core.errors import StorageUnavailable
from posledger.core.position import PositionState
from posledger.store.application import LedgerApplication
from posledger.store.snapshot import project_from_store


def check_ledger_loads(
    app: LedgerApplication, findings: Findings, states: Mapping[uuid.UUID, PositionState]
) -> int:
    """Load every key that has a snapshot the Ledger's way (its latest snapshot plus the tail)
    and compare with the bulk replay; returns how many were loaded. A key without a snapshot
    loads by folding the very events the replay folded, so it is not read a second time."""
    snapshots = app.snapshots
    loads = 0
    for stream_id, replayed in states.items():
        stream = findings.streams[stream_id]
        try:
            with audit_storage_errors(app.description):
                if snapshots is not None and not any(
                    True for _ in snapshots.get(stream_id, desc=True, limit=1)
                ):
                    continue
                loads += 1
                loaded = app.repository.get(  # type: ignore[type-var]
                    stream_id, projector_func=project_from_store
                )
        except StorageUnavailable:
            raise
        except Exception as error:
            findings.problem(
                stream, Check.LEDGER, f"loading it through its snapshot fails: {error}"
            )
            continue
        if loaded != replayed:
            differences = state_differences(loaded, replayed)  # type: ignore[arg-type]
            findings.problem(
                stream,
                Check.LEDGER,
                "the snapshot-based load differs from the bulk replay: "
                + "; ".join(f"{name}: {a} vs {b}" for name, a, b in differences[:6]),
                getattr(loaded, "version", None),
            )
    return loads
