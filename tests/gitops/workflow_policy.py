"""Policy for the GitHub workflows and the composite action: what actionlint does not check.

actionlint checks syntax, expressions and types; it does not know what GitHub refuses at run
time or what this project considers safe. The rules here (each a ``Violation.rule``):

- ``permissions-declared``: every workflow declares top-level ``permissions`` (the default for
  its jobs) and grants no write there; writes are granted per job.
- ``reusable-permissions``: a job of a called reusable workflow never asks for more than the
  calling job grants (the caller's ``permissions``, else the caller workflow's top-level ones).
  GitHub refuses such a run before any job starts ("The nested job 'apply' is requesting
  'contents: read', but is only allowed 'contents: none'"); actionlint passes it.
- ``job-scopes``: every job holds at most the scopes its purpose needs. Purposes are an
  allow-list (``PURPOSES``); jobs are assigned one in ``JOB_PURPOSES`` and are ``read`` otherwise.
- ``report-on-failure``: a step that writes a comment or an issue runs whatever happened before
  it (``if: always()`` or ``!cancelled()``), so a failure never leaves a stale comment behind.
- ``pinned-sha``: every third-party action or remote reusable workflow (``owner/repo@ref``, not
  ``./local``) is pinned to a full 40-hex commit SHA, with its tag in a trailing comment
  (``@<sha> # v4.2.2``); a ``docker://`` image is pinned by ``@sha256:`` digest.
- ``untrusted-inline``: no ``${{ github.event.* }}``, ``${{ github.head_ref }}`` or
  ``${{ inputs.* }}`` inside a ``run:`` script or a github-script ``script:``; such values reach
  scripts through ``env:`` only.
- ``fork-secrets``: in a workflow run by ``pull_request``, a job that uses secrets is skipped for
  fork pull requests (its ``if:`` tests ``head.repo.fork``): GitHub gives forks no secrets, so the
  job could only fail.

Pure: ``check`` takes file texts and returns violations. ``check_repo`` reads a repository.
Run it by hand with ``python -m tests.gitops.workflow_policy [REPO]``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

# --- Configuration (data, not code) -------------------------------------------------------------

# What each kind of job may hold, scope -> highest level. Anything not listed is "none".
PURPOSES: Mapping[str, Mapping[str, str]] = {
    "none": {},
    "read": {"contents": "read"},
    # Keeps one sticky plan comment per environment on the pull request.
    "pr-comment": {"contents": "read", "pull-requests": "write"},
    # Opens, updates, comments on and closes the drift issue.
    "drift-issue": {"contents": "read", "issues": "write"},
    # Pushes the audit journal to the reconciler-journal branch (apply, rollback).
    "journal-write": {"contents": "write"},
}

# "<workflow file name>:<job id>" -> purpose; every other job is "read".
JOB_PURPOSES: Mapping[str, str] = {
    "plan.yml:plan": "pr-comment",
    "plan.yml:fork-note": "none",
    "drift.yml:drift": "drift-issue",
    "apply-environment.yml:apply": "journal-write",
    "rollback.yml:rollback": "journal-write",
    # They call apply-environment.yml, whose apply job can hold no more than they grant.
    "apply.yml:staging": "journal-write",
    "apply.yml:prod": "journal-write",
}

# Scopes of GITHUB_TOKEN (https://docs.github.com/actions/using-jobs/assigning-permissions-to-jobs).
SCOPES = (
    "actions",
    "attestations",
    "checks",
    "contents",
    "deployments",
    "discussions",
    "id-token",
    "issues",
    "models",
    "packages",
    "pages",
    "pull-requests",
    "repository-projects",
    "security-events",
    "statuses",
)
_LEVEL = {"none": 0, "read": 1, "write": 2}

# Calls that write a comment or an issue (github-script), and commands/actions that do.
_WRITES_COMMENT = re.compile(
    r"\b(?:createComment|updateComment|deleteComment|issues\.(?:create|update)|createReview)\b"
    r"|\bgh\s+(?:pr|issue)\s+(?:comment|create|edit|close)\b"
)
_COMMENT_ACTIONS = (
    "peter-evans/create-or-update-comment",
    "marocchino/sticky-pull-request-comment",
    "thollander/actions-comment-pull-request",
)
_RUNS_ON_FAILURE = re.compile(r"\balways\(\)|!\s*cancelled\(\)")
_UNTRUSTED = re.compile(r"\$\{\{[^}]*\b(?:github\.event\.|github\.head_ref\b|inputs\.)[^}]*\}\}")
_USES_LINE = re.compile(r"""^\s*(?:-\s+)?uses:\s*["']?([^\s"'#]+)["']?\s*(?:#\s*(\S.*))?$""")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_TAG_COMMENT = re.compile(r"^v?\d+(?:\.\d+)*\S*")


@dataclass(frozen=True)
class Violation:
    file: str
    where: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: [{self.rule}] {self.message}"


# --- Permissions --------------------------------------------------------------------------------

Permissions = dict[str, str]  # scope -> none | read | write, every scope present


def _expand(value: Any) -> Permissions | None:
    """A ``permissions:`` value as a full scope map; None when absent (the default token)."""
    if value is None:
        return None
    if value == "read-all":
        return {s: "read" for s in SCOPES}
    if value == "write-all":
        return {s: "write" for s in SCOPES}
    if value == {} or value == "":
        return dict.fromkeys(SCOPES, "none")
    if isinstance(value, dict):
        out = dict.fromkeys(SCOPES, "none")
        out.update({str(k): str(v) for k, v in value.items()})
        return out
    raise ValueError(f"unreadable permissions: {value!r}")


def _granted(perms: Permissions) -> str:
    shown = [f"{s}: {lvl}" for s, lvl in sorted(perms.items()) if lvl != "none"]
    return ", ".join(shown) or "nothing"


@dataclass(frozen=True)
class _Workflow:
    path: str
    doc: dict[str, Any]

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        return dict(self.doc.get("jobs") or {})

    @property
    def default(self) -> Permissions | None:
        return _expand(self.doc.get("permissions"))

    def job_permissions(self, job: Mapping[str, Any], inherited: Permissions | None) -> Permissions | None:
        """What a job's token holds: its own permissions, else the workflow's, else (in a called
        workflow) the caller's."""
        own = _expand(job.get("permissions")) if "permissions" in job else None
        if own is not None:
            return own
        return self.default if self.default is not None else inherited

    @property
    def triggers(self) -> set[str]:
        # PyYAML reads the key `on` as the boolean True.
        on = self.doc.get("on", self.doc.get(True))  # type: ignore[call-overload]
        if isinstance(on, str):
            return {on}
        if isinstance(on, list):
            return {str(t) for t in on}
        return {str(t) for t in (on or {})}


def _check_reusable(
    caller: _Workflow,
    job_id: str,
    allowed: Permissions | None,
    workflows: Mapping[str, _Workflow],
    depth: int = 0,
) -> Iterator[Violation]:
    uses = str(caller.jobs[job_id]["uses"])
    if not uses.startswith("./") or depth > 5:
        return
    called = workflows.get(uses[2:].split("@", 1)[0])
    if called is None:
        yield Violation(caller.path, f"job '{job_id}'", "reusable-permissions", f"{uses} not found")
        return
    for nested_id, nested in called.jobs.items():
        requested = called.job_permissions(nested, allowed)
        if "uses" in nested:
            yield from _check_reusable(called, nested_id, requested, workflows, depth + 1)
        if allowed is None or requested is None:
            continue
        for scope in SCOPES:
            if _LEVEL[requested[scope]] > _LEVEL[allowed[scope]]:
                yield Violation(
                    caller.path,
                    f"job '{job_id}'",
                    "reusable-permissions",
                    f"calls {called.name}: The nested job '{nested_id}' is requesting "
                    f"'{scope}: {requested[scope]}', but is only allowed '{scope}: {allowed[scope]}'",
                )


def _check_permissions(
    wf: _Workflow, workflows: Mapping[str, _Workflow], purposes: Mapping[str, str]
) -> Iterator[Violation]:
    called_only = wf.triggers == {"workflow_call"}
    if "permissions" not in wf.doc:
        yield Violation(wf.path, "workflow", "permissions-declared", "no top-level `permissions:`")
    elif wf.default is not None and any(lvl == "write" for lvl in wf.default.values()):
        yield Violation(
            wf.path,
            "workflow",
            "permissions-declared",
            f"top-level permissions grant {_granted(wf.default)}: grant writes per job",
        )
    for job_id, job in wf.jobs.items():
        perms = wf.job_permissions(job, None)
        if perms is None and not called_only:
            yield Violation(wf.path, f"job '{job_id}'", "permissions-declared", "no `permissions:`")
        if "uses" in job:
            yield from _check_reusable(wf, job_id, perms, workflows)
        if perms is None:
            continue
        purpose = purposes.get(f"{wf.name}:{job_id}", "read")
        allow = PURPOSES[purpose]
        for scope, level in perms.items():
            if _LEVEL[level] > _LEVEL[allow.get(scope, "none")]:
                yield Violation(
                    wf.path,
                    f"job '{job_id}'",
                    "job-scopes",
                    f"holds '{scope}: {level}', more than its purpose '{purpose}' needs "
                    f"(allowed: {', '.join(f'{s}: {v}' for s, v in allow.items()) or 'nothing'})",
                )


# --- Steps --------------------------------------------------------------------------------------


def _steps(doc: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, step) for every step of a workflow's jobs or of a composite action."""
    runs = doc.get("runs")
    if isinstance(runs, dict):
        for n, step in enumerate(runs.get("steps") or []):
            yield f"step {step.get('name') or step.get('id') or n + 1}", step
    for job_id, job in (doc.get("jobs") or {}).items():
        for n, step in enumerate(job.get("steps") or []):
            yield f"job '{job_id}' step '{step.get('name') or step.get('id') or n + 1}'", step


def _check_steps(path: str, doc: Mapping[str, Any]) -> Iterator[Violation]:
    for where, step in _steps(doc):
        uses = str(step.get("uses") or "")
        script = str((step.get("with") or {}).get("script") or "") if "github-script" in uses else ""
        run = str(step.get("run") or "")
        writes = bool(_WRITES_COMMENT.search(script) or _WRITES_COMMENT.search(run)) or any(
            uses.startswith(a + "@") for a in _COMMENT_ACTIONS
        )
        if writes and not _RUNS_ON_FAILURE.search(str(step.get("if") or "")):
            yield Violation(
                path,
                where,
                "report-on-failure",
                "writes a comment or an issue but is skipped when an earlier step fails: "
                "add `if: always()` (or `!cancelled()`) and report the failure",
            )
        for text, what in ((run, "run script"), (script, "github-script")):
            for found in _UNTRUSTED.findall(text):
                yield Violation(
                    path, where, "untrusted-inline", f"{found} inside a {what}: pass it through `env:`"
                )


def _check_pins(path: str, text: str) -> Iterator[Violation]:
    for number, line in enumerate(text.splitlines(), start=1):
        match = _USES_LINE.match(line)
        if not match:
            continue
        ref, comment = match.group(1), (match.group(2) or "").strip()
        where = f"line {number}"
        if ref.startswith("./"):
            continue
        if ref.startswith("docker://"):
            if "@sha256:" not in ref:
                yield Violation(path, where, "pinned-sha", f"{ref} is not pinned by @sha256: digest")
            continue
        name, _, version = ref.partition("@")
        if not _SHA.match(version):
            yield Violation(
                path,
                where,
                "pinned-sha",
                f"{ref} is pinned by {'tag or branch' if version else 'nothing'}, not by a full commit SHA",
            )
        elif not _TAG_COMMENT.match(comment):
            yield Violation(
                path, where, "pinned-sha", f"{name}@{version[:12]}… has no `# <tag>` comment naming its tag"
            )


def _check_fork_secrets(wf: _Workflow) -> Iterator[Violation]:
    if not wf.triggers & {"pull_request"}:
        return
    for job_id, job in wf.jobs.items():
        uses_secrets = re.search(r"\bsecrets\s*[.\[]", yaml.safe_dump(job)) or job.get("secrets")
        if uses_secrets and "head.repo.fork" not in str(job.get("if") or ""):
            yield Violation(
                wf.path,
                f"job '{job_id}'",
                "fork-secrets",
                "uses secrets on pull requests but is not skipped for forks "
                "(`if: ${{ !github.event.pull_request.head.repo.fork }}`)",
            )


# --- Entry points -------------------------------------------------------------------------------


def check(files: Mapping[str, str], purposes: Mapping[str, str] = JOB_PURPOSES) -> list[Violation]:
    """Violations in ``files`` (repository-relative path -> text): workflows under
    ``.github/workflows/`` and composite actions (``action.yml``). Local reusable workflows are
    resolved among ``files``."""
    workflows = {
        path: _Workflow(path, yaml.safe_load(text) or {})
        for path, text in files.items()
        if path.startswith(".github/workflows/")
    }
    found: list[Violation] = []
    for path, text in sorted(files.items()):
        doc = workflows[path].doc if path in workflows else yaml.safe_load(text) or {}
        if path in workflows:
            found += _check_permissions(workflows[path], workflows, purposes)
            found += _check_fork_secrets(workflows[path])
        found += _check_steps(path, doc)
        found += _check_pins(path, text)
    return found


def repo_files(root: Path) -> dict[str, str]:
    """The files ``check`` looks at in the repository at ``root``."""
    paths = [
        *sorted((root / ".github" / "workflows").glob("*.y*ml")),
        *(p for p in (root / "action.yml", root / "action.yaml") if p.exists()),
    ]
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in paths}


def check_repo(root: Path) -> list[Violation]:
    return check(repo_files(root))


if __name__ == "__main__":
    problems = check_repo(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print("\n".join(map(str, problems)) or "workflow policy: no violations")
    sys.exit(1 if problems else 0)
