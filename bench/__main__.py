"""Benchmarks: plan and apply against the emulator on loopback, each next to its floor.

    python -m bench plan --n 10000      # floor (bare libyaml parse), validate, plan cold and warm
    python -m bench scaling             # plan cold and warm at 1k/5k/10k/20k: cost per resource
    python -m bench seed-plan --n 1000  # our plan vs seed-style clients (sequential, parallel)
    python -m bench apply --n 1000 --rate 100000 --latency-ms 20   # + bare and minimal PUTs, seed-style
    python -m bench apply --n 300 --rate 300                       # under the rate limit
    python -m bench cpu                 # CPU per resource: unchanged and changed
    python -m bench all

The emulator runs in its own process (so the reconciler's CPU and peak RSS are its own) with
the latency and rate limit each scenario names; its request counter gives the API requests.
Every figure is the median of at least 3 runs with min and max, and every floor is measured in
the same run as what is compared with it. Every loop is bounded in count, and every child
process in time; each command stays under about 5 minutes on the 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.generate import generate, write_manifests
from bench.harness import admin, emulator

CLIENT = ("emulator-client", "emulator-secret")
CACHE_HOME = ".bench-cache"  # XDG_CACHE_HOME of every measured command, inside its project folder
PAGE = 100


def load_live(url: str, documents: list[dict[str, Any]], project: str) -> None:
    """Put the documents in the org as an earlier apply would have (labelled as managed)."""
    from reconciler.kinds import adapter_for
    from reconciler.models import MANAGED_BY_LABEL, Kind

    bodies: dict[str, list[dict[str, Any]]] = {
        "function-definitions": [],
        "context-policies": [],
        "prompts": [],
    }
    for doc in documents:
        kind = Kind(doc["kind"])
        labels = {**doc["metadata"].get("labels", {}), MANAGED_BY_LABEL: project}
        body = adapter_for(kind).to_wire(doc["metadata"]["name"], doc["spec"], labels)
        bodies[adapter_for(kind).collection_path.rsplit("/", 1)[1]].append(body)
    for start in range(0, max(len(v) for v in bodies.values()), 2000):
        admin(url, "POST", "bulk", {k: v[start : start + 2000] for k, v in bodies.items()})


def requests_made(url: str) -> int:
    return int(admin(url, "GET", "stats")["total"])


# --- one measured command, in a fresh process -----------------------------------------------------

# Measured commands run from compiled bytecode, as an installed copy does (pip compiles it on
# install). A shell with PYTHONDONTWRITEBYTECODE=1 (this project's dev machines have it) would
# otherwise make every measured run compile the package again: ~50 ms of each. So the package is
# compiled once per benchmark process, where Python looks for it (its __pycache__ folders, which
# git ignores). Not into a PYTHONPYCACHEPREFIX folder of its own: Python then looks there for
# every module's bytecode, the standard library's and the dependencies' too, so the first
# measured run compiled all of those (~0.9 s) and every benchmark's first run was an outlier.
_COMPILED = False


def _with_bytecode() -> dict[str, str]:
    """This process's environment, once the package has been compiled."""
    global _COMPILED
    if not _COMPILED:
        import reconciler

        package = str(Path(reconciler.__file__).parent)
        writing = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", package], env=writing, check=True, timeout=300
        )
        _COMPILED = True
    return dict(os.environ)


def run_measured(
    args: list[str], url: str, cwd: Path, extra_env: dict[str, str] | None = None
) -> dict[str, float]:
    """Run a reconciler command in a child process; wall time, CPU and peak RSS of that child.

    Peak RSS is the child's VmHWM: ru_maxrss would carry over the parent's high-water mark
    across exec on Linux and report the benchmark's own memory instead.
    """
    env = {
        **_with_bytecode(),
        # The manifest cache lives in the user's cache folder: each benchmark project gets its
        # own, inside its temporary folder, so "cold" can clear it (and nothing leaks out).
        "XDG_CACHE_HOME": str(cwd / CACHE_HOME),
        "GENESYS_BASE_URL": url,
        "GENESYS_CLIENT_ID": CLIENT[0],
        "GENESYS_CLIENT_SECRET": CLIENT[1],
        **(extra_env or {}),
    }
    code = (
        "import sys, time; t=time.perf_counter(); from reconciler.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so it would report the parent's.
        "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0].split()[1]\n"
        "print('BENCH', time.perf_counter()-t, hwm, file=sys.stderr)\nsys.exit(rc)"
    )
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    marker = [line for line in done.stderr.splitlines() if line.startswith("BENCH")]
    if not marker:
        raise RuntimeError(f"{args} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    _, inner_wall, rss_kb = marker[-1].split()
    return {
        "wall_s": time.perf_counter() - started,
        "command_s": float(inner_wall),
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "rss_mb": int(rss_kb) / 1024,
        "exit": float(done.returncode),
    }


def summary(values: list[float], digits: int = 2) -> str:
    return (
        f"{statistics.median(values):.{digits}f} (min {min(values):.{digits}f}, max {max(values):.{digits}f})"
    )


def ratio(values: list[float], floors: list[float]) -> str:
    """Median of the run-by-run ratios (each run against the floor measured next to it)."""
    ratios = [v / f for v, f in zip(values, floors, strict=True)]
    return f"{summary(ratios)}x"


_BARE_PARSE = (
    "import sys, time, yaml\nfrom pathlib import Path\n"
    "files = sorted(p for p in Path(sys.argv[1]).rglob('*.y*ml'))\n"
    "t, c = time.perf_counter(), time.process_time()\n"
    "for f in files:\n    list(yaml.load_all(f.read_text(encoding='utf-8'), Loader=yaml.CSafeLoader))\n"
    "print(time.perf_counter() - t, time.process_time() - c)"
)


def bare_parse(folder: Path) -> tuple[float, float]:
    """The floor for loading: libyaml (PyYAML's CSafeLoader) parsing the same files into plain
    data in a fresh process, nothing else (no positions, no models, no rules). Its wall time and
    the CPU time it used."""
    done = subprocess.run(
        [sys.executable, "-c", _BARE_PARSE, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    wall, cpu = done.stdout.split()
    return float(wall), float(cpu)


# --- scenarios -------------------------------------------------------------------------------------


PER_FILE = 50  # documents per manifest file: 10,000 resources are 200 files


def _changed(documents: list[dict[str, Any]], share: float) -> list[dict[str, Any]]:
    """The documents with every tenth (up to ``share`` of them) given a new label."""
    desired = [dict(d) for d in documents]
    for i in range(int(len(documents) * share)):
        j = (i * 10) % len(documents)
        meta = desired[j]["metadata"]
        desired[j] = {**desired[j], "metadata": {**meta, "labels": {**meta["labels"], "rev": "2"}}}
    return desired


_SERIES = ("floor", "floor_cpu", "validate", "validate_warm", "cold", "warm", "rss", "cpu", "warm_cpu", "req")


@contextmanager
def _plan_org(n: int, latency_ms: float, changed: float) -> Iterator[tuple[Path, str]]:
    """A project folder with N generated resources as manifests (``changed`` of them revised)
    and an emulator, in its own process, whose org holds them as an earlier apply left them."""
    documents = generate(n)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "reconciler.yaml").write_text("project: bench\nmanifests: [manifests]\n")
        with emulator(latency_ms, 100_000, root / "org.db") as url:
            load_live(url, documents, "bench")
            write_manifests(_changed(documents, changed), root / "manifests", PER_FILE)
            yield root, url


def _plan_once(root: Path, url: str, out: dict[str, list[float]], *, validate: bool = True) -> set[float]:
    """One run, in this order: the bare-parse floor, validate (unless not ``validate``), plan
    cold (no cache), plan warm. Appends to ``out``'s series; returns the plans' exit codes."""
    floor_wall, floor_cpu = bare_parse(root / "manifests")
    out["floor"].append(floor_wall)
    out["floor_cpu"].append(floor_cpu)
    if validate:
        # validate with no cache (a fresh CI runner), then with the cache it just wrote
        shutil.rmtree(root / CACHE_HOME, ignore_errors=True)
        out["validate"].append(run_measured(["validate"], url, root)["command_s"])
        out["validate_warm"].append(run_measured(["validate"], url, root)["command_s"])
    shutil.rmtree(root / CACHE_HOME, ignore_errors=True)  # cold: every file is new
    shutil.rmtree(root / ".reconciler", ignore_errors=True)
    plan = ["plan", "--detailed-exitcode", "--parallelism", "16"]
    before = requests_made(url)
    cold = run_measured(plan, url, root)
    out["req"].append(requests_made(url) - before + 1)  # + the token request
    warm = run_measured(plan, url, root)
    out["cold"].append(cold["command_s"])
    out["warm"].append(warm["command_s"])
    out["rss"].append(max(cold["rss_mb"], warm["rss_mb"]))
    out["cpu"].append(cold["cpu_s"])
    out["warm_cpu"].append(warm["cpu_s"])
    return {cold["exit"], warm["exit"]}


def _plan_runs(n: int, latency_ms: float, runs: int, changed: float) -> dict[str, Any]:
    """``runs`` runs of ``_plan_once`` against one org of N resources."""
    out: dict[str, list[float]] = {k: [] for k in _SERIES}
    exits: set[float] = set()
    with _plan_org(n, latency_ms, changed) as (root, url):
        for _ in range(runs):
            exits |= _plan_once(root, url, out)
    return {**out, "exits": sorted(exits)}


def bench_plan(n: int, latency_ms: float, runs: int, changed: float = 0.0) -> dict[str, Any]:
    r = _plan_runs(n, latency_ms, runs, changed)
    kinds = {"FunctionDefinition": 0, "ContextPolicy": 0, "Prompt": 0}
    for d in generate(n):
        kinds[d["kind"]] += 1
    pages = sum(math.ceil(c / PAGE) or 1 for c in kinds.values())
    return {
        "scenario": f"plan N={n} in {math.ceil(n / PER_FILE)} files, {int(changed * 100)}% changed, "
        f"latency {latency_ms:g} ms ({runs} runs)",
        "floor: bare libyaml parse (s)": summary(r["floor"]),
        "validate, no cache (s)": summary(r["validate"]),
        "validate, no cache / floor": ratio(r["validate"], r["floor"]),
        "validate, cached (s)": summary(r["validate_warm"]),
        "validate, cached / floor": ratio(r["validate_warm"], r["floor"]),
        "plan cold, no cache (s)": summary(r["cold"]),
        "plan cold / floor": ratio(r["cold"], r["floor"]),
        "plan warm, nothing changed (s)": summary(r["warm"]),
        "plan warm / floor": ratio(r["warm"], r["floor"]),
        "plan cold CPU (s, both processes' share of the 2 cores)": summary(r["cpu"]),
        "peak RSS (MB)": summary(r["rss"], 0),
        "requests": statistics.median(r["req"]),
        "listing pages": pages,
        "network floor (s)": f"{2 * latency_ms / 1000:.2f} (page 1, then the rest in parallel)",
        "exit codes": r["exits"],
    }


def bench_scaling(sizes: tuple[int, ...] = (1000, 5000, 10_000, 20_000), runs: int = 3) -> dict[str, Any]:
    """Plan (cold and warm) at growing N: the cost of each extra resource should stay flat.

    The sizes take turns (run 1 at every size, then run 2, ...), each against its own org, so
    that a slow spell of this shared machine falls on all of them rather than on one size."""
    row: dict[str, Any] = {
        "scenario": f"scaling: plan in sync, latency 20 ms ({runs} runs each, the sizes in turn)"
    }
    results: dict[int, dict[str, list[float]]] = {n: {k: [] for k in _SERIES} for n in sizes}
    with ExitStack() as orgs:
        projects = {n: orgs.enter_context(_plan_org(n, 20, 0.0)) for n in sizes}
        for _ in range(runs):
            for n in sizes:
                _plan_once(*projects[n], results[n], validate=False)
    medians: dict[int, dict[str, float]] = {}
    lows: dict[int, dict[str, float]] = {}
    for n in sizes:
        r = results[n]
        keys = ("cold", "warm", "floor", "cpu", "warm_cpu", "floor_cpu")
        medians[n] = {k: statistics.median(r[k]) for k in keys}
        lows[n] = {k: min(r[k]) for k in keys}
        row[f"N={n}: floor / cold / warm (s), peak RSS (MB)"] = (
            f"{medians[n]['floor']:.2f} / {summary(r['cold'])} / {summary(r['warm'])}, {max(r['rss']):.0f}"
        )
        row[f"N={n}: CPU of floor / cold / warm (s)"] = (
            f"{medians[n]['floor_cpu']:.2f} / {summary(r['cpu'])} / {summary(r['warm_cpu'])}"
        )
    segments = ", ".join(f"{a // 1000}k->{b // 1000}k" for a, b in itertools.pairwise(sizes))
    series = {
        "cold": "cold",
        "warm": "warm",
        "floor": "floor",
        "cold CPU": "cpu",
        "warm CPU": "warm_cpu",
        "floor CPU": "floor_cpu",
    }
    for label, key in series.items():
        # From the medians, and from the fastest runs (the least disturbed by other tenants).
        for which, values in (("", medians), (" (fastest runs)", lows)):
            steps = [(values[b][key] - values[a][key]) / (b - a) * 1000 for a, b in itertools.pairwise(sizes)]
            spread = max(steps) / min(steps) if min(steps) > 0 else math.inf
            row[f"{label}: ms per extra resource{which}, {segments}"] = (
                ", ".join(f"{x:.3f}" for x in steps) + f" (max/min {spread:.2f})"
            )
    return row


def _token(url: str) -> dict[str, str]:
    token = httpx.post(f"{url}/oauth/token", data={"grant_type": "client_credentials"}, auth=CLIENT).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def _revised(doc: dict[str, Any], suffix: str) -> tuple[str, dict[str, Any]]:
    """A function definition's name and wire body, its description changed by ``suffix``."""
    from reconciler.kinds import adapter_for
    from reconciler.models import MANAGED_BY_LABEL, Kind

    name = doc["metadata"]["name"]
    spec = {**doc["spec"], "description": doc["spec"]["description"] + suffix}
    return name, adapter_for(Kind.FUNCTION_DEFINITION).to_wire(name, spec, {MANAGED_BY_LABEL: "bench"})


def seed_apply(url: str, documents: list[dict[str, Any]], suffix: str, parallelism: int) -> float:
    """A seed-style apply: for each resource one GET then one conditional PUT, no plan, no journal;
    ``parallelism`` 1 is the sequential seed, more runs that many resources at a time."""
    from reconciler.kinds import adapter_for
    from reconciler.models import Kind

    adapter = adapter_for(Kind.FUNCTION_DEFINITION)

    async def one(http: httpx.AsyncClient, gate: asyncio.Semaphore, doc: dict[str, Any]) -> None:
        async with gate:
            live = await http.get(adapter.item_path(doc["metadata"]["name"]))
            name, body = _revised(doc, suffix)
            await http.put(adapter.item_path(name), json=body, headers={"If-Match": live.headers["ETag"]})

    async def run() -> float:
        limits = httpx.Limits(max_connections=parallelism)
        async with httpx.AsyncClient(base_url=url, headers=_token(url), timeout=60, limits=limits) as http:
            gate = asyncio.Semaphore(parallelism)
            started = time.perf_counter()
            await asyncio.gather(*(one(http, gate, d) for d in documents))
            return time.perf_counter() - started

    return asyncio.run(run())


async def _listed_etags(http: httpx.AsyncClient, collection: str) -> dict[str, str]:
    etags: dict[str, str] = {}
    for page in itertools.count(1):
        body = (await http.get(collection, params={"pageSize": 100, "pageNumber": page})).json()
        etags.update((e["id"], e["etag"]) for e in body["entities"])
        if not body.get("nextUri"):
            return etags
    raise AssertionError("unreachable")


def bare_puts(url: str, documents: list[dict[str, Any]], suffix: str, parallelism: int) -> float:
    """The writes alone: one conditional PUT per resource from a bare httpx client, ``parallelism``
    at a time, ETags taken from a listing beforehand (not timed). What the requests cost against
    this emulator on this machine, with no planning, journal or checks: the floor that
    N x latency / parallelism leaves out (the emulator's and httpx's CPU on shared cores)."""
    from reconciler.kinds import adapter_for
    from reconciler.models import Kind

    adapter = adapter_for(Kind.FUNCTION_DEFINITION)

    async def run() -> float:
        limits = httpx.Limits(max_connections=parallelism)
        async with httpx.AsyncClient(base_url=url, headers=_token(url), timeout=60, limits=limits) as http:
            etags = await _listed_etags(http, adapter.collection_path)
            gate = asyncio.Semaphore(parallelism)

            async def one(name: str, body: dict[str, Any]) -> None:
                async with gate:
                    guard = {"If-Match": etags[name]}
                    put = await http.put(adapter.item_path(name), json=body, headers=guard)
                    put.raise_for_status()  # a 412 would be no write at all

            bodies = [_revised(doc, suffix) for doc in documents]
            started = time.perf_counter()
            await asyncio.gather(*(one(name, body) for name, body in bodies))
            return time.perf_counter() - started

    return asyncio.run(run())


def raw_puts(url: str, documents: list[dict[str, Any]], suffix: str, parallelism: int) -> float:
    """The same writes from a minimal HTTP/1.1 client on asyncio streams: ``parallelism``
    keep-alive connections, each sending its next PUT when the last answer is read. It spends
    ~0.15 ms of CPU per PUT against ~1 ms for httpx, so its time is what this emulator and this
    machine allow any client: what it takes above N x latency / parallelism is theirs."""
    from reconciler.kinds import adapter_for
    from reconciler.models import Kind

    adapter = adapter_for(Kind.FUNCTION_DEFINITION)
    headers = _token(url)
    host, port = httpx.URL(url).host, httpx.URL(url).port

    async def connection(queue: collections.deque[tuple[str, bytes]], etags: dict[str, str]) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while queue:
                name, body = queue.popleft()
                head = (
                    f"PUT {adapter.item_path(name)} HTTP/1.1\r\nHost: {host}\r\n"
                    f"Authorization: {headers['Authorization']}\r\nIf-Match: {etags[name]}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                )
                writer.write(head.encode() + body)
                status = await reader.readline()
                if status.split()[1:2] not in ([b"200"], [b"201"]):
                    raise RuntimeError(f"PUT {name}: {status!r}")
                length = None
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    key, _, value = line.partition(b":")
                    if key.strip().lower() == b"content-length":
                        length = int(value)
                if length is None:
                    raise RuntimeError(f"PUT {name}: an answer without Content-Length")
                await reader.readexactly(length)
        finally:
            writer.close()

    async def run() -> float:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            etags = await _listed_etags(http, adapter.collection_path)
        revised = (_revised(doc, suffix) for doc in documents)
        queue = collections.deque((name, json.dumps(body).encode()) for name, body in revised)
        started = time.perf_counter()
        writers = asyncio.gather(*(connection(queue, etags) for _ in range(parallelism)))
        await asyncio.wait_for(writers, timeout=300)
        return time.perf_counter() - started

    return asyncio.run(run())


def seed_plan(url: str, folder: Path, parallelism: int) -> float:
    """A seed-style plan: every file through yaml.safe_load_all (no checks), then one GET per
    resource and DeepDiff against it; ``parallelism`` resources at a time."""
    from deepdiff import DeepDiff

    from reconciler.kinds import adapter_for
    from reconciler.models import Kind

    async def one(http: httpx.AsyncClient, gate: asyncio.Semaphore, doc: dict[str, Any]) -> bool:
        adapter = adapter_for(Kind(doc["kind"]))
        async with gate:
            live = (await http.get(adapter.item_path(doc["metadata"]["name"]))).json()
        stored = adapter.from_wire({**live, "etag": '"x"'})
        return bool(DeepDiff(adapter.with_server_defaults(doc["spec"]), stored.spec, ignore_order=True))

    async def run() -> float:
        limits = httpx.Limits(max_connections=parallelism)
        async with httpx.AsyncClient(base_url=url, headers=_token(url), timeout=60, limits=limits) as http:
            started = time.perf_counter()
            docs = [d for f in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
            gate = asyncio.Semaphore(parallelism)
            await asyncio.gather(*(one(http, gate, d) for d in docs if d))
            return time.perf_counter() - started

    return asyncio.run(run())


def _functions(n: int) -> list[dict[str, Any]]:
    return [d for d in generate(n * 3) if d["kind"] == "FunctionDefinition"][:n]


def bench_apply(n: int, rate: int, latency_ms: float, runs: int, parallelism: int = 10) -> dict[str, Any]:
    """Ours, then (unless rate-limited) the two seed-style clients, against fresh emulators in
    the same run, each run compared with the floor."""
    documents = _functions(n)
    unlimited = rate >= 100_000
    walls: list[float] = []
    seq: list[float] = []
    par: list[float] = []
    bare: list[float] = []
    raw: list[float] = []
    throttled, requests = [], []
    for run in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "reconciler.yaml").write_text("project: bench\nmanifests: [manifests]\n")
            with emulator(latency_ms, rate, root / "org.db") as url:
                load_live(url, documents, "bench")
                revised = [
                    {**d, "spec": {**d["spec"], "description": d["spec"]["description"] + f" r{run}"}}
                    for d in documents
                ]
                write_manifests(revised, root / "manifests", PER_FILE)
                before = admin(url, "GET", "stats")
                result = run_measured(
                    ["apply", "--auto-approve", "--parallelism", str(parallelism)], url, root
                )
                after = admin(url, "GET", "stats")
                walls.append(result["command_s"])
                throttled.append(after["throttled"] - before["throttled"])
                requests.append(after["total"] - before["total"])
                if unlimited:
                    bare.append(bare_puts(url, documents, f" b{run}", parallelism))
                    raw.append(raw_puts(url, documents, f" w{run}", parallelism))
                    seq.append(seed_apply(url, documents, f" s{run}", 1))
                    par.append(seed_apply(url, documents, f" p{run}", parallelism))
    floor = n * latency_ms / 1000 / parallelism if unlimited else n / (rate / 60)
    row: dict[str, Any] = {
        "scenario": f"apply N={n} updates, {'no rate limit' if unlimited else f'{rate}/min'}, "
        f"latency {latency_ms:g} ms, parallelism {parallelism} ({runs} runs)",
        "ours (s)": summary(walls),
        "floor (s)": f"{floor:.2f} = "
        + (f"N x {latency_ms:g} ms / {parallelism}" if unlimited else f"N / {rate} per min"),
        "ours / floor": f"{summary([w / floor for w in walls], 3)}x",
        "requests": statistics.median(requests),
        "429s": f"{statistics.median(throttled):g} of {statistics.median(requests):g} requests",
    }
    if unlimited:
        row[f"bare PUTs alone, {parallelism} at a time (s)"] = summary(bare)
        row["ours / bare PUTs"] = f"{summary([a / b for a, b in zip(walls, bare, strict=True)])}x"
        row[f"minimal HTTP/1.1 client's PUTs, {parallelism} connections (s)"] = summary(raw)
        row["minimal client's PUTs / floor"] = f"{summary([r / floor for r in raw], 3)}x"
        row["seed-style sequential, GET+PUT each (s)"] = summary(seq)
        row[f"seed-style, {parallelism} at a time (s)"] = summary(par)
        row["seed sequential / ours"] = f"{summary([a / b for a, b in zip(seq, walls, strict=True)])}x"
        row["seed parallel / ours"] = f"{summary([a / b for a, b in zip(par, walls, strict=True)])}x"
    return row


def bench_seed_plan(n: int, latency_ms: float, runs: int, parallelism: int = 16) -> dict[str, Any]:
    """Our plan (cold and warm) against seed-style plans over the same N functions, same emulator."""
    documents = _functions(n)
    ours_cold, ours_warm, seq, par = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "reconciler.yaml").write_text("project: bench\nmanifests: [manifests]\n")
        with emulator(latency_ms, 100_000, root / "org.db") as url:
            load_live(url, documents, "bench")
            write_manifests(documents, root / "manifests", PER_FILE)
            plan = ["plan", "--detailed-exitcode", "--parallelism", str(parallelism)]
            for _ in range(runs):
                shutil.rmtree(root / CACHE_HOME, ignore_errors=True)
                shutil.rmtree(root / ".reconciler", ignore_errors=True)
                ours_cold.append(run_measured(plan, url, root)["command_s"])
                ours_warm.append(run_measured(plan, url, root)["command_s"])
                seq.append(seed_plan(url, root / "manifests", 1))
                par.append(seed_plan(url, root / "manifests", parallelism))
    return {
        "scenario": f"plan N={n} functions in sync vs seed-style plans, latency {latency_ms:g} ms "
        f"({runs} runs)",
        "ours cold (s, includes ~0.5 s of imports)": summary(ours_cold),
        "ours warm (s)": summary(ours_warm),
        "seed-style sequential: GET + DeepDiff per resource (s)": summary(seq),
        f"seed-style, {parallelism} at a time (s)": summary(par),
        "seed sequential / ours cold": f"{summary([a / b for a, b in zip(seq, ours_cold, strict=True)])}x",
        "seed parallel / ours cold": f"{summary([a / b for a, b in zip(par, ours_cold, strict=True)])}x",
        "network floor, seed sequential (s)": f"{n * latency_ms / 1000:.2f} (N x latency)",
    }


def bench_cpu(n: int, repeat: int = 3) -> dict[str, Any]:
    """CPU per resource of normalize + diff (unchanged and changed resources) and of rendering."""
    from reconciler.diff import compare, desired_document, live_document
    from reconciler.kinds import adapter_for
    from reconciler.models import MANAGED_BY_LABEL, MANIFEST_MODELS, Kind
    from reconciler.plan import PlanOptions, make_plan
    from reconciler.render import render_json, render_markdown, render_text

    documents = generate(n)
    manifests = [MANIFEST_MODELS[Kind(d["kind"])].model_validate(d) for d in documents]
    live = []
    for doc in documents:
        kind = Kind(doc["kind"])
        labels = {**doc["metadata"]["labels"], MANAGED_BY_LABEL: "bench"}
        stored = adapter_for(kind).with_server_defaults(doc["spec"])  # as the service stores it
        body = adapter_for(kind).to_wire(doc["metadata"]["name"], stored, labels)
        body.setdefault("id", doc["metadata"]["name"])
        live.append(adapter_for(kind).from_wire({**body, "etag": '"1"'}))

    def timed(fn: Callable[[], Any]) -> float:
        best = math.inf
        for _ in range(repeat):
            start = time.process_time()
            fn()
            best = min(best, time.process_time() - start)
        return best

    def diff_all() -> None:
        for manifest, resource_live in zip(manifests, live, strict=True):
            compare(desired_document(manifest, "bench"), live_document(resource_live), resource_live.key.kind)

    # Changed: a longer description (functions) or template (prompts) and a new label on each.
    edited = []
    for m in manifests:
        doc = desired_document(m, "bench")
        spec = dict(doc["spec"])
        field = "template" if "template" in spec else "description" if "description" in spec else None
        if field:
            spec[field] = spec[field] + " (edited)"
        edited.append({"spec": spec, "labels": {**doc["labels"], "rev": "2"}})

    def diff_changed() -> None:
        for doc, resource_live in zip(edited, live, strict=True):
            compare(doc, live_document(resource_live), resource_live.key.kind)

    options = PlanOptions(project="bench")
    plan = make_plan(manifests, live, options, "")
    changed = [
        m.model_copy(update={"metadata": m.metadata.model_copy(update={"labels": {"rev": "2"}})})
        for m in manifests
    ]
    changed_plan = make_plan(changed, live, options, "")
    per = 1e6 / n
    return {
        "scenario": f"CPU per resource, N={n}",
        "normalize+diff unchanged (µs)": f"{timed(diff_all) * per:.1f}",
        "normalize+diff changed: label + text field (µs)": f"{timed(diff_changed) * per:.1f}",
        "make_plan unchanged (µs)": f"{timed(lambda: make_plan(manifests, live, options, '')) * per:.1f}",
        "render text+json+md, all changed (µs)": f"{timed(lambda: (render_text(changed_plan), render_json(changed_plan), render_markdown(changed_plan))) * per:.1f}",  # noqa: E501
        "plan has changes": plan.has_changes,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(f"\n### {row.pop('scenario')}\n")
        print("| metric | value |\n|---|---|")
        for key, value in row.items():
            print(f"| {key} | {value} |")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--latency-ms", type=float, default=20)
    p.add_argument("--changed", type=float, default=0.0)
    p.add_argument("--runs", type=int, default=3)
    s = sub.add_parser("scaling")
    s.add_argument("--runs", type=int, default=3)
    sp = sub.add_parser("seed-plan")
    sp.add_argument("--n", type=int, default=1000)
    sp.add_argument("--latency-ms", type=float, default=20)
    sp.add_argument("--runs", type=int, default=3)
    a = sub.add_parser("apply")
    a.add_argument("--n", type=int, default=1000)
    a.add_argument("--rate", type=int, default=100_000)
    a.add_argument("--latency-ms", type=float, default=20)
    a.add_argument("--runs", type=int, default=3)
    c = sub.add_parser("cpu")
    c.add_argument("--n", type=int, default=1000)
    sub.add_parser("all")
    args = parser.parse_args(argv)
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {sys.platform}; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    match args.what:
        case "plan":
            print_table([bench_plan(args.n, args.latency_ms, args.runs, args.changed)])
        case "scaling":
            print_table([bench_scaling(runs=args.runs)])
        case "seed-plan":
            print_table([bench_seed_plan(args.n, args.latency_ms, args.runs)])
        case "apply":
            print_table([bench_apply(args.n, args.rate, args.latency_ms, args.runs)])
        case "cpu":
            print_table([bench_cpu(args.n)])
        case "all":  # about 20 minutes: each part is one of the commands above
            parts: tuple[Callable[[], dict[str, Any]], ...] = (
                lambda: bench_cpu(1000),
                lambda: bench_cpu(10_000),
                lambda: bench_plan(10_000, 20, 3),
                lambda: bench_plan(10_000, 20, 3, 0.1),
                lambda: bench_scaling(),
                lambda: bench_seed_plan(1000, 20, 3),
                lambda: bench_apply(1000, 100_000, 20, 3),
                lambda: bench_apply(300, 300, 0, 3),
            )
            for part in parts:
                print_table([part()])
    print(f"load average at end {os.getloadavg()[0]:.2f} (2 cores: above ~0.5 others were using them too)")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
