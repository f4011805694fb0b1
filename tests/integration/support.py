"""What the end-to-end tests share: the collector config they run real processes with."""

from __future__ import annotations

import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STANDARD_POLICY = REPO / "config" / "opensearch" / "ism-standard.json"


def write_collector_config(
    path: Path,
    *,
    pki: Path,
    url: str,
    prefix: str,
    port: int,
    opensearch_extra: str = "",
    extra: str = "",
) -> Path:
    """A collector.yaml on 127.0.0.1:`port` with the PKI's certificates, one retention
    class, `opensearch_extra` keys under `opensearch:` and `extra` top-level sections."""
    opensearch = textwrap.indent(textwrap.dedent(opensearch_extra).strip(), "  ")
    path.write_text(
        f"""listen: "127.0.0.1:{port}"
tls: {{ca: {pki}/ca.crt, cert: {pki}/collector.crt, key: {pki}/collector.key}}
opensearch:
  url: "{url}"
  index_prefix: "{prefix}"
{opensearch}
retention:
  default_class: standard
  classes:
    standard: {{policy: {STANDARD_POLICY}}}
{textwrap.dedent(extra).strip()}
""",
        encoding="utf-8",
    )
    return path
