"""Operations: watching posledger at work (Prometheus metrics, alert hooks, a webhook notifier)
through the observer seams of the ledger and the drivers. :mod:`posledger.ops.metrics` needs the
optional extra ``metrics`` (prometheus-client); the rest needs nothing beyond posledger."""
