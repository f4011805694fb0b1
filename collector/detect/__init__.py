"""Detection and response: rules over indexed events, alerts, notifications, hooks.

rules.py     the rules file (config/rules.yaml): models, defaults per kind, loading
fields.py    the document fields rules may name (from the strict events mapping)
conditions.py  ``where`` conditions of the generic kinds: as a query and in Python
settings.py  the ``detection:`` section of collector.yaml
alerts.py    Alert, its deterministic ``_id`` and document (alerts index fields)
inline.py    per-event rules (pure), run on every indexed batch
windowed.py  sliding-window rules over one key's events, order-free suppression (pure)
search.py    OpenSearch queries (aggregations, events, alerts) and alert writes
lease.py     per-rule leases in ``{prefix}-leases`` (one evaluator at a time)
respond.py   webhook notifier, per-rule response hooks, response records
engine.py    Engine (evaluation, dry run) and Detection (the live service)
"""
