"""`crm-audit report`: the compliance evidence pack for a period, as one HTML file.

Sections (each module reads OpenSearch through a `Requester`, read-only):

    coverage.py    enrolled agents, sources, events per day, silent sources (PCI DSS 10.7)
    integrity.py   `collector.verify` over the period per agent, checkpoint status
    access.py      privileged changes, top exporters and export volume, failed logins
    alerts.py      alerts by rule and severity over time, status, responses
    retention.py   policy per class (ISM or policy files), indices, legal holds, minimum

`charts.py` draws inline SVG with matplotlib, `render.py` writes the self-contained
document, `signing.py` makes it tamper-evident (digests + Ed25519 signature by the
collector key) and checks it (`crm-audit report-verify`), `build.py` ties them together.
"""
