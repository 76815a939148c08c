"""Rewrite the "Latest results" table of bench/README.md from the newest result files.

Run: ``.venv/bin/python -m bench update-readme`` (after the benchmarks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
START, END = "<!-- results:start -->", "<!-- results:end -->"


def newest(name: str) -> dict[str, Any] | None:
    files = sorted((HERE / "results").glob(f"{name}-????-??-??.json"))
    return json.loads(files[-1].read_text()) if files else None


def machine(m: dict[str, Any]) -> str:
    return (
        f"{m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"PostgreSQL {m['postgresql']}, {m['date'][:10]}, commit {m['git_commit']}"
    )


def busy(cpu: dict[str, Any]) -> str:
    other = cpu["cores_busy"].get("other", 0.0)
    return f"{other:.2f}"


def table() -> str:
    rows = [
        "| benchmark | result | target | other load (cores) | machine |",
        "| --- | --- | --- | --- | --- |",
    ]
    e = newest("enqueue")
    if e:
        best = e["http"][str(e["chosen_workers"])]
        p = e["paced"]
        t = e["targets"]
        db = e["database_alone"]
        rows += [
            f"| enqueue throughput (wrk, {e['config']['connections']} conns) | "
            f"{best['accepted_per_second']:,.0f}/s with {e['chosen_workers']} worker(s); "
            + ", ".join(
                f"{w} worker(s) {r['accepted_per_second']:,.0f}/s" for w, r in e["http"].items()
            )
            + f" | ≥ 1,000/s: {'met' if t['throughput']['met'] else 'NOT met'} | "
            f"{busy(best['cpu'])} | {machine(e['machine'])} |",
            f"| enqueue latency at {p['target_rate']:.0f}/s (open loop) | "
            f"p50 {p['latency_from_schedule']['p50_ms']} ms, "
            f"p99 {p['latency_from_schedule']['p99_ms']} ms"
            + (" (overloaded)" if p.get("overloaded") else "")
            + f" | p99 < 50 ms: {'met' if t['p99_at_rate']['met'] else 'NOT met'} | "
            f"{busy(p['cpu'])} | same run |",
            f"| raw single-row INSERTs (asyncpg, {db['raw_inserts']['connections']} conns) | "
            f"{db['raw_inserts']['per_second']:,.0f}/s; HTTP/raw "
            f"{t['ratio_http_to_raw_inserts']:.1%} | reported | | same run |",
            "| the service's enqueue statement alone (asyncpg, autocommit) / the same with a "
            "NOTIFY in its transaction (the former trigger) | "
            f"{db['enqueue_statement']['per_second']:,.0f} / "
            f"{db['enqueue_statement_notify_in_txn']['per_second']:,.0f} per s | "
            "reported | | same run |",
        ]
    k = newest("pickup")
    if k:
        r = k["result"]
        c = r["commit_to_trigger_received"]
        rows.append(
            f"| pick-up, commit → trigger ({r['jobs']} jobs) | p50 {c['p50_ms']} ms, "
            f"p99 {c['p99_ms']} ms, max {c['max_ms']} ms | within 100 ms: "
            f"{'met' if k['target_met'] else 'NOT met'} | {busy(r['cpu'])} | "
            f"{machine(k['machine'])} |"
        )
    b = newest("backlog")
    if b:
        t = b["target"]
        deepest = next(
            r
            for r in b["scenarios"]
            if r["backlog"] == max(x["backlog"] for x in b["scenarios"])
            and r["tenants"] == max(x["tenants"] for x in b["scenarios"])
        )
        other = max(r["cpu"]["cores_busy"].get("other", 0.0) for r in b["scenarios"])
        rows.append(
            f"| claim round, {deepest['backlog']:,} queued over {deepest['tenants']:,} tenants "
            f"and {b['finished_in_table']:,} finished | round of 1: p50 "
            f"{deepest['claim_one']['p50_ms']} ms, p99 {deepest['claim_one']['p99_ms']} ms; "
            f"round of 20: p99 {deepest['claim_batch']['p99_ms']} ms; drain "
            f"{deepest['drain']['jobs_per_second']:,.0f} jobs/s (slowest / fastest backlog "
            f"{t['drain_ratio']:.2f}) | p99 ≤ 10 ms: {'met' if t['p99_met'] else 'NOT met'}; "
            f"drain flat: {'met' if t['drain_flat'] else 'NOT met'} | up to {other:.2f} | "
            f"{machine(b['machine'])} |"
        )
    r = newest("retention")
    if r:
        f = r["flat"]
        rows.append(
            f"| retention under steady load ({r['config']['rate']:g} jobs/s, "
            f"{r['config']['window']:g} s window) | jobs flat at {f['min']:,} to {f['max']:,} "
            f"after two windows | flat: {'met' if f['met'] else 'NOT met'} | | "
            f"{machine(r['machine'])} |"
        )
    c = newest("ceiling")
    if c:
        rows.append(ceiling_row(c))
    m = newest("long-media-eval")
    if m and "summary" in m:
        rows.append(long_media_eval_row(m))
    lc = newest("long-media-concurrency")
    if lc:
        rows.append(long_media_concurrency_row(lc))
    rows += [
        "",
        "Details, with every number: the `.md` and `.json` files in `bench/results/`. The "
        "`other load` column is the CPU that other processes used during the run; above "
        "about 0.2 cores the run shared the machine and its rates are low.",
    ]
    return "\n".join(rows)


def long_media_eval_row(m: dict[str, Any]) -> str:
    summary = m["summary"]
    ways = ", ".join(
        f"{way} {w['wer_percent']} % in {w['x_sequential']} x" for way, w in summary.items()
    )
    met = [
        way
        for way, w in summary.items()
        if w["files_within_half_point"] == w["files"] and w["x_sequential"] <= 0.5
    ]
    other = max(w["other_cores_mean"] for w in summary.values())
    files = next(iter(summary.values()))["files"]
    return (
        f"| long media, {files} recordings (real and espeak-ng), {m['model']}: WER and time "
        f"against sequential faster-whisper | {ways} | WER ≤ sequential + 0.5 on every file "
        f"in ≤ 0.5 x its time: {'met by ' + ', '.join(met) if met else 'NOT met'} | up to "
        f"{other:.2f} | {machine(m['machine'])} |"
    )


def long_media_concurrency_row(m: dict[str, Any]) -> str:
    """Audio seconds per wall second of the jobs at once, per way, and the two ratios."""
    ways, s = m["ways"], m["summary"]
    rates = "; ".join(f"{way}: {w['audio_seconds_per_second']}" for way, w in ways.items())
    jobs = m["jobs"]
    low, high = (round(f(j["seconds"] for j in jobs) / 60) for f in (min, max))
    length = f"about {low}" if low == high else f"{low} to {high}"
    other = max(w["other_cores"] for w in ways.values())
    return (
        f"| long media at once: {len(jobs)} jobs of {length} min, tiny.en, {m['threads']} "
        f"threads: audio s per wall s | {rates}; the service {s['service_x_sequential']} x the "
        f"best sequential, {s['service_x_batched']} x the best batched (with no more "
        f"threads) | ≥ 2 x sequential: {report_met(s['met_x_sequential'])}; ≥ 1 x batched: "
        f"{report_met(s['met_x_batched'])} | up to {other:.2f} | {machine(m['machine'])} |"
    )


def report_met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def ceiling_row(c: dict[str, Any]) -> str:
    """The pipeline's ceiling: the highest rate held, and what the CPU per job allows
    (from the hold, the phase with the most jobs, whether it held or not)."""
    hold = c.get("hold")
    phases = [*c["steps"], *([hold] if hold else [])]
    best = (
        hold
        if hold and hold["held"]
        else max((s for s in c["steps"] if s["held"]), key=lambda s: s["rate"], default=None)
    )
    rate = best["rate"] if best else None
    other = max(p["cpu_while_sending"]["cores_busy"].get("other", 0.0) for p in phases)
    held = f"held {best['seconds'] / 60:g} min" if best else "no step held"
    if hold and not hold["held"]:
        held += f"; the {hold['seconds'] / 60:g}-min hold at {hold['rate']:g}/s did not hold"
    cost = ""
    costly = hold or best
    if costly:
        ours = sum(
            v
            for k, v in costly["cpu_ms_per_job"].items()
            if k not in ("other", "postgres (shared)")
        )
        cost = (
            f"; {ours:.0f} CPU ms per job at {costly['rate']:g}/s in all (services, their "
            f"PostgreSQL backends, load generator, peers), i.e. "
            f"{c['machine']['nproc'] * 1000 / ours:.0f} jobs/s on free cores"
        )
    checks = c["checks"]
    once = (
        checks["jobs_delivered"] == checks["jobs"] and not checks["jobs_delivered_more_than_once"]
    )
    return (
        f"| pipeline ceiling, stand-in model (every job delivered once: "
        f"{once}) | "
        f"{rate if rate is not None else 'none'} jobs/s ({held}){cost} | ≥ 20 jobs/s: "
        f"{'met' if rate and rate >= 20 else 'NOT met'} | up to {other:.2f} | "
        f"{machine(c['machine'])} |"
    )


def main(argv: list[str] | None = None) -> int:
    readme = HERE / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{START}\n{table()}\n{END}{tail}")
    print(f"updated {readme}")
    return 0
