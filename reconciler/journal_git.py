"""A journal kept on a git branch: one chain shared by every machine that applies.

The location is ``git+URL#BRANCH``; each environment's journal is the file ``<environment>.jsonl``
(``default.jsonl`` without one) on BRANCH. Every machine keeps a working copy under
``<cache_root>/<sha256 of the location>/``: a bare repository (``repo.git``) the branch is
fetched into, the journal file that ``Journal`` appends to and fsyncs as it does locally, and
``verified.json``, the last branch commit this machine verified.

A writer (apply, rollback), before its first record:
  1. fetches the branch and checks it: its history is linear, every commit only appended whole
     lines to files, the commit this machine verified last is still in it, and the chain holds;
  2. finds the lease (``journal.current_lease``). Held by another run that wrote within
     ``LEASE_S``, it waits up to ``--lock-timeout`` and then refuses, naming that run;
     ``--break-lock RUN_ID`` takes over a dead run's lease (the claim records that it did);
  3. claims it: appends a ``claim`` record and pushes one commit holding it. The push is the
     compare-and-swap: git refuses a push that does not extend the branch's current tip, so of
     two machines claiming at once one wins and the other fetches again and finds the lease held.
While the command runs, records are pushed in batches (at most ``BATCH_DELAY_S`` after they are
written) and at the end, after a ``release`` record. A push that fails on the way is retried with
backoff; a push is never forced, and if the branch moved on without this run (someone broke its
lease) nothing more is appended: no audit, no write.

Git runs as a subprocess (an argument list with a timeout, never a shell string) with
``GIT_TERMINAL_PROMPT=0``: credentials come from git's own configuration (a credential helper, an
ssh agent, ``http.extraHeader``), never from our files, and a URL's userinfo is never printed.

Must not: rewrite or force-push a published record, print a credential, hang on a prompt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from reconciler.errors import JournalError
from reconciler.journal import (
    Journal,
    JournalLock,
    JournalStore,
    Lease,
    LocalStore,
    RecordType,
    VerifyReport,
    current_lease,
    is_git_location,
    verify,
)

LEASE_S = 30 * 60  # a run silent this long is presumed dead; it can be taken over
BATCH_DELAY_S = 2.0  # a record is pushed at most this long after it was written
POLL_S = 2.0  # how often a waiting writer fetches again
CLAIM_ATTEMPTS = 8  # pushes of a claim refused because the branch moved, before giving up
PUSH_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)  # backoff of a push that could not reach the remote
NETWORK_TIMEOUT_S = 60.0
LOCAL_TIMEOUT_S = 30.0

_SCHEMES = ("file://", "https://", "http://", "ssh://", "git://")
_BRANCH = re.compile(r"^(?![-/.])(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/-]+(?<![/.])(?<!\.lock)$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")
# Environment variables that would point git at another repository than ours.
_GIT_REPO_VARIABLES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
)


def open_store(location: str, *, environment: str, cache_root: Path) -> JournalStore:
    """The store of a journal location: ``git+URL#BRANCH`` (the environment's file on that branch,
    with its working copy under ``cache_root``), else a local path. Opening does no I/O."""
    if is_git_location(location):
        return GitStore.at(location, environment=environment, cache_root=cache_root)
    return LocalStore(Path(location))


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL in it (``https://user:token@host``) hidden."""
    return _USERINFO.sub("***@", text)


@dataclass(frozen=True)
class GitLocation:
    url: str
    branch: str

    @classmethod
    def parse(cls, text: str) -> GitLocation:
        example = "e.g. git+https://github.com/org/repo.git#reconciler-journal"
        url, sep, branch = text.removeprefix("git+").rpartition("#")
        if not text.startswith("git+") or not sep or not url or not branch:
            raise JournalError(
                f"{redact(text)} is not a git journal location: expected git+URL#BRANCH, {example}"
            )
        if not url.startswith(_SCHEMES):
            schemes = ", ".join(s.removesuffix("://") for s in _SCHEMES)
            raise JournalError(f"{redact(text)}: the URL must start with one of {schemes} ({example})")
        if not _BRANCH.match(branch):
            raise JournalError(f"{redact(text)}: {branch!r} is not a valid branch name")
        return cls(url, branch)

    def __str__(self) -> str:
        return f"git+{redact(self.url)}#{self.branch}"

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.url}#{self.branch}".encode()).hexdigest()[:16]


class _Refused(JournalError):
    """A push that did not extend the branch's tip (someone else pushed first)."""


class _Unreachable(JournalError):
    """The remote could not be reached, or refused us (network, authentication)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class GitStore:
    """The journal of one environment on a git branch (see the module docstring)."""

    location: GitLocation
    environment: str
    cache_root: Path
    lease_s: float = LEASE_S
    batch_delay_s: float = BATCH_DELAY_S
    clock: Callable[[], datetime] = _utc_now
    _identity: list[str] | None = field(default=None, repr=False)

    @classmethod
    def at(cls, text: str, *, environment: str, cache_root: Path) -> GitStore:
        name = environment or "default"
        if not _FILE.match(name):
            raise JournalError(f"environment name {environment!r} cannot name a journal file on a branch")
        return cls(GitLocation.parse(text), environment, Path(cache_root))

    # --- Where things are ---------------------------------------------------------------------

    @property
    def file_name(self) -> str:
        return f"{self.environment or 'default'}.jsonl"

    @property
    def folder(self) -> Path:
        return self.cache_root / self.location.key

    @property
    def path(self) -> Path:
        return self.folder / self.file_name

    @property
    def repo(self) -> Path:
        return self.folder / "repo.git"

    @property
    def tracking_ref(self) -> str:
        return f"refs/remotes/journal/{self.location.branch}"

    def describe(self) -> str:
        return f"{self.location} ({self.file_name})"

    # --- Git ----------------------------------------------------------------------------------

    def git(
        self, *args: str, data: bytes | None = None, network: bool = False, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        env = {k: v for k, v in os.environ.items() if k not in _GIT_REPO_VARIABLES}
        env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C", GCM_INTERACTIVE="never")
        command = ["git", f"--git-dir={self.repo}", *self._identity_options(args), *args]
        timeout = NETWORK_TIMEOUT_S if network else LOCAL_TIMEOUT_S
        try:
            done = subprocess.run(
                command,
                input=data if data is not None else b"",
                capture_output=True,
                env=env,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise JournalError("git is not installed: a journal kept in git needs the git command") from None
        except subprocess.TimeoutExpired:
            raise _Unreachable(
                f"git {args[0]} for the journal {self.location} did not finish within {timeout:.0f}s"
            ) from None
        if check and done.returncode != 0:
            raise JournalError(f"git {args[0]} failed for the journal {self.location}: {self._why(done)}")
        return done

    def _why(self, done: subprocess.CompletedProcess[bytes]) -> str:
        text = (done.stderr or done.stdout or b"").decode("utf-8", "replace").strip()
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return redact(" / ".join(lines[-3:])) or f"exit status {done.returncode}"

    def _identity_options(self, args: tuple[str, ...]) -> list[str]:
        """Who commits: git's configuration, else a fixed name (CI runners have none)."""
        if not args or args[0] != "commit-tree":
            return []
        if self._identity is None:
            configured = os.environ.get("GIT_COMMITTER_EMAIL") or os.environ.get("EMAIL")
            if not configured:
                found = subprocess.run(
                    ["git", "config", "--get", "user.email"],
                    capture_output=True,
                    timeout=LOCAL_TIMEOUT_S,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
                configured = found.stdout.decode().strip() if found.returncode == 0 else ""
            self._identity = (
                [] if configured else ["-c", "user.name=reconciler", "-c", "user.email=reconciler@localhost"]
            )
        return self._identity

    def _init(self) -> None:
        if not (self.repo / "HEAD").exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(
                ["git", "init", "--bare", "--quiet", str(self.repo)],
                capture_output=True,
                timeout=LOCAL_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "LC_ALL": "C"},
            )
            if done.returncode != 0:
                raise JournalError(
                    f"cannot make the journal's working copy in {self.repo}: {self._why(done)}"
                )

    def fetch(self) -> str | None:
        """Fetch the branch; its tip commit, or None when the branch does not exist (yet)."""
        self._init()
        refspec = f"+refs/heads/{self.location.branch}:{self.tracking_ref}"
        done = self.git(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.location.url, refspec,
            network=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            if b"couldn't find remote ref" in done.stderr:
                self.git("update-ref", "-d", self.tracking_ref, check=False)
                return None
            raise _Unreachable(f"cannot fetch the journal {self.location}: {self._why(done)}")
        return self.git("rev-parse", "--verify", "--quiet", self.tracking_ref).stdout.decode().strip()

    def content_at(self, commit: str | None) -> bytes | None:
        """The journal file at ``commit`` (None when it has no such file)."""
        if commit is None:
            return None
        done = self.git("cat-file", "blob", f"{commit}:{self.file_name}", check=False)
        return done.stdout if done.returncode == 0 else None

    def files_at(self, commit: str) -> list[str]:
        listing = self.git("ls-tree", "--name-only", commit).stdout.decode()
        return [name for name in listing.splitlines() if name]

    def commit(self, content: bytes, parent: str | None, message: str) -> str:
        """A commit of ``parent``'s tree with the journal file set to ``content`` (not pushed)."""
        blob = self.git("hash-object", "-w", "--stdin", data=content).stdout.decode().strip()
        entries = self.git("ls-tree", parent).stdout.decode().splitlines() if parent else []
        kept = [line for line in entries if line and line.split("\t", 1)[1] != self.file_name]
        listing = "".join(f"{line}\n" for line in [*kept, f"100644 blob {blob}\t{self.file_name}"])
        tree = self.git("mktree", data=listing.encode()).stdout.decode().strip()
        parents = ["-p", parent] if parent else []
        return self.git("commit-tree", tree, *parents, "-m", message).stdout.decode().strip()

    def push(self, commit: str, parent: str | None) -> None:
        """Make ``commit`` (a child of ``parent``) the branch's tip if, and only if, the tip is
        still ``parent``: git refuses a push that does not extend the tip, and the remote updates
        the branch only from the value the push expects (a compare-and-swap)."""
        target = f"{commit}:refs/heads/{self.location.branch}"
        done = self.git("push", "--porcelain", self.location.url, target, network=True, check=False)
        if done.returncode == 0:
            return
        said = (done.stdout + done.stderr).decode("utf-8", "replace")
        if "[remote rejected]" in said and self.fetch() != parent:
            # Two pushes raced and the other one updated the branch first ("failed to update ref").
            raise _Refused(f"the branch of {self.location} moved on (another push landed first)")
        if "[remote rejected]" in said:
            raise JournalError(
                f"the remote refused to record the journal on {self.location}: {self._why(done)}"
            )
        if "[rejected]" in said:
            raise _Refused(f"the branch of {self.location} moved on (the push did not extend its tip)")
        raise _Unreachable(f"cannot push the journal to {self.location}: {self._why(done)}")

    # --- Verification -------------------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.folder / "verified.json"

    def remembered(self) -> str | None:
        """The branch commit this machine verified (or pushed) last."""
        try:
            state = json.loads(self._state_file.read_text(encoding="utf-8")[:4096])
            commit = str(state["commit"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return commit if re.fullmatch(r"[0-9a-f]{40,64}", commit) else None

    def remember(self, commit: str) -> None:
        # A ref keeps the commit's objects here even after the branch no longer holds them.
        self.git("update-ref", "refs/reconciler/verified", commit)
        stamp = self.clock().isoformat(timespec="seconds")
        temporary = self._state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps({"commit": commit, "at": stamp}), encoding="utf-8")
        temporary.replace(self._state_file)

    def _is_ancestor(self, older: str, newer: str) -> bool:
        return self.git("merge-base", "--is-ancestor", older, newer, check=False).returncode == 0

    def history_problems(self, tip: str | None) -> tuple[list[str], list[str]]:
        """(problems, what was checked) of the branch history up to ``tip``: linear, only
        appends, and still holding the commit this machine verified last."""
        remembered = self.remembered()
        if remembered is not None and self.git("cat-file", "-e", remembered, check=False).returncode:
            remembered = None  # the working copy was cleared: nothing to compare with here
        since: str | None = None
        if remembered is not None:
            if tip is None:
                branch = self.location.branch
                return [f"the branch {branch} is gone, but this machine verified it at {remembered[:12]}"], []
            if not self._is_ancestor(remembered, tip):
                return [
                    f"the branch was rewritten: commit {remembered[:12]}, verified on this machine "
                    f"before, is no longer in its history (a force-push replaced published records)"
                ], []
            since = remembered
        if tip is None:
            return [], ["the branch does not exist yet"]
        return self._appends_only(tip, since)

    def _appends_only(self, tip: str, since: str | None) -> tuple[list[str], list[str]]:
        log = self.git(
            "log", "--reverse", "--topo-order", "--root", "--raw", "--no-abbrev", "--no-renames",
            "--format=commit %H %P", tip, *([f"^{since}"] if since else []),
        ).stdout.decode("utf-8", "replace")  # fmt: skip
        problems: list[str] = []
        commits = 0
        changes: list[tuple[str, str, str, str, str]] = []  # commit, path, old, new, status
        current = ""
        for line in log.splitlines():
            if line.startswith("commit "):
                ids = line.split()[1:]
                current, commits = ids[0], commits + 1
                if len(ids) > 2:
                    problems.append(f"commit {current[:12]} is a merge: the journal's history must be linear")
            elif line.startswith(":"):
                meta, _, path = line.partition("\t")
                _, _, old, new, status = meta.split()
                changes.append((current, path, old, new, status[:1]))
        blobs = sorted({b for _, _, old, new, _ in changes for b in (old, new) if set(b) != {"0"}})
        sizes = self._sizes(blobs)
        finals = self._contents([f"{tip}:{path}" for path in sorted({c[1] for c in changes})])
        for commit, path, old, new, status in changes:
            where = f"commit {commit[:12]}"
            if status not in ("A", "M"):
                problems.append(f"{where} removed or replaced {path} (only appending lines is allowed)")
                continue
            final = finals.get(f"{tip}:{path}")
            if final is None:
                problems.append(f"{where}: {path} is not on the branch any more")
                continue
            for blob in (old, new) if status == "M" else (new,):
                size = sizes.get(blob, -1)
                if not _is_prefix(blob, size, final):
                    problems.append(
                        f"{where} left {path} in a state that is not the start of its current content "
                        "(published lines were edited, reordered or removed)"
                    )
                    break
            else:
                if status == "M" and sizes.get(new, 0) < sizes.get(old, 0):
                    problems.append(f"{where} cut lines off the end of {path}")
        checked = f"{commits} new commit(s) since {since[:12]}" if since else f"all {commits} commit(s)"
        return problems, [
            f"branch {self.location.branch} at {tip[:12]}: {checked} checked, linear and append-only"
        ]

    def _sizes(self, blobs: list[str]) -> dict[str, int]:
        if not blobs:
            return {}
        out = self.git("cat-file", "--batch-check", data="".join(f"{b}\n" for b in blobs).encode())
        sizes: dict[str, int] = {}
        for line in out.stdout.decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "blob":
                sizes[parts[0]] = int(parts[2])
        return sizes

    def _contents(self, names: list[str]) -> dict[str, bytes]:
        if not names:
            return {}
        out = self.git("cat-file", "--batch", data="".join(f"{n}\n" for n in names).encode()).stdout
        found: dict[str, bytes] = {}
        position = 0
        for name in names:
            end = out.index(b"\n", position)
            header = out[position:end].split()
            position = end + 1
            if len(header) == 3 and header[1] == b"blob":
                size = int(header[2])
                found[name] = out[position : position + size]
                position += size + 1
        return found

    # --- Reading and verifying ----------------------------------------------------------------

    def _fetched(self) -> tuple[str, bytes]:
        tip = self.fetch()
        if tip is None:
            raise JournalError(f"no journal at {self.location}: the branch does not exist (yet)")
        content = self.content_at(tip)
        if content is None:
            held = ", ".join(f for f in self.files_at(tip) if f.endswith(".jsonl")) or "no journal"
            raise JournalError(
                f"no journal {self.file_name} on {self.location} (it holds: {held}); pass --env NAME"
            )
        return tip, content

    def _write_copy(self, content: bytes) -> Path:
        copy = self.folder / f"{self.file_name}.fetched"
        temporary = copy.with_suffix(".tmp")
        temporary.write_bytes(content)
        temporary.replace(copy)
        return copy

    def reader(self) -> Journal:
        """The journal as the branch holds it now (a fetched copy; nothing remote changes)."""
        _, content = self._fetched()
        return Journal(self._write_copy(content))

    def verify(self, expect_head: str | None = None) -> VerifyReport:
        tip, content = self._fetched()
        problems, details = self.history_problems(tip)
        report = verify(self._write_copy(content), expect_head)
        if problems:
            problem = "; ".join(problems)
            return VerifyReport(False, report.records, report.head, problem, details=tuple(details))
        if report.ok:
            self.remember(tip)
        return VerifyReport(
            report.ok, report.records, report.head, report.problem, report.line, tuple(details)
        )

    # --- Writing ------------------------------------------------------------------------------

    def writer(
        self,
        *,
        actor: str,
        command: str,
        environment: str,
        timeout: float = 0.0,
        break_lock: str | None = None,
        say: Callable[[str], None] = lambda _: None,
    ) -> GitWriter:
        return GitWriter(self, actor, command, environment, timeout, break_lock, say)


def _is_prefix(blob: str, size: int, final: bytes) -> bool:
    """Whether git blob ``blob`` of ``size`` bytes holds the first ``size`` bytes of ``final``,
    ending at a line's end (a version of the file that later commits only appended to)."""
    if size < 0 or size > len(final) or (size and final[size - 1 : size] != b"\n"):
        return False
    digest = hashlib.sha1(b"blob %d\x00" % size, usedforsecurity=False)
    digest.update(final[:size])
    return digest.hexdigest() == blob


class GitWriter:
    """The lease of a git journal for one command: claimed on enter, published while the
    command runs, released and pushed on exit. Its ``Journal`` calls it before and after every
    append (``journal.Publisher``)."""

    def __init__(
        self,
        store: GitStore,
        actor: str,
        command: str,
        environment: str,
        timeout: float,
        break_lock: str | None,
        say: Callable[[str], None],
    ) -> None:
        self.store, self.actor, self.command, self.environment = store, actor, command, environment
        self.timeout, self.break_lock, self.say = timeout, break_lock, say
        self.claim_id = ""
        self.failure = ""
        self.journal: Journal | None = None
        self._published: tuple[str | None, bytes, int] = (None, b"", 0)  # commit, content, records
        self._attempted: dict[str, tuple[bytes, int]] = {}
        self._dirty, self._stop = threading.Event(), threading.Event()
        self._push_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Two processes of one machine share the working copy: they take turns (an OS lock).
        self._local = JournalLock(store.path, actor=actor, command=command, timeout=timeout)

    # Publisher --------------------------------------------------------------------------------

    def ready(self) -> None:
        if self.failure:
            raise JournalError(self.failure)

    def appended(self, record: Any) -> None:
        self._dirty.set()

    # Context manager --------------------------------------------------------------------------

    def __enter__(self) -> Journal:
        deadline = time.monotonic() + self.timeout
        self._local.__enter__()
        try:
            journal = self._claim(deadline)
        except BaseException:
            self._local.__exit__(None, None, None)
            raise
        self._local.note_holder(self.claim_id)
        journal.publisher = self
        self.journal = journal
        self._thread = threading.Thread(target=self._publish_in_batches, name="journal-push", daemon=True)
        self._thread.start()
        return journal

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._finish(clean=error is None or (isinstance(error, SystemExit) and not error.code))
        finally:
            self._local.__exit__(None, None, None)

    # Claiming ---------------------------------------------------------------------------------

    def _claim(self, deadline: float) -> Journal:
        store = self.store
        refused = 0
        while True:
            tip = store.fetch()
            problems, _ = store.history_problems(tip)
            if problems:
                raise JournalError(
                    f"the journal {store.location} is NOT intact: {problems[0]}; nothing was written "
                    "(see `reconciler journal verify`)"
                )
            remote = store.content_at(tip) or b""
            before = self._adopt(remote)
            journal = Journal(store.path, writable=True, clock=store.clock)
            for torn in journal.set_aside:
                self.say(f"Warning: the journal's last line was torn ({torn}); it was set aside.")
            waited, broke = self._lease_to_break(current_lease(journal.records()), deadline)
            if waited:
                continue  # the holder may be done: fetch again
            claim_id = journal.new_run_id()
            journal.append(claim_id, RecordType.CLAIM, self._claim_data(broke))
            self._published = (tip, remote, len(remote.splitlines()))
            try:
                self._push(journal, f"claim {claim_id}: {self.command} by {self.actor}")
            except _Refused:
                refused += 1
                if refused >= CLAIM_ATTEMPTS:
                    raise JournalError(
                        f"could not claim the journal {store.location}: the branch moved on "
                        f"{refused} times while claiming; nothing was written"
                    ) from None
                _write_atomically(store.path, before)  # our claim was never published: drop it
                time.sleep(random.uniform(0.05, 0.3))
                continue
            self.claim_id = claim_id
            if broke is not None:
                self.say(f"Took over the journal's lease from {broke} (journaled as claim {claim_id}).")
            return journal

    def _adopt(self, remote: bytes) -> bytes:
        """Make the local file the branch's content, keeping records this machine wrote after it
        and never published (a run that died before its push): they are published with the claim.
        Local records the branch moved on without are set aside to a side file, reported."""
        path = self.store.path
        local = path.read_bytes() if path.exists() else b""
        if local == remote:
            return local
        if local.startswith(remote) and (not remote or remote.endswith(b"\n")):
            self.say(
                f"Note: {len(local) - len(remote)} byte(s) of journal records written on this machine "
                "were never published (a run died before its push); they are published now."
            )
            return local
        if local:
            stamp = self.store.clock().strftime("%Y%m%dT%H%M%S%fZ")
            side = path.with_name(f"{path.name}.unpublished-{stamp}")
            side.write_bytes(local)
            self.say(
                f"Warning: records this machine wrote were never published and the branch moved on "
                f"without them; kept in {side} (never part of the chain)."
            )
        _write_atomically(path, remote)
        return remote

    def _lease_to_break(self, lease: Lease | None, deadline: float) -> tuple[bool, Lease | None]:
        """(waited, the lease to take over): waited a while for a live holder, else the lease to
        journal as taken over (None: nobody holds it)."""
        store = self.store
        if lease is None:
            if self.break_lock:
                self.say(
                    f"Note: no run holds the journal's lease; nothing for --break-lock {self.break_lock}."
                )
            return False, None
        if self.break_lock:
            if lease.names(self.break_lock):
                return False, lease
            raise JournalError(
                f"--break-lock {self.break_lock}: the journal {store.location} is held by {lease}, "
                "not by that run; nothing was written"
            )
        if lease.host == socket.gethostname() and lease.cache == str(store.folder.resolve()):
            return False, lease  # this machine's, and no process here holds its local lock: it died
        if lease.age(store.clock()) >= store.lease_s:
            return False, lease  # silent longer than a lease: presumed dead
        remaining = deadline - time.monotonic()
        if remaining > 0:
            time.sleep(min(POLL_S, remaining))
            return True, None
        raise JournalError(
            f"the journal {store.location} is in use by {lease}; wait for that run to finish "
            f"(--lock-timeout SECONDS waits for it), or, if it died, take over its lease with "
            f"--break-lock {lease.run}"
        )

    def _claim_data(self, broke: Lease | None) -> dict[str, Any]:
        taken = None
        if broke is not None:
            reason = "--break-lock" if self.break_lock else "expired or left by a dead run of this machine"
            taken = {
                "run_id": broke.run,
                "claim": broke.claim_id,
                "actor": broke.actor,
                "since": broke.since,
                "last": broke.last,
                "reason": reason,
            }
        return {
            "actor": self.actor,
            "command": self.command,
            "environment": self.environment,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "cache": str(self.store.folder.resolve()),
            "lease_s": self.store.lease_s,
            "broke": taken,
        }

    # Publishing -------------------------------------------------------------------------------

    def _push(self, journal: Journal, message: str) -> None:
        """Push everything written so far as one commit on the last published one."""
        content, head, records = journal.snapshot()
        parent, published, count = self._published
        if content == published:
            return
        if not content.startswith(published):
            raise JournalError("the local journal no longer extends what was published; nothing is pushed")
        commit = self.store.commit(
            content,
            parent,
            f"{message}\n\n{self.store.file_name}: records {count}..{records - 1}, head {head}",
        )
        self._attempted[commit] = (content, records)
        self.store.push(commit, parent)
        self._published = (commit, content, records)
        with contextlib.suppress(JournalError, OSError):
            self.store.remember(commit)

    def _publish(self, message: str) -> None:
        """Push with retries; on failure for good, set ``failure`` (no further appends)."""
        journal = self.journal
        if journal is None or self.failure:
            return
        with self._push_lock:
            delays = iter(PUSH_RETRY_DELAYS)
            while True:
                try:
                    self._push(journal, message)
                    return
                except _Refused:
                    if self._landed_anyway():
                        continue
                    self.failure = (
                        f"the journal branch of {self.store.location} moved on without this run "
                        f"(another run took over its lease?); records from number {self._published[2]} "
                        f"on are kept only in {self.store.path}; no further change is sent to the org"
                    )
                    return
                except _Unreachable as exc:
                    delay = next(delays, None)
                    if delay is None:
                        self.failure = (
                            f"{exc}; the records not yet published are kept in {self.store.path}; "
                            "no further change is sent to the org (no audit, no write)"
                        )
                        return
                    time.sleep(delay)
                except JournalError as exc:
                    self.failure = f"{exc}; no further change is sent to the org (no audit, no write)"
                    return

    def _landed_anyway(self) -> bool:
        """After a refused push: did an earlier push that seemed to fail land after all?"""
        try:
            tip = self.store.fetch()
        except JournalError:
            return False
        if tip is None or tip not in self._attempted or tip == self._published[0]:
            return False
        content, records = self._attempted[tip]
        self._published = (tip, content, records)
        return True

    def _publish_in_batches(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            self._stop.wait(self.store.batch_delay_s)  # gather a batch; cut short at the end
            self._dirty.clear()
            if self._stop.is_set():
                return
            self._publish(f"{self.command} by {self.actor}")

    def _finish(self, clean: bool) -> None:
        self._stop.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join()
        journal = self.journal
        if journal is not None and not self.failure:
            with contextlib.suppress(JournalError):
                journal.append(self.claim_id, RecordType.RELEASE, {})
            self._publish(f"release {self.claim_id}: {self.command} by {self.actor}")
        if self.failure:
            if clean:
                raise JournalError(self.failure)
            self.say(f"Error: {self.failure}")


def _write_atomically(path: Path, content: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except OSError as exc:
        raise JournalError(f"cannot write the journal's working copy {path}: {exc.strerror or exc}") from None
