#!/usr/bin/env python3
"""The report of bench-policy-peers.sh: one table of times and memory, the per-rule finding counts
of every engine, and the check that they found the same violations.

    policy_report.py WORK_DIR

WORK_DIR holds, per run (a directory each, named in runs.tsv with its label and kind):
  time.K    `/usr/bin/time -f '%e %U %S %M'` of round K (GNU time may put a "Command exited with
            non-zero status" line first, for gpucap-policy's exit 1 on violations)
  result    the last round's output: gpucap's JSON report, or the Rego result set
  stderr    the last round's standard error (gpucap's --timings, opa_eval.py's phases)
and plan.json, the plan all of them read.

Exits 1 when two engines disagree on any rule's set of (rule, address) violations.
"""

import collections
import json
import os
import statistics
import sys
from pathlib import Path


def times(run_dir):
    """(wall, cpu, rss_kib) per round, in round order."""
    out = []
    files = sorted(run_dir.glob("time.*"), key=lambda p: int(p.suffix[1:]))
    for f in files:
        last = f.read_text().strip().splitlines()[-1]
        wall, user, sys_, rss = last.split()
        out.append((float(wall), float(user) + float(sys_), int(rss)))
    return out


def violations(kind, path):
    """{rule: set of addresses}. Every gpucap finding counts (failed, advisory, overridden,
    waived): the Rego side has no enforcement levels, only violations."""
    doc = json.loads(path.read_text())
    if kind == "gpucap":
        pairs = [(f["rule"], f["address"]) for f in doc["findings"]]
        # A rule that cannot be evaluated fails closed in gpucap, where Rego would leave the
        # violation undefined: the rules are written not to, and this says if one did.
        errors = sum(1 for f in doc["findings"] if f.get("evaluation_error"))
        if errors:
            print(f"warning: {path}: {errors} findings are evaluation errors", file=sys.stderr)
    else:
        result = doc.get("result") or []
        value = result[0]["expressions"][0]["value"] if result else []
        pairs = [(v["rule"], v["address"]) for v in value]
    found = collections.defaultdict(set)
    for rule, address in pairs:
        found[rule].add(address)
    return found, len(pairs)


def main():
    work = Path(sys.argv[1])
    runs = [line.split("\t") for line in (work / "runs.tsv").read_text().splitlines() if line]
    plan = json.loads((work / "plan.json").read_text())
    by_type = collections.Counter(rc["type"] for rc in plan["resource_changes"])
    size = (work / "plan.json").stat().st_size / 2**20
    print(
        f"\nplan: {by_type['gpucap_inference_endpoint']} endpoints, {by_type['gpucap_gpu_pool']} pools, "
        f"{by_type['gpucap_burst_policy']} burst policies ({sum(by_type.values())} resources, {size:.1f} MiB); "
        f"{os.cpu_count()} cores; best and median of {len(times(work / runs[0][0]))} rounds, run alternately\n"
    )

    rows, results = [], {}
    base_best = None
    for name, label, kind, compared in runs:
        t = times(work / name)
        walls = [w for w, _, _ in t]
        best, median = min(walls), statistics.median(walls)
        cpu = statistics.median(c for _, c, _ in t)
        rss = max(r for _, _, r in t) / 1024
        found, total = violations(kind, work / name / "result")
        if compared == "yes":
            results[name] = found
        if base_best is None:
            base_best = best
        rows.append((f"{name:9} {label}", best, median, cpu, rss, total, best / base_best))
    width = max(len(r[0]) for r in rows)
    print(f"{'run       engine':{width}}  {'wall best':>9}  {'median':>7}  {'CPU (median)':>12}  {'peak RSS':>9}  {'findings':>8}  {'vs gpucap (best)':>16}")
    for label, best, median, cpu, rss, total, ratio in rows:
        print(f"{label:{width}}  {best:8.2f}s  {median:6.2f}s  {cpu:11.2f}s  {rss:5.0f} MiB  {total:8d}  {ratio:15.2f}x")

    for name, _, _, _ in runs:
        err = (work / name / "stderr").read_text().strip()
        if err:
            print(f"\n{name}, last round's own account:\n  " + "\n  ".join(err.splitlines()))

    labels = list(results)
    rules = sorted(set().union(*(set(r) for r in results.values())))
    rule_width = max(len(r) for r in rules + ["rule"])
    col = max(len(lab) for lab in labels + ["findings"])
    print(f"\nviolations per rule, as distinct (rule, address) pairs:\n{'rule':{rule_width}}  " + "  ".join(f"{lab:>{col}}" for lab in labels))
    bad = []
    for rule in rules:
        sets = [results[lab].get(rule, set()) for lab in labels]
        same = all(s == sets[0] for s in sets)
        print(f"{rule:{rule_width}}  " + "  ".join(f"{len(s):>{col}}" for s in sets) + ("" if same else "  <- DIFFERENT"))
        if not same:
            bad.append((rule, sets))
    if bad:
        print("\nFAILED: the engines disagree:", file=sys.stderr)
        for rule, sets in bad:
            union = set().union(*sets)
            for lab, s in zip(labels, sets):
                missing = sorted(union - s)
                if missing:
                    print(f"  {rule}: {lab} lacks {len(missing)}, e.g. {missing[:5]}", file=sys.stderr)
        return 1
    print(f"\nall {len(labels)} compared runs found the same {sum(len(s) for s in results[labels[0]].values())} violations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
