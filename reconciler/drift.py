"""Drift: how the live org differs from git, classified (pure: no I/O, never writes).

A drift check is a plan with prune on, read differently: what apply would update was changed
outside git; what it would create is missing live; what it would delete (live, labelled as
managed by this project, absent from git) is an unmanaged extra. Server defaults and
ignoreDifferences are already absorbed by the diff, so they never count as drift.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from reconciler.models import LiveResource, ResourceKey
from reconciler.plan import Action, Plan
from reconciler.render import (
    COMMENT_LIMIT,
    HEADER_ROOM,
    PART_SEPARATOR,
    fit_parts,
    line_pieces,
    number_parts,
    pack,
    part_budget,
)

# Where a shortened report says the complete one is (the drift workflow keeps it there).
FULL_REPORT_AT = "the workflow run's job summary and its `drift` artifact"


class DriftClass(StrEnum):
    CHANGED = "changed outside git"
    MISSING = "missing live"
    EXTRA = "unmanaged extra"


@dataclass(frozen=True)
class Drift:
    key: ResourceKey
    drift: DriftClass
    fields: tuple[str, ...] = ()
    modified_by: str | None = None
    date_modified: str | None = None


@dataclass(frozen=True)
class DriftReport:
    environment: str
    items: tuple[Drift, ...]

    def __bool__(self) -> bool:
        return bool(self.items)


_CLASS_OF = {
    Action.UPDATE: DriftClass.CHANGED,
    Action.CREATE: DriftClass.MISSING,
    Action.DELETE: DriftClass.EXTRA,
}


def classify(plan: Plan, live: Sequence[LiveResource]) -> DriftReport:
    """Drift items from a prune plan; who/when comes from the live resource when the service says."""
    by_key: Mapping[ResourceKey, LiveResource] = {r.key: r for r in live}
    items = []
    for change in plan.changes:
        drift_class = _CLASS_OF.get(change.action)
        if drift_class is None:
            continue
        fields = tuple(f.path for f in change.diff.fields) if change.diff else ()
        found = by_key.get(change.key)
        items.append(
            Drift(
                change.key,
                drift_class,
                fields,
                found.modified_by if found else None,
                found.date_modified if found else None,
            )
        )
    return DriftReport(plan.environment, tuple(items))


def _who(item: Drift) -> str:
    parts = [
        f"by {item.modified_by}" if item.modified_by else "",
        f"at {item.date_modified}" if item.date_modified else "",
    ]
    return " ".join(p for p in parts if p)


def render_text(report: DriftReport) -> str:
    if not report:
        where = f" in {report.environment}" if report.environment else ""
        return f"No drift: the live org matches git{where}.\n"
    lines = [f"Drift found: {len(report.items)} resource(s)."]
    for item in report.items:
        who = _who(item)
        lines.append(f"  {item.key}: {item.drift.value}" + (f" ({who})" if who else ""))
        lines.extend(f"      {path}" for path in item.fields)
    return "\n".join(lines) + "\n"


def render_json(report: DriftReport) -> str:
    return (
        json.dumps(
            {
                "format_version": "1.0",
                "environment": report.environment,
                "drift": [
                    {
                        "kind": i.key.kind.value,
                        "name": i.key.name,
                        "class": i.drift.value,
                        "fields": list(i.fields),
                        "modified_by": i.modified_by,
                        "date_modified": i.date_modified,
                    }
                    for i in report.items
                ],
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )


def _cell(text: str) -> str:
    """User text in a table cell: no HTML, no code spans, no table breaks."""
    return html.escape(text, quote=False).replace("`", "&#96;").replace("|", "&#124;").replace("\n", " ")


_DRIFT_TABLE = "| Resource | Drift | Fields | Last modified |\n|---|---|---|---|"


def render_markdown_parts(
    report: DriftReport,
    limit: int = COMMENT_LIMIT,
    *,
    reserve: int = HEADER_ROOM,
    max_parts: int | None = None,
    full_report_at: str = FULL_REPORT_AT,
) -> list[str]:
    """The report as issue-body/comment parts, split like a plan's (``render.render_markdown``):
    each part plus ``reserve`` characters of the caller's header is at most ``limit``; parts after
    the first start with "(continued, part k of n)". With ``max_parts``, a report that needs more
    parts keeps as many rows as fit and points to ``full_report_at`` for the rest."""
    budget = part_budget(limit, reserve)
    env = f" in <code>{_cell(report.environment)}</code>" if report.environment else ""
    if not report:
        return [f"### ✅ No drift{env}\n\nThe live org matches git.\n"]
    counts = ", ".join(
        f"{sum(1 for i in report.items if i.drift is c):,} {c.value}"
        for c in DriftClass
        if any(i.drift is c for i in report.items)
    )
    head = f"### ⚠️ Drift{env}: {len(report.items):,} resource(s)\n\n{counts}."
    rows = []
    for i in report.items:
        fields = "<br>".join(f"<code>{_cell(p)}</code>" for p in i.fields) or "—"
        rows.append(
            f"| <code>{_cell(str(i.key))}</code> | {i.drift.value} | {fields} | {_cell(_who(i)) or '—'} |"
        )

    def build(kept: int) -> list[str]:
        shown = rows[:kept]
        if kept < len(rows):
            shown.append(f"| … and {len(rows) - kept:,} more: see {full_report_at} | | | |")
        return [head, *line_pieces(_DRIFT_TABLE, shown, budget)]

    if max_parts is None:
        return number_parts(pack(build(len(rows)), budget))
    if max_parts < 1:
        raise ValueError("max_parts must be at least 1")
    return number_parts(fit_parts(build, len(rows), max_parts, budget))


def render_markdown(
    report: DriftReport,
    limit: int = COMMENT_LIMIT,
    *,
    reserve: int = HEADER_ROOM,
    max_parts: int | None = None,
    full_report_at: str = FULL_REPORT_AT,
) -> str:
    """``render_markdown_parts`` as one text, parts separated by ``render.PART_SEPARATOR`` (the
    marker the workflows split on, as for a plan)."""
    parts = render_markdown_parts(
        report, limit, reserve=reserve, max_parts=max_parts, full_report_at=full_report_at
    )
    return PART_SEPARATOR.join(parts)
