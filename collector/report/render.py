"""The report as one self-contained HTML document (inline CSS and SVG, no script runs).

A Content-Security-Policy meta tag forbids every network fetch and every script, so the
archived file shows the same thing wherever it is opened; the only ``<script>`` elements
are JSON data blocks (the verify summary and the signature payload), which never run.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from collector.report import charts
from collector.report.access import Access
from collector.report.alerts import Alerts
from collector.report.coverage import AgentRow, Coverage, StreamRow
from collector.report.integrity import Integrity
from collector.report.query import Period
from collector.report.retention import FAILS, MEETS, NO_POLICY, Retention
from collector.report.signing import SIG_BEGIN, SIG_END, summary_element
from collector.verify import VALID

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
MAX_RANGES = 200

_CSS = """
:root{--ink:#1d2733;--muted:#5b6675;--line:#d5dbe3;--ok:#1e7b34;--bad:#b3261e;--warn:#9a6700}
*{box-sizing:border-box}
body{font:14px/1.45 "DejaVu Sans","Liberation Sans",Arial,sans-serif;color:var(--ink);
 margin:0 auto;max-width:1180px;padding:24px 32px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;padding-bottom:4px;
 border-bottom:2px solid var(--ink)}h3{font-size:15px;margin:20px 0 6px}
.meta{color:var(--muted);margin:0 0 16px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:12.5px}
th,td{border:1px solid var(--line);padding:4px 6px;text-align:left;vertical-align:top}
th{background:#eef2f6}tr:nth-child(even) td{background:#f8fafc}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:bold;font-size:12px;
 color:#fff}
.ok{background:var(--ok)}.bad{background:var(--bad)}.warn{background:var(--warn)}
.info{background:#4a5a6e}
svg.chart{display:block;max-width:100%;height:auto;margin:8px 0}
details{margin:0 0 12px}summary{cursor:pointer;color:var(--muted)}
code{font-family:"DejaVu Sans Mono",monospace;font-size:12px}.wrap{word-break:break-all}
.note{color:var(--muted);font-size:12.5px}
table.signoff td{height:40px}
.signature{margin-top:32px;border-top:1px solid var(--line)}
@media print{body{padding:0;max-width:none}h2{break-before:page}
 h2.first{break-before:avoid}table,svg{break-inside:avoid}details{display:block}}
"""


@dataclass
class ReportData:
    """Everything the document shows."""

    prefix: str
    period: Period
    generated: datetime
    cluster: str
    min_retention_days: float
    coverage: Coverage
    integrity: Integrity
    access: Access
    alerts: Alerts
    retention: Retention


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def when(value: datetime | str | None) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return value.replace("T", " ")[:19] + " UTC" if "T" in value else value
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def badge(text: str, kind: str) -> str:
    return f'<span class="badge {kind}">{esc(text)}</span>'


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    numeric: Sequence[int] = (),
    cls: str = "",
) -> str:
    """A table; cells are escaped unless they are `Raw`."""
    head = "".join(
        f'<th class="n">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = (
                cell.html
                if isinstance(cell, Raw)
                else esc(f"{cell:,}" if isinstance(cell, int) else cell)
            )
            cells.append(f'<td class="n">{text}</td>' if i in numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class="note">none</td></tr>')
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


@dataclass(frozen=True)
class Raw:
    """Cell content that is already HTML."""

    html: str


def _data(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int]) -> str:
    return f"<details><summary>Data</summary>{table(headers, rows, numeric=numeric)}</details>"


def _day_data(days: Sequence[datetime], series: Mapping[str, Sequence[float]]) -> str:
    names = list(series)
    rows = [
        [day.strftime("%Y-%m-%d"), *(int(series[n][i]) for n in names)]
        for i, day in enumerate(days)
    ]
    return _data(["day", *names], rows, list(range(1, len(names) + 1)))


# -- sections ------------------------------------------------------------------------------


def _summary(d: ReportData) -> str:
    cov, integ, acc, al, ret = d.coverage, d.integrity, d.access, d.alerts, d.retention
    if integ.report is None:
        integ_badge, integ_text = badge("NOT VERIFIED", "bad"), integ.skipped
    else:
        bad = sum(1 for a in integ.report.agents.values() if not a.valid)
        integ_badge = badge("VALID", "ok") if integ.report.valid else badge("FINDINGS", "bad")
        integ_text = (
            f"{len(integ.report.agents)} agents, {integ.report.events:,} events checked; "
            f"{bad} agent(s) with findings"
        )
    if integ.checkpoints is not None and integ.checkpoints.problems:
        integ_badge += " " + badge("CHECKPOINT PROBLEMS", "bad")
    verdicts = [c.verdict for c in ret.classes]
    if not verdicts or NO_POLICY in verdicts or FAILS in verdicts:
        ret_badge = badge(FAILS if FAILS in verdicts else NO_POLICY, "bad")
    elif all(v == MEETS for v in verdicts):
        ret_badge = badge(MEETS, "ok")
    else:
        ret_badge = badge("NOT ENFORCED", "warn")
    if ret.record_problems:
        ret_badge += " " + badge("RETENTION RECORD PROBLEMS", "bad")
    serious = sum(r.count for r in al.rules if r.severity in ("high", "critical", "integrity"))
    rows = [
        [
            "1. Coverage",
            Raw(
                badge("NO GAPS", "ok")
                if not cov.silent
                else badge(f"{len(cov.silent)} SILENT PERIOD(S)", "bad")
            ),
            f"{len(cov.agents)} agents, {len(cov.sources)} sources, {cov.total_events:,} events; "
            f"silence threshold {duration(cov.gap)}",
        ],
        ["2. Integrity", Raw(integ_badge), integ_text],
        [
            "3. Access review",
            Raw(badge("REVIEW", "info")),
            f"{acc.changes_total:,} privileged changes, "
            f"{acc.impersonations_total:,} impersonated actions, {acc.exports_total:,} exports "
            f"({acc.records_total:,} records), {acc.failed_total:,} failed logins",
        ],
        [
            "4. Alerts",
            Raw(badge(f"{serious} HIGH/CRITICAL/INTEGRITY", "bad" if serious else "ok")),
            f"{al.total:,} alerts from {len(al.rules)} rule/severity groups",
        ],
        [
            "5. Retention",
            Raw(ret_badge),
            f"minimum {d.min_retention_days:g} days; "
            + _enforcer_line(ret)
            + (f"; {len(ret.deletions)} signed deletion(s)" if ret.deletions is not None else ""),
        ],
    ]
    return '<h2 class="first">Summary</h2>' + table(["Area", "Result", "Details"], rows)


def _coverage(d: ReportData, chart: str) -> str:
    cov = d.coverage
    agents = [
        [
            a.agent,
            "-" if a.registered is None else ("yes" if a.registered else "NO"),
            ", ".join(a.sources) or "-",
            a.events,
            a.seals,
            a.heartbeats,
            when(a.last_seal),
            _chains(a),
        ]
        for a in cov.agents
    ]
    streams = [
        [
            s.label,
            "2" if s.stream else "1",
            when(s.first_seen),
            s.events,
            s.seals,
            s.heartbeats,
            when(s.last_seal),
            "-" if s.head_sequence is None else s.head_sequence,
            _follows(s),
        ]
        for a in cov.agents
        for s in a.streams
    ]
    sources = [[s.agent, s.source, s.events, when(s.first), when(s.last)] for s in cov.sources]
    silent = [
        [
            s.agent,
            s.source,
            when(s.start),
            "still silent at " + when(s.end) if s.ongoing else when(s.end),
            duration(s.duration),
            f"{s.agent_seals} seal(s): agent alive, this source delivered nothing"
            if s.agent_seals
            else "no seal at all: agent down or cut off",
        ]
        for s in cov.silent
    ]
    return (
        "<h2>1. Coverage</h2>"
        "<h3>Enrolled agents</h3>"
        '<p class="note">Agents found in seals, chain heads, events and (with --keys) the '
        "registered keys. Counts are for the period.</p>"
        + table(
            [
                "Agent",
                "Key registered",
                "Sources",
                "Events",
                "Seals",
                "Heartbeats",
                "Last seal",
                "Chains",
            ],
            agents,
            numeric=(3, 4, 5),
            cls="agents",
        )
        + "<h3>Chains (streams)</h3>"
        '<p class="note">One row per hash chain, named as the integrity section names it: '
        "an agent's stream format 1 history by the agent, each format 2 stream (one per "
        "agent incarnation) as agent:stream. An agent that lost its state starts a new "
        "stream; the collector records the chain before it and alerts the restart. "
        "Counts are for the period.</p>"
        + table(
            [
                "Chain",
                "Format",
                "First seen",
                "Events",
                "Seals",
                "Heartbeats",
                "Last seal",
                "Chain head seq.",
                "Follows",
            ],
            streams,
            numeric=(3, 4, 5, 7),
            cls="streams",
        )
        + "<h3>Sources</h3>"
        + table(
            ["Agent", "Source", "Events in period", "First seen", "Last seen"],
            sources,
            numeric=(2,),
            cls="sources",
        )
        + "<h3>Events per day</h3>"
        + chart
        + _day_data(cov.days, cov.per_day)
        + "<h3>Silent sources (possible logging failures, PCI DSS 10.7)</h3>"
        f'<p class="note">A source is silent when for more than {esc(duration(cov.gap))} '
        "it delivered no event and its agent sent no heartbeat.</p>"
        + table(
            ["Agent", "Source", "Silent from", "Until", "Duration", "Agent during the gap"],
            silent,
            cls="silent",
        )
    )


def _chains(agent: AgentRow) -> str:
    """How many chains the agent has and how many began with a restart without state."""
    if not agent.streams:
        return "-"
    restarts = agent.restarts
    return f"{len(agent.streams)}" + (f" ({restarts} RESTART(S))" if restarts else "")


def _follows(stream: StreamRow) -> str:
    """The chain a stream follows, and whether the collector called that a restart."""
    if not stream.previous:
        return "-"
    at = "" if stream.previous_sequence is None else f" at {stream.previous_sequence:,}"
    how = "RESTART without state after" if stream.restarted else "continues"
    return f"{how} {stream.previous}{at}"


def _integrity(d: ReportData) -> str:
    integ = d.integrity
    parts = ["<h2>2. Integrity</h2>"]
    if integ.report is None:
        parts.append(f"<p>{badge('NOT VERIFIED', 'bad')} {esc(integ.skipped)}</p>")
    else:
        rep = integ.report
        parts.append(
            f'<p class="note">crm-audit verify over the seals of the period: hash chains '
            f"recomputed, seal signatures checked against the registered agent keys, every "
            f"searchable field re-derived from the signed bytes. {rep.events:,} events checked.</p>"
        )
        rows = []
        for name, agent in sorted(rep.agents.items()):
            valid = [r for r in agent.ranges if r.kind == VALID]
            rows.append(
                [
                    name,
                    Raw(badge("VALID", "ok") if agent.valid else badge("FINDINGS", "bad")),
                    agent.events,
                    agent.seals,
                    ", ".join(f"{r.first}-{r.last}" for r in valid[:20]) or "-",
                    sum(1 for r in agent.ranges if r.kind != VALID) + len(agent.stream),
                ]
            )
        parts.append(
            table(
                [
                    "Agent",
                    "Verdict",
                    "Events",
                    "Seals (incl. heartbeats)",
                    "Valid ranges",
                    "Findings",
                ],
                rows,
                numeric=(2, 3, 5),
                cls="verify",
            )
        )
        # Per chain: what is found about the stream as a whole (MISSING_STREAM,
        # AGENT_RESTARTED, CHAIN_HEAD_ALTERED...), then its sequence ranges.
        findings = []
        for name, agent in sorted(rep.agents.items()):
            findings += [[name, kind, "-", detail] for kind, detail in agent.stream]
            findings += [
                [
                    name,
                    r.kind,
                    f"{r.first}-{r.last}" if r.first != r.last else str(r.first),
                    r.detail,
                ]
                for r in agent.ranges[:MAX_RANGES]
                if r.kind != VALID
            ]
        parts.append(
            "<h3>Findings</h3>"
            + table(["Agent", "Kind", "Sequences", "Detail"], findings, cls="findings")
        )
        if rep.problems:
            parts.append(
                "<h3>Problems</h3><ul>"
                + "".join(f"<li>{esc(p)}</li>" for p in rep.problems)
                + "</ul>"
            )
    parts.append("<h3>Signed checkpoints</h3>")
    view = integ.checkpoints
    if view is None:
        parts.append(
            f"<p>{badge('NOT CHECKED', 'warn')} no checkpoint directory given (--checkpoints).</p>"
        )
    else:
        state = (
            badge("OK", "ok")
            if not view.problems
            else badge(f"{len(view.problems)} PROBLEM(S)", "bad")
        )
        parts.append(f"<p>{state} {view.lines} checkpoint line(s) read and verified.</p>")
        if view.problems:
            parts.append("<ul>" + "".join(f"<li>{esc(p)}</li>" for p in view.problems) + "</ul>")
        parts.append(
            table(
                ["Chain", "Attested sequence", "Checkpoint time"],
                [
                    [r.agent, "-" if r.sequence is None else r.sequence, when(r.time)]
                    for r in integ.checkpoint_rows
                ],
                numeric=(1,),
                cls="checkpoints",
            )
        )
    return "".join(parts)


def _access(d: ReportData, exporters_chart: str, volume_chart: str, failed_chart: str) -> str:
    acc = d.access
    more = _not_shown(acc.changes_total, len(acc.changes), "audit.category:system_admin")
    return (
        "<h2>3. Access review</h2>"
        f"<h3>Privileged changes ({acc.changes_total:,})</h3>"
        '<p class="note">Role, permission, user and settings changes (audit.category '
        "system_admin) and database grants, revokes, role and audit-configuration changes.</p>"
        + table(["Action", "Count"], acc.changes_by_action, numeric=(1,), cls="by-action")
        + table(
            [
                "Time",
                "User",
                "Action",
                "Outcome",
                "Target",
                "Target user",
                "Granted role",
                "Change",
                "Organization",
                "Agent/source",
                "Event id",
            ],
            [
                [
                    when(c.time),
                    c.user,
                    c.action,
                    c.outcome,
                    c.target,
                    c.target_user,
                    c.granted,
                    c.changes,
                    c.organization,
                    c.where,
                    c.id + _flagged(d.integrity, c.id),
                ]
                for c in acc.changes
            ],
            cls="privileged",
        )
        + more
        + _impersonations(d)
        + f"<h3>Exports ({acc.exports_total:,} exports, {acc.records_total:,} records)</h3>"
        + exporters_chart
        + table(
            ["User", "Exports", "Records exported"], acc.exporters, numeric=(1, 2), cls="exporters"
        )
        + volume_chart
        + _day_data(acc.days, {"records exported": acc.export_days})
        + f"<h3>Failed logins ({acc.failed_total:,})</h3>"
        + failed_chart
        + _day_data(acc.days, {"failed logins": acc.failed_days})
        + '<div style="display:flex;gap:16px"><div style="flex:1">'
        + table(["User", "Failed logins"], acc.failed_users, numeric=(1,), cls="failed-users")
        + '</div><div style="flex:1">'
        + table(["Source IP", "Failed logins"], acc.failed_ips, numeric=(1,), cls="failed-ips")
        + "</div></div>"
    )


def _impersonations(d: ReportData) -> str:
    acc = d.access
    more = _not_shown(
        acc.impersonations_total, len(acc.impersonations), "_exists_:user.effective.name"
    )
    return (
        f"<h3>Impersonated actions ({acc.impersonations_total:,})</h3>"
        '<p class="note">Actions done as another user (user.effective: the user acted as; '
        "User: who really acted) and impersonation sessions started.</p>"
        + table(
            [
                "Time",
                "User",
                "Acting as",
                "Action",
                "Outcome",
                "Target",
                "Organization",
                "Event id",
            ],
            [
                [
                    when(i.time),
                    i.user,
                    i.acting_as,
                    i.action,
                    i.outcome,
                    i.target,
                    i.organization,
                    i.id + _flagged(d.integrity, i.id),
                ]
                for i in acc.impersonations
            ],
            cls="impersonation",
        )
        + more
    )


def _not_shown(total: int, shown: int, query: str) -> str:
    """The note under a table cut at --max-rows: how many rows are missing and the
    OpenSearch query that finds them all; nothing when the table is complete."""
    if total <= shown:
        return ""
    return (
        f'<p class="note">{total - shown:,} more not shown (--max-rows); '
        f"query {query} in OpenSearch for all.</p>"
    )


def _flagged(integ: Integrity, event_id: str) -> str:
    """A warning when the verifier did not find this event VALID."""
    if integ.report is None:
        return ""
    agent, _, seq = event_id.rpartition(":")
    found = integ.report.agents.get(agent)
    if found is None or not seq.isdigit():
        return ""
    for r in found.ranges:
        if r.first <= int(seq) <= r.last and r.kind != VALID:
            return f" ({r.kind}: see Integrity)"
    return ""


def _alerts(d: ReportData, chart: str) -> str:
    al = d.alerts
    sev_kind = {"critical": "bad", "high": "bad", "integrity": "bad", "medium": "warn"}
    rows = [
        [
            r.rule,
            Raw(badge(r.severity, sev_kind.get(r.severity, "info"))),
            r.count,
            ", ".join(f"{s}: {n}" for s, n in r.statuses),
            r.responses,
            when(r.first),
            when(r.last),
        ]
        for r in al.rules
    ]
    recent = [[when(r.time), r.rule, r.severity, r.status, r.key, r.reason] for r in al.recent]
    return (
        f"<h2>4. Alerts ({al.total:,})</h2>"
        + chart
        + _day_data(al.days, dict(al.per_day))
        + table(
            ["Rule", "Severity", "Alerts", "Status", "Responses recorded", "First", "Last"],
            rows,
            numeric=(2, 4),
            cls="alerts",
        )
        + "<h3>High, critical and integrity alerts</h3>"
        + table(["Raised", "Rule", "Severity", "Status", "Key", "Reason"], recent, cls="serious")
    )


def _retention(d: ReportData) -> str:
    ret = d.retention
    kinds = {MEETS: "ok", FAILS: "bad", NO_POLICY: "bad"}
    rows = []
    for c in ret.classes:
        oldest = c.indices[0] if c.indices else None
        newest = c.indices[-1] if c.indices else None
        days = (
            "never deletes"
            if not c.deletes and c.policy_source
            else ("-" if c.retention_days is None else f"{c.retention_days:g} days")
        )
        rows.append(
            [
                c.name,
                c.policy_source or "-",
                c.enforcement,
                days,
                len(c.indices),
                f"{oldest.name} (created {when(oldest.created)}, {oldest.docs:,} docs)"
                if oldest
                else "-",
                f"{newest.name} (created {when(newest.created)}, {newest.docs:,} docs)"
                if newest
                else "-",
                Raw(badge(c.verdict, kinds.get(c.verdict, "warn"))),
            ]
        )
    parts = [
        "<h2>5. Retention</h2>",
        f'<p class="note">Regulatory minimum: {d.min_retention_days:g} days '
        f"({d.min_retention_days / 365:.1f} years). ",
        "ISM is installed: policies are enforced by the cluster."
        if ret.ism
        else (
            "ISM not installed: the collector's retention job applies the policies shown "
            "(the files the collector is configured with) by the event time of each "
            f"index's newest document; it last ran {esc(when(ret.job_last_run))}."
            if ret.job_last_run
            else "<strong>ISM not installed and the collector's retention job never ran: "
            "retention not enforced</strong> — indices are kept until an operator deletes "
            "them; the policy shown is what the collector is configured with."
        ),
        "</p>",
        table(
            [
                "Class",
                "Policy",
                "Enforcement",
                "Deletes after",
                "Indices",
                "Oldest index",
                "Newest index",
                "Minimum",
            ],
            rows,
            numeric=(4,),
            cls="retention",
        ),
        '<p class="note">Seals, chain heads and alerts live in single indices without a '
        "retention policy: they outlive the events and prove what expired.</p>",
        *_deletions(ret),
        f"<h3>Legal holds ({esc(ret.holds_index)})</h3>",
    ]
    if ret.holds is None:
        parts.append('<p class="note">No legal-hold index exists: no holds recorded.</p>')
    else:
        holds = ret.holds
        if any("record" in h for h in holds):
            # collector.hold: one "hold" document per hold (its state) plus action records.
            holds = [h for h in holds if h.get("record") == "hold"]
        flat = [_flat(h) for h in holds]
        present = {k for f in flat for k in f}
        keys = [k for k in _HOLD_FIELDS if k in present] or sorted(present)[:8]
        parts.append(table(keys, [[f.get(k, "") for k in keys] for f in flat], cls="holds"))
    return "".join(parts)


def _enforcer_line(ret: Retention) -> str:
    if ret.ism:
        return "ISM installed"
    if ret.job_last_run:
        return "enforced by the collector's retention job"
    return "ISM not installed: retention not enforced"


def _deletions(ret: Retention) -> list[str]:
    """The deletions signed retention records attest (verified with the collector key)."""
    parts = ["<h3>Deletions (signed retention records)</h3>"]
    if ret.deletions is None:
        parts.append(
            '<p class="note">Not checked: no collector key given (--checkpoint-key or '
            "collector.pub in --keys): deletions cannot be attested.</p>"
        )
        return parts
    for problem in ret.record_problems:
        parts.append(f'<p class="note">{badge("PROBLEM", "bad")} {esc(problem)}</p>')
    rows = [
        [
            d.retention_class,
            d.index,
            when(d.recorded),
            f"{d.enforcer} ({d.collector})",
            f"{when(d.oldest)} .. {when(d.newest)}",
            "-" if d.documents is None else d.documents,
            d.agents,
            d.rule,
        ]
        for d in ret.deletions
    ]
    parts.append(
        table(
            ["Class", "Index", "Recorded", "Deleted by", "Events", "Docs", "Agents", "Rule"],
            rows,
            numeric=(5, 6),
            cls="deletions",
        )
    )
    parts.append(
        '<p class="note">Each record was signed with the collector key and written before '
        "the index was deleted (ISM's deletions: after, from ISM's history). An index gone "
        "without a record was deleted by someone else: verify reports its events "
        "MISSING.</p>"
    )
    return parts


_HOLD_FIELDS = (
    "hold.id",
    "hold.class",
    "hold.from",
    "hold.to",
    "hold.status",
    "hold.reason",
    "hold.placed_by",
    "hold.placed_at",
    "hold.released_at",
    "hold.indices",
)


def _flat(doc: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = (
                ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            )
    return out


def _method(d: ReportData) -> str:
    return (
        "<h2>Method and sign-off</h2>"
        '<p class="note">Generated by <code>crm-audit report</code> from OpenSearch '
        f"(index prefix <code>{esc(d.prefix)}</code>) and the verifier. Times are UTC; days are "
        "UTC calendar days. Table numbers are OpenSearch counts over the period; the "
        "privileged-change and alert lists are capped (--max-rows) and say so.</p>"
        + table(
            ["Reviewed by", "Role", "Date", "Signature"], [[Raw("&nbsp;")] * 4] * 2, cls="signoff"
        )
    )


def render(d: ReportData) -> str:
    """The document with an empty signature block (`signing.sign` fills it)."""
    days = d.period.days
    cov_chart = charts.stacked_days(
        "c-events", "Events per day by source", days, d.coverage.per_day, ylabel="events"
    )
    exp_chart = charts.hbars(
        "c-exporters",
        "Top exporters (records exported)",
        [u for u, _, _ in d.access.exporters],
        [r for _, _, r in d.access.exporters],
        xlabel="records",
    )
    vol_chart = charts.day_line(
        "c-export-volume",
        "Records exported per day",
        days,
        d.access.export_days,
        ylabel="records",
        color=charts.PALETTE[0],
    )
    fail_chart = charts.day_line(
        "c-failed-logins",
        "Failed logins per day",
        days,
        d.access.failed_days,
        ylabel="failed logins",
    )
    alert_chart = charts.stacked_days(
        "c-alerts",
        "Alerts per day by severity",
        days,
        d.alerts.per_day,
        ylabel="alerts",
        colors=charts.SEVERITY_COLORS,
    )
    period = f"{when(d.period.start)} to {when(d.period.end)} (end exclusive)"
    title = (
        f"CRM audit trail compliance review {d.period.start:%Y-%m-%d} to {d.period.end:%Y-%m-%d}"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>CRM audit trail: compliance review</h1>"
        f'<p class="meta">Period {esc(period)} · index prefix <code>{esc(d.prefix)}</code> · '
        f"cluster {esc(d.cluster)} · generated {esc(when(d.generated))}</p>"
        + _summary(d)
        + _coverage(d, cov_chart)
        + _integrity(d)
        + _access(d, exp_chart, vol_chart, fail_chart)
        + _alerts(d, alert_chart)
        + _retention(d)
        + _method(d)
        + summary_element(d.integrity.summary)
        + SIG_BEGIN
        + SIG_END
        + "</body></html>\n"
    )
