"""Report tamper evidence: digests over every byte, Ed25519 signature, verify refuses edits."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.report.errors import SignatureError
from collector.report.signing import SIG_BEGIN, SIG_END, sign, summary_element, verify
from proto import integrity

SUMMARY = {"verified": True, "valid": False, "agents": {"a": {"ranges": []}}}
META = {"generated": "2026-11-27T00:00:00.000000000Z", "prefix": "p", "period": {}}


def _document() -> str:
    return (
        "<!DOCTYPE html><html><body><p>privileged changes: 50</p>"
        + summary_element(SUMMARY)
        + SIG_BEGIN
        + SIG_END
        + "</body></html>"
    )


def _keys(key: Ed25519PrivateKey) -> dict[str, object]:
    return {integrity.key_id(key.public_key()): key.public_key()}


def test_signed_report_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    signed = sign(_document(), SUMMARY, META, key)
    payload = verify(signed, _keys(key))  # type: ignore[arg-type]
    assert payload["key_id"] == integrity.key_id(key.public_key())


@pytest.mark.parametrize("needle", ["50", "privileged", "valid", "body>", "SHA-256", '"v":1'])
def test_any_changed_byte_is_refused(needle: str) -> None:
    key = Ed25519PrivateKey.generate()
    signed = sign(_document(), SUMMARY, META, key)
    at = signed.index(needle)
    altered = signed[:at] + chr(ord(signed[at]) ^ 1) + signed[at + 1 :]
    with pytest.raises(SignatureError):
        verify(altered, _keys(key))  # type: ignore[arg-type]


def test_other_key_and_unsigned_reports_are_refused() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError, match="not the given key"):
        verify(sign(_document(), SUMMARY, META, key), _keys(other))  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="not signed"):
        verify(sign(_document(), SUMMARY, META, None), _keys(key))  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="exactly one signature block"):
        verify("<html></html>", _keys(key))  # type: ignore[arg-type]


def test_re_signing_with_a_forged_payload_is_refused() -> None:
    """Swapping in a payload with a matching digest but no valid signature fails."""
    key, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    doc = _document().replace("50", "5")
    forged = sign(doc, SUMMARY, META, forger)
    with pytest.raises(SignatureError):
        verify(forged, _keys(key))  # type: ignore[arg-type]
