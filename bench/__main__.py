"""Benchmarks: plan and apply at 1k and 10k resources against the emulator on loopback.

    python -m bench all            # everything below, results printed as Markdown tables
    python -m bench plan --n 1000  # one scenario
    python -m bench apply --n 1000 --rate 300
    python -m bench cpu

The emulator runs in its own process (so the reconciler's CPU and peak RSS are its own) with
the latency and rate limit each scenario names; its request counter gives the API requests.
Each figure is the median of several runs, with min and max. Every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.generate import generate, write_manifests
from bench.harness import admin, emulator

CLIENT = ("emulator-client", "emulator-secret")
PAGE = 100


def load_live(url: str, documents: list[dict[str, Any]], project: str) -> None:
    """Put the documents in the org as an earlier apply would have (labelled as managed)."""
    from reconciler.client.adapters import adapter_for
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


def run_measured(
    args: list[str], url: str, cwd: Path, extra_env: dict[str, str] | None = None
) -> dict[str, float]:
    """Run a reconciler command in a child process; wall time, CPU and peak RSS of that child.

    Peak RSS is the child's VmHWM: ru_maxrss would carry over the parent's high-water mark
    across exec on Linux and report the benchmark's own memory instead.
    """
    env = {
        **os.environ,
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


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


# --- scenarios -------------------------------------------------------------------------------------


def bench_plan(n: int, latency_ms: float, runs: int, changed: float = 0.0) -> dict[str, Any]:
    documents = generate(n)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "reconciler.yaml").write_text("project: bench\nmanifests: [manifests]\n")
        with emulator(latency_ms, 100_000, root / "org.db") as url:
            load_live(url, documents, "bench")
            desired = [dict(d) for d in documents]
            for i in range(0, int(n * changed)):
                j = (i * 10) % n  # every tenth resource
                desired[j] = {
                    **desired[j],
                    "metadata": {
                        **desired[j]["metadata"],
                        "labels": {**desired[j]["metadata"]["labels"], "rev": "2"},
                    },
                }
            write_manifests(desired, root / "manifests")
            results, requests = [], []
            for _ in range(runs):
                before = requests_made(url)
                results.append(
                    run_measured(["plan", "--detailed-exitcode", "--parallelism", "16"], url, root)
                )
                requests.append(requests_made(url) - before + 1)  # + the token request (not counted there)
    kinds = {"FunctionDefinition": 0, "ContextPolicy": 0, "Prompt": 0}
    for d in documents:
        kinds[d["kind"]] += 1
    pages = sum(math.ceil(c / PAGE) or 1 for c in kinds.values())
    return {
        "scenario": f"plan N={n}, {int(changed * 100)}% changed, latency {latency_ms:g} ms",
        "wall_s": summary([r["wall_s"] for r in results]),
        "command_s": summary([r["command_s"] for r in results]),
        "cpu_s": summary([r["cpu_s"] for r in results]),
        "rss_mb": summary([r["rss_mb"] for r in results]),
        "requests": statistics.median(requests),
        "listing_pages": pages,
        "floor_s": f"{2 * latency_ms / 1000:.2f} network (page 1, then the rest in parallel) + CPU",
        "exit": sorted({r["exit"] for r in results}),
    }


def bench_apply(n: int, rate: int, latency_ms: float, runs: int, parallelism: int = 10) -> dict[str, Any]:
    documents = [d for d in generate(n * 3) if d["kind"] == "FunctionDefinition"][:n]
    walls, throttled, requests = [], [], []
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
                write_manifests(revised, root / "manifests")
                before = admin(url, "GET", "stats")
                result = run_measured(
                    ["apply", "--auto-approve", "--parallelism", str(parallelism)], url, root
                )
                after = admin(url, "GET", "stats")
                walls.append(result["command_s"])
                throttled.append(after["throttled"] - before["throttled"])
                requests.append(after["total"] - before["total"])
    floor = n / (rate / 60) if rate < 100_000 else n * latency_ms / 1000 / parallelism
    return {
        "scenario": f"apply N={n} updates, {rate}/min, latency {latency_ms:g} ms, parallelism {parallelism}",
        "wall_s": summary(walls),
        "floor_s": f"{floor:.1f}",
        "vs_floor": f"{statistics.median(walls) / floor:.3f}x",
        "requests": statistics.median(requests),
        "429s": statistics.median(throttled),
        "429_share": f"{100 * statistics.median(throttled) / max(1, statistics.median(requests)):.2f}%",
    }


def bench_baseline(n: int, latency_ms: float, rate: int) -> dict[str, Any]:
    """A seed-style client: for each resource, one GET then one PUT, sequentially."""
    from reconciler.client.adapters import adapter_for
    from reconciler.models import MANAGED_BY_LABEL, Kind

    documents = [d for d in generate(n * 3) if d["kind"] == "FunctionDefinition"][:n]
    with tempfile.TemporaryDirectory() as tmp, emulator(latency_ms, rate, Path(tmp) / "org.db") as url:
        load_live(url, documents, "bench")
        adapter = adapter_for(Kind.FUNCTION_DEFINITION)
        token = httpx.post(
            f"{url}/oauth/token", data={"grant_type": "client_credentials"}, auth=CLIENT
        ).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        started = time.perf_counter()
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            for doc in documents:
                name = doc["metadata"]["name"]
                live = http.get(adapter.item_path(name))
                body = adapter.to_wire(
                    name,
                    {**doc["spec"], "description": doc["spec"]["description"] + " b"},
                    {MANAGED_BY_LABEL: "bench"},
                )
                http.put(adapter.item_path(name), json=body, headers={"If-Match": live.headers["ETag"]})
        wall = time.perf_counter() - started
    return {
        "scenario": f"baseline apply N={n} (GET+PUT each, sequential), {rate}/min, latency {latency_ms:g} ms",
        "wall_s": f"{wall:.2f}",
    }


def bench_cpu(n: int, repeat: int = 3) -> dict[str, Any]:
    """CPU per resource of normalize + diff (unchanged resources) and of rendering the plan."""
    from reconciler.client.adapters import adapter_for
    from reconciler.diff import compare, desired_document, live_document
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
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--latency-ms", type=float, default=20)
    p.add_argument("--changed", type=float, default=0.0)
    p.add_argument("--runs", type=int, default=3)
    a = sub.add_parser("apply")
    a.add_argument("--n", type=int, default=1000)
    a.add_argument("--rate", type=int, default=300)
    a.add_argument("--latency-ms", type=float, default=0)
    a.add_argument("--runs", type=int, default=1)
    c = sub.add_parser("cpu")
    c.add_argument("--n", type=int, default=1000)
    b = sub.add_parser("baseline")
    b.add_argument("--n", type=int, default=1000)
    b.add_argument("--rate", type=int, default=100_000)
    b.add_argument("--latency-ms", type=float, default=20)
    sub.add_parser("all")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {sys.platform}")
    match args.what:
        case "plan":
            print_table([bench_plan(args.n, args.latency_ms, args.runs, args.changed)])
        case "apply":
            print_table([bench_apply(args.n, args.rate, args.latency_ms, args.runs)])
        case "cpu":
            print_table([bench_cpu(args.n)])
        case "baseline":
            print_table([bench_baseline(args.n, args.latency_ms, args.rate)])
        case "all":
            for row in (
                bench_cpu(1000),
                bench_cpu(10_000),
                bench_plan(1000, 20, 3),
                bench_plan(1000, 20, 3, 0.1),
                bench_plan(10_000, 20, 3),
                bench_apply(1000, 100_000, 20, 3),
                bench_baseline(1000, 20, 100_000),
                bench_apply(1000, 300, 0, 1),
            ):
                print_table([row])


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
