"""Showing a plan: Terraform-like text, versioned JSON, and Markdown chunks for PR comments.

This module is pure and should NOT produce any side effects: no I/O, no clock, no network, no
mutable module state. Renderers take a ``Plan`` and return strings.

Every renderer takes ``redact(kind, spec) -> spec`` (e.g. ``Redactor.resource``), applied to the
before/after specs of every change before anything is shown; field values and template diffs
are taken from the redacted sides too, so a sensitive value never leaks through the diff.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from reconciler import pointers
from reconciler.diff import (
    BreakingChange,
    FieldChange,
    ResourceDiff,
    canonical,
    line_diff,
    templates,
)
from reconciler.models import Kind, ResourceKey
from reconciler.plan import Action, Change, Plan
from reconciler.plan_json import plan_to_json

Redact = Callable[[Kind, dict[str, Any]], dict[str, Any]]

# GitHub's limit on one comment (and on an issue body), in characters.
COMMENT_LIMIT = 65_536
# Room a caller's header gets by default (a marker, a heading, a link): parts stay under 60,000.
HEADER_ROOM = COMMENT_LIMIT - 60_000
# What separates parts when they are printed as one text (`plan --format markdown`, `drift`).
PART_SEPARATOR = "\n\n<!-- reconciler: next comment -->\n\n"
# Where a summarised plan says the complete one is (the workflows keep it there).
FULL_PLAN_AT = "the workflow run's job summary and its `plan` artifact"

_TEMPLATE_PATH = re.compile(r"^/spec/(?:template|variants/\d+/template)$")

# --- Redaction ----------------------------------------------------------------------------------


def _redacted_field(change: FieldChange, before: Any, after: Any) -> FieldChange:
    old = None if change.kind == "added" else pointers.get(before, change.path)
    new = None if change.kind == "removed" else pointers.get(after, change.path)
    old = change.before if old is pointers.MISSING else old
    new = change.after if new is pointers.MISSING else new
    return FieldChange(change.path, old, new, change.kind)


def _redacted_breaking(
    item: BreakingChange, before: Any, after: Any, plain_before: Any, plain_after: Any
) -> BreakingChange:
    touched = pointers.get(before, item.path) != pointers.get(plain_before, item.path) or pointers.get(
        after, item.path
    ) != pointers.get(plain_after, item.path)
    return BreakingChange(item.path, "breaking change to a sensitive field") if touched else item


def redact_change(change: Change, redact: Redact | None) -> Change:
    """``change`` with both specs passed through ``redact`` and its diff's values taken from them."""
    if redact is None:
        return change
    kind = change.key.kind

    def side(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if doc is None else {**doc, "spec": redact(kind, dict(doc.get("spec") or {}))}

    before, after = side(change.before), side(change.after)
    diff = change.diff
    if diff is not None and (before != change.before or after != change.after):
        # Diff paths index the canonical documents (sorted set-like lists): resolve against those.
        red_before, red_after = canonical(before or {}, kind), canonical(after or {}, kind)
        old_texts = templates((red_before or {}).get("spec") or {})
        new_texts = templates((red_after or {}).get("spec") or {})
        diff = ResourceDiff(
            tuple(_redacted_field(f, red_before, red_after) for f in diff.fields),
            {
                name: line_diff(old_texts.get(name, ""), new_texts.get(name, ""), name)
                for name in diff.template_diffs
            },
            tuple(
                _redacted_breaking(
                    b,
                    red_before,
                    red_after,
                    canonical(change.before or {}, kind),
                    canonical(change.after or {}, kind),
                )
                for b in diff.breaking
            ),
        )
    return replace(change, before=before, after=after, diff=diff)


def redact_plan(plan: Plan, redact: Redact | None) -> Plan:
    """``plan`` with every change redacted (see ``redact_change``); use it before saving a plan."""
    if redact is None:
        return plan
    return replace(
        plan,
        changes=tuple(redact_change(c, redact) for c in plan.changes),
    )


# --- What every format shows --------------------------------------------------------------------


def summary_line(plan: Plan) -> str:
    return f"Plan: {plan.creates} to create, {plan.updates} to update, {plan.deletes} to delete."


NO_CHANGES = "No changes. Live org matches the manifests."


def prune_hint(plan: Plan) -> list[str]:
    """Lines telling the reader about managed resources gone from git that were left alone."""
    if not plan.prunable:
        return []
    shown = ", ".join(str(k) for k in plan.prunable[:5])
    more = f" and {len(plan.prunable) - 5} more" if len(plan.prunable) > 5 else ""
    return [
        "",
        f"Note: {len(plan.prunable)} live resource(s) this project manages are no longer in git "
        f"({shown}{more}); they are left alone. Plan with --prune (or set prune: true for the "
        "environment in reconciler.yaml) to delete them.",
    ]


_VERB = {
    Action.CREATE: "will be created",
    Action.UPDATE: "will be updated in place",
    Action.DELETE: "will be deleted",
    Action.ROLLBACK: "will be rolled back",
    Action.NO_OP: "is unchanged",
}
_FIELD_SYMBOL = {"added": "+", "removed": "-", "changed": "~"}


def _value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _field_text(change: FieldChange) -> str:
    match change.kind:
        case "added":
            shown = _value(change.after)
        case "removed":
            shown = _value(change.before)
        case _:
            shown = f"{_value(change.before)} -> {_value(change.after)}"
    return f"{_FIELD_SYMBOL[change.kind]} {change.path}: {shown}"


@dataclass(frozen=True)
class _Lines:
    """What an update shows: field lines with their breaking flags, template diffs, and the
    breaking changes no field line carries."""

    fields: tuple[tuple[FieldChange, str | None], ...]
    template_diffs: tuple[tuple[str, str], ...]
    unplaced: tuple[BreakingChange, ...]


def _update_lines(diff: ResourceDiff) -> _Lines:
    pending = list(diff.breaking)
    fields: list[tuple[FieldChange, str | None]] = []
    for f in diff.fields:
        if f.kind == "changed" and _TEMPLATE_PATH.match(f.path) and diff.template_diffs:
            continue  # shown as a line diff instead of two long strings
        flag = next((b for b in pending if f.path == b.path or f.path.startswith(b.path + "/")), None)
        if flag is not None:
            pending.remove(flag)
        fields.append((f, flag.reason if flag else None))
    return _Lines(tuple(fields), tuple(diff.template_diffs.items()), tuple(pending))


def _spec_fields(doc: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """Top-level fields of a document for create: /spec/<field> and /labels."""
    if not doc:
        return []
    out: list[tuple[str, Any]] = [(f"/spec/{k}", v) for k, v in sorted((doc.get("spec") or {}).items())]
    if doc.get("labels"):
        out.append(("/labels", doc["labels"]))
    return out


# --- Text ---------------------------------------------------------------------------------------

_ANSI = {"+": "\033[32m", "-": "\033[31m", "~": "\033[33m", "<": "\033[36m", "@": "\033[36m"}
_RESET, _BOLD, _ALARM = "\033[0m", "\033[1m", "\033[1;31m"


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{_RESET}" if color and code else text


def _diff_line(line: str, color: bool) -> str:
    if line.startswith(("---", "+++")):
        return _paint(line, _BOLD, color)
    return _paint(line, _ANSI.get(line[:1], ""), color)


def _text_block(change: Change, color: bool) -> list[str]:
    symbol = change.action.symbol
    lines = [
        f"  {_paint('# ' + str(change.key), _BOLD, color)} {_VERB[change.action]} ({change.reason})",
        f"  {_paint(symbol, _ANSI.get(symbol, ''), color)} {change.key}",
    ]
    indent = " " * 6
    if change.action is Action.CREATE:
        for path, value in _spec_fields(change.after):
            if isinstance(value, str) and "\n" in value:
                lines.append(f"{indent}{_paint('+', _ANSI['+'], color)} {path}: <<EOT")
                lines.extend(f"{indent}    {line}" for line in value.splitlines())
                lines.append(f"{indent}    EOT")
            else:
                lines.append(f"{indent}{_paint('+', _ANSI['+'], color)} {path}: {_value(value)}")
    elif change.diff is not None:
        shown = _update_lines(change.diff)
        for f, breaking in shown.fields:
            text = _field_text(f)
            line = f"{indent}{_paint(text[0], _ANSI[text[0]], color)}{text[1:]}"
            if breaking:
                line += "  " + _paint(f"(BREAKING: {breaking})", _ALARM, color)
            lines.append(line)
        for name, text in shown.template_diffs:
            lines.append(f"{indent}{_paint('~', _ANSI['~'], color)} {name}:")
            lines.extend(f"{indent}    {_diff_line(line, color)}" for line in text.splitlines())
        for b in shown.unplaced:
            lines.append(f"{indent}" + _paint(f"(BREAKING: {b.reason} at {b.path})", _ALARM, color))
    return lines


def render_text(plan: Plan, color: bool = False, redact: Redact | None = None) -> str:
    """The plan as a person reads it in a terminal; ANSI colors only when ``color``."""
    lines: list[str] = []
    if plan.live_checks:
        lines.append(_paint("Live checks failed:", _ALARM, color))
        lines.extend(f"  - {problem}" for problem in plan.live_checks)
        lines.append("")
    changed = [redact_change(c, redact) for c in plan.changes if c.action is not Action.NO_OP]
    if not changed:
        lines.append(NO_CHANGES)
        lines.extend(prune_hint(plan))
        return "\n".join(lines) + "\n"
    where = f" in {plan.environment}" if plan.environment else ""
    lines += [f"Reconciler will perform the following actions{where}:", ""]
    for change in changed:
        lines.extend(_text_block(change, color))
        lines.append("")
    lines.append(_paint(summary_line(plan), _BOLD, color))
    lines.extend(prune_hint(plan))
    return "\n".join(lines) + "\n"


# --- JSON ---------------------------------------------------------------------------------------


def render_json(plan: Plan, redact: Redact | None = None) -> str:
    """``plan_to_json`` of the (redacted) plan, keys sorted: what ``plan -o`` saves."""
    return (
        json.dumps(plan_to_json(redact_plan(plan, redact)), indent=2, sort_keys=True, ensure_ascii=False)
        + "\n"
    )


# --- Markdown -----------------------------------------------------------------------------------

_CONTINUED = "(continued, part {k} of {n})"
# Room kept in every chunk for the continuation line, so a chunk never needs repacking.
_CONTINUED_ROOM = 64
_TRUNCATED = (
    "_Truncated: {cut:,} of {total:,} characters of this section were cut to fit a comment; "
    "the full diff is in the JSON plan._"
)


def _fence(text: str, lang: str) -> str:
    """A code block its content can never close early: the fence is longer than any backtick
    run inside (CommonMark closes a fence only with a run at least as long)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _inline(text: str) -> str:
    """User text outside code blocks: no HTML, no code spans, no table breaks."""
    return html.escape(text, quote=False).replace("`", "&#96;").replace("|", "&#124;").replace("\n", " ")


@dataclass(frozen=True)
class _Block:
    """One piece of a resource section: prose, or a code block (``lang`` set) cut by lines."""

    text: str
    lang: str | None = None

    def render(self) -> str:
        return _fence(self.text, self.lang) if self.lang is not None else self.text


def _section_blocks(change: Change, preview: str | None, traffic: str | None = None) -> list[_Block]:
    blocks = [_Block(f"_{_inline(change.reason)}_")]
    if traffic is not None:
        blocks.append(_Block(f"**Live traffic now:** {_inline(traffic)}"))
    diff = change.diff
    if diff is not None and diff.breaking:
        blocks.append(
            _Block(
                "**Breaking changes**\n\n"
                + "\n".join(
                    f"- ⚠️ {_inline(b.reason)} (<code>{_inline(b.path)}</code>)" for b in diff.breaking
                )
            )
        )
    if change.action is Action.CREATE and change.after is not None:
        blocks.append(_Block(json.dumps(change.after, indent=2, sort_keys=True, ensure_ascii=False), "json"))
    elif diff is not None:
        shown = _update_lines(diff)
        if shown.fields:
            blocks.append(
                _Block(
                    "\n".join(_field_text(f) + (f"  (BREAKING: {b})" if b else "") for f, b in shown.fields),
                    "diff",
                )
            )
        for name, text in shown.template_diffs:
            blocks.append(_Block(f"**<code>{_inline(name)}</code>**"))
            blocks.append(_Block(text, "diff"))
    if preview is not None:
        blocks.append(_Block("**Rendered prompt**"))
        blocks.append(_Block(preview, "diff"))
    return blocks


def _summary(change: Change) -> str:
    breaking = " ⚠️ BREAKING" if change.diff is not None and change.diff.breaking else ""
    return (
        f"<details><summary><code>{html.escape(change.action.symbol.strip() or '=')}</code> "
        f"{change.action.value} <b>{_inline(str(change.key))}</b>{breaking}</summary>"
    )


def _section(change: Change, preview: str | None, budget: int, traffic: str | None = None) -> str:
    """One resource's collapsible section, at most ``budget`` characters: whole when it fits,
    else cut (whole blocks first, then a code block by lines) with a note saying how much."""
    head, tail = _summary(change) + "\n\n", "\n\n</details>"
    rendered = [b.render() for b in _section_blocks(change, preview, traffic)]
    body = "\n\n".join(rendered)
    if len(head) + len(body) + len(tail) <= budget:
        return head + body + tail
    total = len(body)
    room = budget - len(head) - len(tail) - len(_TRUNCATED.format(cut=total, total=total)) - 2
    kept: list[str] = []
    used = 0
    for block, text in zip(_section_blocks(change, preview), rendered, strict=True):
        sep = 2 if kept else 0
        if used + sep + len(text) <= room:
            kept.append(text)
            used += sep + len(text)
            continue
        if block.lang is not None:
            lines: list[str] = []
            for line in block.text.splitlines():
                candidate = _fence("\n".join([*lines, line]), block.lang)
                if used + sep + len(candidate) > room:
                    break
                lines.append(line)
            if lines:
                part = _fence("\n".join(lines), block.lang)
                kept.append(part)
                used += sep + len(part)
        break
    cut_body = "\n\n".join(kept)
    note = _TRUNCATED.format(cut=total - len(cut_body), total=total)
    return head + (cut_body + "\n\n" if cut_body else "") + note + tail


_TABLE_HEADER = "| Action | Kind | Name | Breaking |\n|---|---|---|---|"


def line_pieces(header: str, rows: Sequence[str], budget: int) -> list[str]:
    """``rows`` split into pieces that each fit ``budget``, each starting with ``header`` (the
    table's header, so every piece renders as a table); a row too long on its own is cut."""
    pieces: list[str] = []
    current = header
    for row in rows:
        if len(row) > budget // 2:
            row = row[: budget // 2] + " …"
        if current != header and len(current) + 1 + len(row) > budget:
            pieces.append(current)
            current = header
        current = f"{current}\n{row}" if current else row
    pieces.append(current)
    return pieces


def pack(sections: Sequence[str], budget: int) -> list[str]:
    """``sections`` (each at most ``budget`` long) packed in order into as few chunks of at most
    ``budget`` characters as greedy packing gives, joined by blank lines; never split."""
    chunks: list[str] = []
    current = ""
    for section in sections:
        if current and len(current) + 2 + len(section) > budget:
            chunks.append(current)
            current = ""
        current = f"{current}\n\n{section}" if current else section
    chunks.append(current)
    return chunks


def part_budget(limit: int, reserve: int) -> int:
    """Characters a chunk's own content may take so that the chunk, its continuation line, its
    final newline and the caller's ``reserve`` together stay within ``limit``."""
    budget = limit - reserve - 1 - _CONTINUED_ROOM
    if budget < 1024:
        raise ValueError(
            f"a Markdown chunk limit of {limit} characters with {reserve} reserved for the caller's "
            "header is too small to be useful"
        )
    return budget


def number_parts(chunks: Sequence[str]) -> list[str]:
    """The final parts: every chunk after the first starts with "(continued, part k of n)"."""
    if len(chunks) == 1:
        return [chunks[0] + "\n"]
    n = len(chunks)
    return [
        chunk + "\n" if k == 1 else f"{_CONTINUED.format(k=k, n=n)}\n\n{chunk}\n"
        for k, chunk in enumerate(chunks, start=1)
    ]


def fit_parts(build: Callable[[int], list[str]], most: int, max_parts: int, budget: int) -> list[str]:
    """The chunks of ``build(n)`` for the largest ``n`` in 0..``most`` whose chunks number at most
    ``max_parts`` (``build(0)`` when none does). ``build`` must grow with ``n``: its sections for
    ``n + 1`` are those for ``n`` with one short entry replaced by a longer one, or one added."""
    low, high = 0, most
    best = pack(build(0), budget)
    while low < high:
        mid = (low + high + 1) // 2
        chunks = pack(build(mid), budget)
        if len(chunks) <= max_parts:
            low, best = mid, chunks
        else:
            high = mid - 1
    return best


def _is_breaking(change: Change) -> bool:
    return change.diff is not None and bool(change.diff.breaking)


def _symbol(change: Change) -> str:
    return html.escape(change.action.symbol.strip() or "=")


def _head(plan: Plan, changed: Sequence[Change], live_check_lines: int | None) -> list[str]:
    env = f" for <code>{_inline(plan.environment)}</code>" if plan.environment else ""
    head = [f"### Reconciler plan{env}", ""]
    if plan.live_checks:
        shown = plan.live_checks if live_check_lines is None else plan.live_checks[:live_check_lines]
        head += ["**Live checks failed:**", "", *(f"- {_inline(p)}" for p in shown)]
        if len(shown) < len(plan.live_checks):
            head.append(f"- … and {len(plan.live_checks) - len(shown):,} more")
        head.append("")
    if not changed:
        head.append(NO_CHANGES)
    else:
        breaking = sum(1 for c in changed if _is_breaking(c))
        head.append(
            f"**{summary_line(plan)}**" + (f" ⚠️ {breaking} with breaking changes." if breaking else "")
        )
    return head


def _counts_table(changed: Sequence[Change]) -> str:
    """Changes counted per kind and action (breaking ones too): the shape of a large plan."""
    actions = [a for a in Action if a is not Action.NO_OP and any(c.action is a for c in changed)]
    lines = [
        "| Kind | "
        + " | ".join(f"<code>{html.escape(a.symbol.strip())}</code> {a.value}" for a in actions)
        + " | ⚠️ breaking |",
        "|---|" + "---:|" * (len(actions) + 1),
    ]
    for kind in Kind:
        mine = [c for c in changed if c.key.kind is kind]
        if mine:
            cells = [f"{sum(1 for c in mine if c.action is a):,}" for a in actions]
            lines.append(f"| {kind.value} | " + " | ".join(cells) + f" | {sum(map(_is_breaking, mine)):,} |")
    return "\n".join(lines)


def render_markdown(
    plan: Plan,
    limit: int = COMMENT_LIMIT,
    previews: Mapping[ResourceKey, str] | None = None,
    redact: Redact | None = None,
    *,
    reserve: int = HEADER_ROOM,
    max_parts: int | None = None,
    full_plan_at: str = FULL_PLAN_AT,
    traffic: Mapping[ResourceKey, str] | None = None,
) -> list[str]:
    """The plan as PR-comment chunks: each chunk plus ``reserve`` characters (the caller's own
    header: a marker, a heading, a link) is at most ``limit`` characters.

    The default ``reserve`` keeps chunks under 60,000 characters, so a caller that adds a short
    header never crosses GitHub's 65,536. The first chunk starts with the summary (counts,
    live-check problems, a table of every change); then one ``<details>`` section per changed
    resource. A section is never split; one larger than a chunk is cut with a note saying how
    much. Code blocks and ``<details>`` are balanced in every chunk. Each chunk after the first
    starts with "(continued, part k of n)". ``previews`` maps a prompt's key to a diff of its
    rendered prompt, and ``traffic`` to a line on how it does in live traffic now (both made by
    the caller), so a reviewer sees what a prompt change touches.

    With ``max_parts``, a plan that would need more chunks is summarised instead: counts per kind
    and action, as many changes in full as fit (breaking changes first, then deletes, then the
    rest, each in plan order), every other change as one line, and a pointer to
    ``full_plan_at`` (where the caller keeps the whole plan). If even the one-line list does not
    fit, its tail is replaced by "… and N more".
    """
    budget = part_budget(limit, reserve)
    changed = [redact_change(c, redact) for c in plan.changes if c.action is not Action.NO_OP]
    rows = [
        f"| <code>{_symbol(c)}</code> {c.action.value} "
        f"| {c.key.kind.value} | <code>{_inline(c.key.name)}</code> "
        f"| {'⚠️ yes' if _is_breaking(c) else ''} |"
        for c in changed
    ]

    def section(change: Change) -> str:
        return _section(change, (previews or {}).get(change.key), budget, (traffic or {}).get(change.key))

    # The head (with however many live-check problems) and the table are split by lines like
    # everything else, so even a plan of thousands of resources never overflows a chunk.
    fixed = line_pieces("", _head(plan, changed, None), budget) + (
        line_pieces(_TABLE_HEADER, rows, budget) if rows else []
    )
    if max_parts is None:
        return number_parts(pack(fixed + [section(c) for c in changed], budget))
    if max_parts < 1:
        raise ValueError("max_parts must be at least 1")
    # Render sections only while they could still fit: a plan of 10,000 resources is not
    # rendered in full just to find out that it does not fit.
    room = max_parts * budget - sum(len(p) + 2 for p in fixed)
    sections: list[str] = []
    for change in changed:
        if room < 0:
            break
        sections.append(section(change))
        room -= len(sections[-1]) + 2
    if room >= 0:
        chunks = pack(fixed + sections, budget)
        if len(chunks) <= max_parts:
            return number_parts(chunks)
    return number_parts(_summarised(plan, changed, section, budget, max_parts, full_plan_at))


def _summarised(
    plan: Plan,
    changed: Sequence[Change],
    section: Callable[[Change], str],
    budget: int,
    max_parts: int,
    full_plan_at: str,
) -> list[str]:
    """Chunks (at most ``max_parts`` of them) of a plan too large to show in full."""
    ranked = sorted(
        range(len(changed)),
        key=lambda i: (not _is_breaking(changed[i]), changed[i].action is not Action.DELETE),
    )
    head = [*_head(plan, changed, 20), "", _counts_table(changed), ""]
    # One line per change in a diff block: compact (no HTML), colored by GitHub, and safe for
    # any name (the fence is longer than any backtick run in the names).
    lines = [
        f"{c.action.symbol.strip() or '='} {c.key}" + ("  (BREAKING)" if _is_breaking(c) else "")
        for c in changed
    ]
    fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", "\n".join(lines))), default=0))
    # Sections are rendered at most once, in rank order, and only as far as the search looks.
    rendered: list[str] = []

    def sections_for(n: int) -> list[str]:
        while len(rendered) < n:
            rendered.append(section(changed[ranked[len(rendered)]]))
        return rendered[:n]

    def build(full: int, listed: int | None = None) -> list[str]:
        shown_full = set(ranked[:full])
        rest = [lines[i] for i in range(len(changed)) if i not in shown_full]
        kept = rest if listed is None else rest[:listed]
        if len(kept) < len(rest):
            kept = [*kept, f"… and {len(rest) - len(kept):,} more: see {full_plan_at.replace('`', '')}"]
        what = (
            f"The first {full:,} (breaking changes and deletions first) are shown in full"
            + (", the others one per line below." if rest else ".")
            if full
            else "Each change is listed on one line below."
        )
        note = (
            f"_{len(changed):,} changes are too many to show in full here. {what} "
            f"The complete plan is in {full_plan_at}._"
        )
        pieces = line_pieces("", [*head, note], budget)
        pieces += sections_for(full)
        if kept:
            room = budget - len(fence) - 1
            pieces += [f"{p}\n{fence}" for p in line_pieces(f"**Other changes**\n\n{fence}diff", kept, room)]
        return pieces

    # Cheap bound first: more full sections than chunks could ever hold are never tried.
    most, room = 0, max_parts * budget
    while most < len(changed) and room > 0:
        sections_for(most + 1)
        room -= len(rendered[most]) + 2
        if room > 0:
            most += 1
    chunks = fit_parts(build, most, max_parts, budget)
    if len(chunks) <= max_parts:
        return chunks
    # Not even the one-line list fits: keep as much of it as does.
    return fit_parts(lambda n: build(0, n), len(changed), max_parts, budget)
