"""Reading OpenSearch for `crm-audit verify`: point-in-time streams, event documents
and seals as read back (nothing here is trusted yet).
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
from collections.abc import Collection, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError
from opensearchpy.serializer import JSONSerializer

from collector.documents import parse_iso_nanos
from collector.index import Requester, Response
from proto import integrity
from proto.v1 import audit_pb2

PAGE = 2000  # hits per search page (two pages in memory per stream)


class VerifyError(Exception):
    """OpenSearch could not be read (the verification could not be carried out)."""


@contextlib.contextmanager
def few_collections() -> Iterator[None]:
    """The cyclic garbage collector run rarely, for the duration (and in worker processes
    forked meanwhile). Each search page is ~100,000 new objects, none in a cycle; with
    the default thresholds the collector traversed them again and again: ~20% of
    verify's CPU. Cyclic garbage can now grow by up to ~50,000 objects before a
    collection: bounded, whatever the count of events."""
    before = gc.get_threshold()
    gc.set_threshold(50_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*before)


class FastJson(JSONSerializer):
    """opensearch-py's serializer, answers decoded with msgspec: search pages of full
    documents are most of what verify reads, and the stdlib decoder spent ~1.5x the CPU
    on them. msgspec decodes what it accepts to the same values as the stdlib (integers
    of any size included, unlike orjson's floats beyond 64 bits); what it refuses (NaN,
    a lone surrogate, a float beyond double — an edited document may hold any) goes to
    the stdlib decoder as before, so verify compares the same values either way."""

    _decode = msgspec.json.Decoder().decode

    def loads(self, s: str) -> Any:
        try:
            return self._decode(s)
        except msgspec.MsgspecError:
            return super().loads(s)


class Reader:
    """Point-in-time + search_after streaming over one index pattern."""

    def __init__(self, request: Requester) -> None:
        self.request = request

    def stream(
        self,
        pattern: str,
        query: Mapping[str, Any],
        sort: Sequence[Mapping[str, Any]],
        source: Sequence[str] | bool = True,
        size: int = PAGE,
    ) -> Iterator[dict[str, Any]]:
        """Every hit of `query` over `pattern` in `sort` order, `size` hits per search.
        The next page is fetched in a background thread while the caller works on this
        one (one page ahead: memory is two pages, whatever the count)."""
        pages = self._pages(pattern, query, sort, source, size)
        with ThreadPoolExecutor(max_workers=1) as ahead:
            pending = ahead.submit(next, pages, None)
            try:
                while True:
                    page = pending.result()
                    if page is None:
                        return
                    pending = ahead.submit(next, pages, None)
                    yield from page
            finally:
                pending.cancel()
                with contextlib.suppress(Exception):
                    pending.result()  # let a running fetch finish before closing
                pages.close()

    def _pages(
        self,
        pattern: str,
        query: Mapping[str, Any],
        sort: Sequence[Mapping[str, Any]],
        source: Sequence[str] | bool,
        size: int,
    ) -> Generator[list[dict[str, Any]], None, None]:
        opened = self.request(
            "POST",
            f"/{pattern}/_search/point_in_time",
            params={"keep_alive": "5m", "expand_wildcards": "open"},
        )
        if opened.status in (400, 404) and _no_index(opened.body):
            return
        if opened.status != 200:
            raise _failed(f"cannot open a point in time on {pattern}", opened)
        pit = opened.body["pit_id"]
        try:
            after: list[Any] | None = None
            while True:
                body: dict[str, Any] = {
                    "size": size,
                    "query": query,
                    "sort": list(sort),
                    "pit": {"id": pit, "keep_alive": "5m"},
                    "_source": source,
                    "track_total_hits": False,
                }
                if after is not None:
                    body["search_after"] = after
                page = self.request("POST", "/_search", body=body)
                if page.status != 200:
                    raise _failed(f"search on {pattern} failed", page)
                pit = page.body.get("pit_id", pit)
                hits = page.body["hits"]["hits"]
                if hits:
                    yield hits
                if len(hits) < size:
                    return
                after = hits[-1]["sort"]
        finally:
            self.request("DELETE", "/_search/point_in_time", body={"pit_id": [pit]})

    def agents(self, pattern: str, agg_field: str) -> set[str]:
        found: set[str] = set()
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {
                "size": 1000,
                "sources": [{"agent": {"terms": {"field": agg_field}}}],
            }
            if after:
                composite["after"] = after
            response = self.request(
                "POST",
                f"/{pattern}/_search",
                body={"size": 0, "aggs": {"agents": {"composite": composite}}},
                params={"ignore_unavailable": "true", "allow_no_indices": "true"},
            )
            if response.status != 200:
                raise _failed(f"cannot list agents in {pattern}", response)
            agg = response.body.get("aggregations", {}).get("agents", {})
            buckets = agg.get("buckets", [])
            found.update(str(b["key"]["agent"]) for b in buckets)
            after = agg.get("after_key")
            if not buckets or not after:
                return found

    def streams(
        self, pattern: str, stream_field: str, agents: Collection[str] = ()
    ) -> set[tuple[str, str]]:
        """(agent, stream) pairs present in `pattern`; stream "" for documents without
        `stream_field` (format 1). A composite aggregation (paged, doc values only)."""
        found: set[tuple[str, str]] = set()
        after: dict[str, Any] | None = None
        query: dict[str, Any] = (
            {"terms": {"agent.id": sorted(agents)}} if agents else {"match_all": {}}
        )
        while True:
            composite: dict[str, Any] = {
                "size": 1000,
                "sources": [
                    {"agent": {"terms": {"field": "agent.id"}}},
                    {"stream": {"terms": {"field": stream_field, "missing_bucket": True}}},
                ],
            }
            if after:
                composite["after"] = after
            response = self.request(
                "POST",
                f"/{pattern}/_search",
                body={"size": 0, "query": query, "aggs": {"s": {"composite": composite}}},
                params={"ignore_unavailable": "true", "allow_no_indices": "true"},
            )
            if response.status != 200:
                raise _failed(f"cannot list streams in {pattern}", response)
            agg = response.body.get("aggregations", {}).get("s", {})
            buckets = agg.get("buckets", [])
            for b in buckets:
                found.add((str(b["key"]["agent"]), str(b["key"]["stream"] or "")))
            after = agg.get("after_key")
            if not buckets or not after:
                return found

    def count(self, pattern: str, query: Mapping[str, Any]) -> int:
        """How many documents over `pattern` match `query` (0: no such index)."""
        response = self.request(
            "POST",
            f"/{pattern}/_count",
            body={"query": query},
            params={"ignore_unavailable": "true", "allow_no_indices": "true"},
        )
        if response.status != 200:
            raise _failed(f"cannot count documents in {pattern}", response)
        return int(response.body.get("count", 0))

    def index_exists(self, name: str) -> bool:
        response = self.request(
            "GET", f"/{name}/_settings", params={"filter_path": "*.settings.index.uuid"}
        )
        if response.status == 404:
            return False
        if response.status == 200:
            return True
        raise _failed(f"cannot check index {name}", response)

    def chain_head(self, index: str, doc_id: str) -> tuple[int | None, str] | None:
        """(sequence, head hex) of the chain head document `doc_id` (``agent`` for
        format 1, ``agent:stream`` for format 2); None when there is none."""
        response = self.request("GET", f"/{index}/_doc/{doc_id}")
        if response.status == 404:
            return None
        if response.status != 200:
            raise _failed(f"cannot read chain head {doc_id}", response)
        chain = response.body.get("_source", {}).get("chain", {})
        seq = chain.get("sequence")
        return (int(seq) if seq is not None else None, str(chain.get("head", "")))


def _failed(what: str, response: Response) -> VerifyError:
    """`what` failed: the status and why, when OpenSearch or the connection said so.

    "HTTP 0" alone hides a certificate that did not verify; "HTTP 403" alone hides which
    permission the role lacks (the security plugin names it in its reason).
    """
    reason = ""
    error = response.body.get("error") if isinstance(response.body, Mapping) else None
    if isinstance(error, Mapping):
        reason = str(error.get("reason") or error.get("type") or "")
    elif error is not None:
        reason = str(error)
    reason = " ".join(reason.split())[:300]
    return VerifyError(f"{what}: HTTP {response.status}" + (f" ({reason})" if reason else ""))


def _no_index(body: Any) -> bool:
    text = json.dumps(body)
    return "index_not_found" in text or "invalid id: [null]" in text or "no such index" in text


@dataclass(slots=True)
class StoredEvent:
    """One event document as read back (slots: one is made per event read)."""

    position: int  # event.sequence as stored (searchable)
    doc_id: str
    index: str
    source: dict[str, Any]
    canonical: bytes | None
    decoded: audit_pb2.AuditEvent | None
    hint: bytes | None  # integrity.chain_hash as stored (not trusted)
    stream: str = ""  # agent.stream as stored (format 2; not trusted)
    # Why a document without inline bytes got none from a batch document
    # (`collector.verify.batches`), for the finding; "" otherwise.
    bytes_problem: str = ""
    # b"": not computed yet (no hash is empty). Not functools.cached_property: its lock
    # cost more than the hash on verify's hot path.
    _hash: bytes | None = field(default=b"", init=False, repr=False, compare=False)

    @property
    def event_hash(self) -> bytes | None:
        """The format 2 event hash recomputed from the stored bytes (None: unreadable)."""
        if self._hash == b"":
            self._hash = (
                integrity.event_hash(self.canonical) if self.canonical is not None else None
            )
        return self._hash

    @property
    def decoded_sequence(self) -> int | None:
        return self.decoded.sequence if self.decoded is not None else None


def read_event(hit: Mapping[str, Any]) -> StoredEvent:
    source = hit["_source"]
    integ = source.get("integrity", {})
    canonical: bytes | None = None
    decoded: audit_pb2.AuditEvent | None = None
    try:
        canonical = base64.b64decode(integ["canonical"], validate=True)
        decoded = audit_pb2.AuditEvent.FromString(canonical)
    except (KeyError, ValueError, TypeError, DecodeError):
        pass
    hint: bytes | None = None
    with contextlib.suppress(KeyError, ValueError, TypeError):
        hint = bytes.fromhex(integ["chain_hash"])
    return StoredEvent(
        position=int(source.get("event", {}).get("sequence", -1)),
        doc_id=str(hit["_id"]),
        index=str(hit["_index"]),
        source=source,
        canonical=canonical,
        decoded=decoded,
        hint=hint,
        stream=str(source.get("agent", {}).get("stream", "") or ""),
    )


@dataclass(frozen=True)
class SealInfo:
    """A seal read back: the signed message plus what the collector recorded beside it."""

    seal: audit_pb2.Seal
    indices: tuple[str, ...]
    problem: str  # "" when the seal is authentic and consistent
    index: str = ""  # where the seal document was read from
    # The signature verified (and a format 2 seal's heads chain over its hashes): its
    # signed content may be used even when its searchable fields were edited.
    signed_ok: bool = False


def read_seal(hit: Mapping[str, Any], agent: str, keys: Mapping[str, Ed25519PublicKey]) -> SealInfo:
    src = hit["_source"].get("seal", {})
    indices = tuple(str(i) for i in src.get("indices", []) or [])
    where = str(hit.get("_index", ""))
    try:
        seal = audit_pb2.Seal.FromString(base64.b64decode(src["raw"], validate=True))
    except (KeyError, ValueError, TypeError, DecodeError):
        seal = audit_pb2.Seal(
            agent_id=agent,
            first_sequence=int(src.get("first_sequence", 0)),
            last_sequence=int(src.get("last_sequence", 0)),
        )
        return SealInfo(seal, indices, "signed seal bytes unreadable", where)
    findings = integrity.check_seal(seal, agent, keys)
    if findings:
        return SealInfo(seal, indices, findings[0].detail, where)
    searchable = {
        "first_sequence": seal.first_sequence,
        "last_sequence": seal.last_sequence,
        "event_count": seal.event_count,
        "prev_chain_head": seal.prev_chain_head.hex(),
        "chain_head": seal.chain_head.hex(),
        "key_id": seal.key_id,
    }
    times: dict[str, int] = {}
    if integrity.seal_format(seal) == integrity.FORMAT_V2:
        if not integrity.seal_heads_consistent(seal):
            return SealInfo(seal, indices, "head is not the chain over its event hashes", where)
        searchable["stream"] = seal.stream_id
        searchable["format_version"] = integrity.FORMAT_V2
        times = {
            "min_event_time": seal.min_event_time_unix_nano,
            "max_event_time": seal.max_event_time_unix_nano,
        }
    changed = sorted(k for k, v in searchable.items() if src.get(k) != v)
    changed += [k for k, ns in times.items() if k in src and _nanos(src[k]) != ns]
    if changed:
        problem = f"searchable fields differ from the signed seal: {changed}"
        return SealInfo(seal, indices, problem, where, signed_ok=True)
    return SealInfo(seal, indices, "", where, signed_ok=True)


def _nanos(value: Any) -> int | None:
    try:
        return parse_iso_nanos(str(value))
    except ValueError:
        return None


class Peekable(Iterator[Any]):
    def __init__(self, source: Iterator[Any]) -> None:
        self._source = source
        self._head: list[Any] = []

    def __iter__(self) -> Peekable:
        return self

    def __next__(self) -> Any:
        if self._head:
            return self._head.pop()
        return next(self._source)

    def peek(self) -> Any | None:
        if not self._head:
            try:
                self._head.append(next(self._source))
            except StopIteration:
                return None
        return self._head[-1]
