"""Tamper evidence of the report file itself.

The file holds exactly one signature block between the markers ``SIG_BEGIN`` and
``SIG_END``. Its payload (JSON, also shown in the page) is::

    {"v": 1, "format": "crm-audit-report", "report_sha256": <hex>,
     "verify_summary_sha256": <hex>, "generated": ..., "period": {...}, "prefix": ...,
     "key_id": <hex or "">, "sig": <base64 Ed25519 or "">}

``report_sha256`` is the SHA-256 of the whole file with the block's content removed
(the markers stay), so every byte outside the block is covered; the block itself must be
exactly what `signature_block` renders from its payload, so no byte inside it can change
either. ``verify_summary_sha256`` is the SHA-256 of the embedded verify summary
(``<script type="application/json" id="crm-audit-verify-summary">``, canonical JSON),
so the integrity verdict can be quoted and checked on its own. The signature covers
``DOMAIN || canonical JSON of the payload without "sig"``, by the collector's Ed25519
key (the checkpoint key of `collector.checkpoints`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from collector.report.errors import SignatureError
from proto import integrity

DOMAIN = b"crm-audit/report/v1\0"
SIG_BEGIN = "<!--crm-audit:signature:begin-->"
SIG_END = "<!--crm-audit:signature:end-->"
_PAYLOAD = re.compile(
    r'<script type="application/json" id="crm-audit-signature">(.*?)</script>', re.S
)
_SUMMARY = re.compile(
    r'<script type="application/json" id="crm-audit-verify-summary">(.*?)</script>', re.S
)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, ASCII, and ``</`` escaped so it can sit in a script tag."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.replace("</", "<\\/")


def _signing_bytes(payload: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in payload.items() if k != "sig"}
    return DOMAIN + canonical_json(body).encode("ascii")


def summary_element(summary: Mapping[str, Any]) -> str:
    return (
        '<script type="application/json" id="crm-audit-verify-summary">'
        f"{canonical_json(summary)}</script>"
    )


def signature_block(payload: Mapping[str, Any]) -> str:
    """The block's content: visible digests and the payload as JSON."""
    signed = bool(payload.get("sig"))
    state = (
        f"Signed with collector key <code>{html.escape(str(payload['key_id']))}</code>."
        if signed
        else "<strong>Not signed</strong> (no --signing-key): the digests alone do not "
        "prove who produced this file."
    )
    return (
        '<section id="signature" class="signature"><h2>Tamper evidence of this report</h2>'
        f"<p>{state} Check with <code>crm-audit report-verify FILE --key "
        "collector-signing-key.pub</code>.</p><table>"
        f"<tr><th>SHA-256 of the report</th><td><code>{payload['report_sha256']}</code></td></tr>"
        "<tr><th>SHA-256 of the verify summary</th>"
        f"<td><code>{payload['verify_summary_sha256']}</code></td></tr>"
        f'<tr><th>Signature (Ed25519)</th><td><code class="wrap">'
        f"{html.escape(str(payload.get('sig') or '-'))}</code></td></tr></table>"
        '<script type="application/json" id="crm-audit-signature">'
        f"{canonical_json(payload)}</script></section>"
    )


def _split(document: str) -> tuple[str, str, str]:
    if document.count(SIG_BEGIN) != 1 or document.count(SIG_END) != 1:
        raise SignatureError("not a crm-audit report: exactly one signature block expected")
    head, rest = document.split(SIG_BEGIN)
    block, tail = rest.split(SIG_END)
    return head, block, tail


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sign(
    document: str,
    summary: Mapping[str, Any],
    meta: Mapping[str, Any],
    key: Ed25519PrivateKey | None,
) -> str:
    """Fill the (empty) signature block of `document`."""
    head, block, tail = _split(document)
    if block:
        raise SignatureError("signature block is not empty")
    payload: dict[str, Any] = {
        "v": 1,
        "format": "crm-audit-report",
        **meta,
        "report_sha256": _sha256(head + SIG_BEGIN + SIG_END + tail),
        "verify_summary_sha256": _sha256(canonical_json(summary)),
        "key_id": integrity.key_id(key.public_key()) if key is not None else "",
        "sig": "",
    }
    if key is not None:
        payload["sig"] = base64.b64encode(key.sign(_signing_bytes(payload))).decode("ascii")
    return head + SIG_BEGIN + signature_block(payload) + SIG_END + tail


def verify(document: str, keys: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """Check digests and signature; returns the payload or raises `SignatureError`."""
    head, block, tail = _split(document)
    found = _PAYLOAD.search(block)
    if found is None:
        raise SignatureError("signature block holds no payload")
    try:
        payload = json.loads(found[1])
    except ValueError:
        raise SignatureError("signature payload is not JSON") from None
    if not isinstance(payload, dict) or payload.get("format") != "crm-audit-report":
        raise SignatureError("signature payload is not a crm-audit report payload")
    if block != signature_block(payload):
        raise SignatureError("signature block was edited")
    if _sha256(head + SIG_BEGIN + SIG_END + tail) != payload.get("report_sha256"):
        raise SignatureError("report digest does not match: the report was altered")
    summaries = _SUMMARY.findall(head + tail)
    if len(summaries) != 1:
        raise SignatureError("report holds no single verify summary")
    if _sha256(summaries[0]) != payload.get("verify_summary_sha256"):
        raise SignatureError("verify summary digest does not match: it was altered")
    if not payload.get("sig"):
        raise SignatureError("report is not signed")
    signer = keys.get(str(payload.get("key_id", "")))
    if signer is None:
        raise SignatureError(f"signed by key {payload.get('key_id')}, which is not the given key")
    try:
        signer.verify(base64.b64decode(payload["sig"], validate=True), _signing_bytes(payload))
    except (InvalidSignature, ValueError):
        raise SignatureError("signature does not verify") from None
    return payload
