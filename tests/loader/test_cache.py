"""The per-file cache of loaded and checked manifests: same answers with it, without it, and when
its entries are stale, corrupted or forged; rules across files run every time."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from reconciler import loader
from reconciler.errors import ManifestError, Problem
from reconciler.loader import ManifestSet
from reconciler.rules import validate_manifests

FN = """\
apiVersion: reconciler.genesys.cloud/v1
kind: FunctionDefinition
metadata:
  name: func-{i}
spec:
  name: lookup_{i}
  description: Looks things up ${{SUFFIX}}.
  timeoutMillis: {timeout}
  parameters:
    type: object
    properties:
      q: {{type: string}}
    required: [q]
"""
PROMPT = """\
apiVersion: reconciler.genesys.cloud/v1
kind: Prompt
metadata:
  name: prompt-{i}
spec:
  version: 1.0.0
  modelId: genesys-llm-v4
  maxTokens: 500
  template: "Hello {{{{ name }}}}"
  variables:
    - {{name: name, required: true}}
  functions: [func-{ref}]
"""
VARIABLES = {"SUFFIX": "fast"}


def write_project(root: Path) -> Path:
    folder = root / "manifests"
    folder.mkdir(parents=True)
    # a.yaml: fine; b.yaml: a rule problem (timeout) and a load problem (unknown field);
    # c.yaml: a prompt naming a function defined in a.yaml, and one naming a missing function.
    (folder / "a.yaml").write_text(FN.format(i=1, timeout=1000) + "---\n" + FN.format(i=2, timeout=1000))
    bogus = FN.format(i=4, timeout=10).replace("spec:", "spec:\n  bogus: 1")
    (folder / "b.yaml").write_text(FN.format(i=3, timeout=999999) + "---\n" + bogus)
    (folder / "c.yaml").write_text(PROMPT.format(i=1, ref=1) + "---\n" + PROMPT.format(i=2, ref=9))
    return folder


def outcome(folder: Path, cache: Path | None) -> tuple[list[Problem], ManifestSet | None]:
    try:
        return [], validate_manifests([folder], VARIABLES, cache_dir=cache)
    except ManifestError as exc:
        return list(exc.problems), None


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.json"))


def test_problems_are_identical_without_cache_cold_and_warm(tmp_path: Path) -> None:
    folder = write_project(tmp_path)
    cache = tmp_path / ".reconciler" / "cache"
    without, _ = outcome(folder, None)
    cold, _ = outcome(folder, cache)
    assert len(entries(cache)) == 3
    warm, _ = outcome(folder, cache)
    assert without and without == cold == warm
    messages = [p.message for p in warm]
    assert any("func-9" in m for m in messages)  # the reference across files
    assert any("unknown field 'bogus'" in m for m in messages)
    assert any("between 1 and 60000" in m for m in messages)


def test_warm_load_does_not_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_project(tmp_path)
    (folder / "b.yaml").unlink()
    cache = tmp_path / "cache"
    _, first = outcome(folder, cache)
    parsed: list[str] = []
    real = loader.parse_documents

    def counting(file: str, *args: object, **kwargs: object) -> object:
        parsed.append(file)
        return real(file, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "parse_documents", counting)
    problems, second = outcome(folder, cache)
    assert parsed == [] or all("c.yaml" in f for f in parsed)  # only to locate a reference problem
    assert [p.message for p in problems] == [p.message for p in outcome(folder, None)[0]]
    assert first is None and second is None  # the missing func-9 is still reported


def test_a_valid_set_loads_the_same_manifests_from_the_cache(tmp_path: Path) -> None:
    folder = write_project(tmp_path)
    (folder / "b.yaml").unlink()
    (folder / "c.yaml").write_text(PROMPT.format(i=1, ref=1))
    cache = tmp_path / "cache"
    _, cold = outcome(folder, cache)
    _, warm = outcome(folder, cache)
    _, plain = outcome(folder, None)
    assert cold is not None and warm is not None and plain is not None
    assert [m.manifest for m in warm.manifests] == [m.manifest for m in plain.manifests]
    assert [m.source for m in warm.manifests] == [m.source for m in plain.manifests]
    assert warm.digest == plain.digest
    # Positions of a cached manifest are found again when asked for.
    assert warm.manifests[0].where("spec.timeoutMillis") == plain.manifests[0].where("spec.timeoutMillis")


def test_an_edited_file_or_other_variables_miss_the_cache(tmp_path: Path) -> None:
    folder = write_project(tmp_path)
    cache = tmp_path / "cache"
    outcome(folder, cache)
    text = (folder / "a.yaml").read_text()
    (folder / "a.yaml").write_text(text.replace("timeoutMillis: 1000", "timeoutMillis: 0", 1))
    edited, _ = outcome(folder, cache)
    assert edited == outcome(folder, None)[0]
    assert any("got 0" in p.message for p in edited)
    assert len(entries(cache)) == 4
    with pytest.raises(ManifestError) as caught:
        validate_manifests([folder], {"SUFFIX": "other"}, cache_dir=cache)
    assert len(entries(cache)) == 7  # a new entry for every file: the variables are in the key
    assert caught.value.problems == outcome(folder, None)[0]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated"),
        pytest.param(lambda raw: b"", id="empty"),
        pytest.param(lambda raw: raw.replace(b"between", b"BETWEEN"), id="payload-edited"),
        pytest.param(lambda raw: b"\xff\xfe garbage \x00", id="garbage"),
    ],
)
def test_a_corrupted_entry_is_ignored_and_rewritten(tmp_path: Path, damage: object) -> None:
    folder = write_project(tmp_path)
    cache = tmp_path / "cache"
    expected, _ = outcome(folder, None)
    outcome(folder, cache)
    for entry in entries(cache):
        entry.write_bytes(damage(entry.read_bytes()))  # type: ignore[operator]
    assert outcome(folder, cache)[0] == expected
    assert outcome(folder, cache)[0] == expected  # and the rewritten entries are good again


def test_a_forged_entry_with_a_valid_checksum_is_still_checked(tmp_path: Path) -> None:
    """An entry that claims another file's content, or holds a manifest pydantic refuses, is
    not believed: its checksum is right, but what it says is recomputed."""
    folder = write_project(tmp_path)
    cache = tmp_path / "cache"
    expected, _ = outcome(folder, None)
    outcome(folder, cache)
    for entry in entries(cache):
        _, _, body = entry.read_bytes().partition(b"\n")
        data = json.loads(body)
        for item in data["payload"]["manifests"]:
            item["data"]["spec"]["timeoutMillis"] = "not a number"
        forged = json.dumps(data).encode()
        entry.write_bytes(hashlib.sha256(forged).hexdigest().encode() + b"\n" + forged)
    assert outcome(folder, cache)[0] == expected


def test_a_stale_entry_for_other_content_is_never_used(tmp_path: Path) -> None:
    folder = write_project(tmp_path)
    cache = tmp_path / "cache"
    outcome(folder, cache)
    # Put a.yaml's entry where c.yaml's would be looked up: the content hash inside disagrees.
    salt = loader._Cache(cache, VARIABLES, True)
    a = hashlib.sha256((folder / "a.yaml").read_bytes()).hexdigest()
    c = hashlib.sha256((folder / "c.yaml").read_bytes()).hexdigest()
    salt.path(c).write_bytes(salt.path(a).read_bytes())
    assert outcome(folder, cache)[0] == outcome(folder, None)[0]


def test_an_unwritable_cache_only_costs_time(tmp_path: Path) -> None:
    folder = write_project(tmp_path)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    assert outcome(folder, blocker)[0] == outcome(folder, None)[0]


def test_duplicates_across_cached_files_are_found_every_time(tmp_path: Path) -> None:
    folder = write_project(tmp_path)
    (folder / "b.yaml").unlink()
    cache = tmp_path / "cache"
    outcome(folder, cache)
    (folder / "d.yaml").write_text(FN.format(i=1, timeout=1000))  # func-1 again
    first, _ = outcome(folder, cache)
    second, _ = outcome(folder, cache)
    assert first == second == outcome(folder, None)[0]
    assert any("defined twice" in p.message for p in second)


def test_parallel_cold_load_gives_the_same_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_project(tmp_path)
    for i in range(10, 16):
        (folder / f"x{i}.yaml").write_text(FN.format(i=i, timeout=1000 if i % 2 else 0))
    serial, _ = outcome(folder, None)
    monkeypatch.setattr(loader, "PARALLEL_MIN_BYTES", 0)  # spread even this small set
    assert outcome(folder, None)[0] == serial
    cache = tmp_path / "cache"
    assert outcome(folder, cache)[0] == serial
    assert outcome(folder, cache)[0] == serial


def test_the_cache_is_never_kept_in_the_checkout(tmp_path: Path) -> None:
    """Anything in the checkout can come from a pull request; a forged cache entry there would
    plan other manifests than git's. The cache lives in the user's cache folder instead."""
    from reconciler.workspace import manifest_cache_dir

    project = tmp_path / "project"
    project.mkdir()
    cache = manifest_cache_dir(project, {"XDG_CACHE_HOME": str(tmp_path / "home-cache")})
    assert cache.is_relative_to(tmp_path / "home-cache") and not cache.is_relative_to(project)
    assert manifest_cache_dir(tmp_path / "other", {"XDG_CACHE_HOME": str(tmp_path / "home-cache")}) != cache


def _run_steps(steps: loader.Steps[ManifestSet]) -> tuple[list[Problem], int, int]:
    """Drive the steps by hand: the problems raised, the pauses, and the workers waited for."""
    pauses = workers = 0
    while True:
        try:
            waiting_for = next(steps)
        except ManifestError as exc:
            return list(exc.problems), pauses, workers
        except StopIteration:
            return [], pauses, workers
        pauses += 1
        workers += waiting_for is not None


@pytest.mark.parametrize("spread", [False, True])
def test_loading_in_steps_pauses_after_each_file_and_gives_the_same_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spread: bool
) -> None:
    import os
    import threading

    from reconciler.rules import validate_manifests_steps

    folder = write_project(tmp_path)
    for i in range(10, 16):
        (folder / f"x{i}.yaml").write_text(FN.format(i=i, timeout=1000 if i % 2 else 0))
    serial, _ = outcome(folder, None)
    if spread:
        monkeypatch.setattr(loader, "PARALLEL_MIN_BYTES", 0)
    problems, pauses, workers = _run_steps(validate_manifests_steps([folder], VARIABLES))
    assert problems == serial
    assert pauses >= 2 * 9  # each of the 9 files once read, and once loaded
    cores = len(os.sched_getaffinity(0))
    alone = threading.active_count() == 1
    assert workers == (cores - 1 if spread and cores > 1 and alone else 0)
    # With another thread alive, nothing is forked (a child could inherit a lock that thread
    # holds), and the answer is the same.
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        problems, _, workers = _run_steps(validate_manifests_steps([folder], VARIABLES))
    finally:
        stop.set()
        other.join()
    assert problems == serial and workers == 0


def test_loading_in_turns_lets_other_tasks_run_between_files(tmp_path: Path) -> None:
    import asyncio

    from reconciler.rules import validate_manifests_steps
    from reconciler.workspace import in_turns

    folder = tmp_path / "manifests"
    folder.mkdir()
    for i in range(20):
        (folder / f"f{i}.yaml").write_text(FN.format(i=i, timeout=1000))
    turns = 0

    async def main() -> ManifestSet:
        async def other() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        ticking = asyncio.ensure_future(other())
        try:
            return await in_turns(validate_manifests_steps([folder], VARIABLES))
        finally:
            ticking.cancel()

    loaded = asyncio.run(main())
    assert len(loaded.manifests) == 20
    assert turns >= 20  # the other task ran at least once per file


@pytest.mark.parametrize("spread", [False, True])
def test_an_integer_over_64_bits_loads_exactly_cold_and_warm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spread: bool
) -> None:
    # orjson (the cache, the worker's answers) refuses integers over 64 bits on writing and reads
    # them back as floats: such a file must neither crash a run nor come back rounded.
    huge = 2**70 + 1
    folder = tmp_path / "manifests"
    folder.mkdir()
    text = FN.format(i=1, timeout=1000).replace("q: {type: string}", f"q: {{type: integer, maximum: {huge}}}")
    (folder / "a.yaml").write_text(text)
    for i in range(2, 6):
        (folder / f"x{i}.yaml").write_text(FN.format(i=i, timeout=1000))
    if spread:
        monkeypatch.setattr(loader, "PARALLEL_MIN_BYTES", 0)
    cache = tmp_path / "cache"
    for _ in range(2):  # cold, then warm
        loaded = validate_manifests([folder], VARIABLES, cache_dir=cache)
        by_name = {m.manifest.metadata.name: m.manifest for m in loaded.manifests}
        spec = by_name["func-1"].spec.model_dump(by_alias=True)
        bound = spec["parameters"]["properties"]["q"]["maximum"]
        assert bound == huge and isinstance(bound, int)
        assert len(by_name) == 5
