"""Benchmarks against the reference implementations, and how cost grows.

One command (`make bench`, or `.venv/bin/python bench/run.py`) runs every case it can on
this machine and writes bench/RESULTS.md (date, machine, versions, commands, raw figures,
medians and ratios) and bench/results.json (the same, machine-readable).

Cases (bench/cases.py): M1 three-level meta-analysis (ours, brms, metafor REML), M2 the
growth model on 300 patients x 12 sessions (ours, brms, lme4 REML), M3 within-person
mediation on bmlm's data (ours, brms); scaling of ours with 100 / 1,000 / 10,000 effect
sizes and 100 / 1,000 / 5,000 patients, the largest of each against brms too
(`scaling_brms`); and the workflow's rebuild times (bench/workflow.py).

Every fit runs in a process of its own, so that its wall time is the whole process's
(imports, model build, compilation, sampling) and its peak memory its own. Sides
alternate within each repetition (ours first in odd repetitions, the reference first in
even ones). Both sides: the same data, the same priors, 4 chains x 1000 draws after 1000
warm-up steps, two chains at a time on 2 cores, target acceptance 0.95.

Run one case: bench/run.py --cases M1 --reps 1. Fit one side only (what the parent
runs): bench/run.py --child ours --cases M1 --out DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

GOAL_ESS_RATIO = 10.0  # min bulk ESS per second of sampling, ours / brms
GOAL_WALL_RATIO = 0.1  # whole-process wall time, ours / brms
OUR_SIDES = ("ours", "before")  # before: nutpie's own compilation (see fit_ours)
SCALING = {"meta": ("meta_100", "meta_1000", "meta_10000"),
           "growth": ("growth_100", "growth_1000", "growth_5000")}
SCALING_BRMS = ("meta_10000", "growth_5000")  # the largest of each series, against brms
# scaling_brms stops brms at this many times our wall time over the goal's ratio: the ratio
# is then known to be below 1 / BRMS_STOP of the goal, without waiting hours for Stan
BRMS_STOP = 1.25


# ---- one fit, in its own process -----------------------------------------------------


def fit_ours(case_name: str, out: Path, s: dict[str, Any], side: str = "ours") -> None:
    """Build, compile and sample our model; write draws.csv of the compared parameters
    under our names and timing.json. Side `ours` compiles as the workflow does
    (allianceflow.compiled: nutpie's callbacks loaded from Numba's disk cache); side
    `before` compiles with nutpie.compile_pymc_model, as the workflow did before that
    (its callbacks recompiled in every process). Both sample the same draws."""
    import nutpie
    from cases import CASES, derived

    start = time.perf_counter()
    case = CASES[case_name]()
    if side == "ours":
        from allianceflow.compiled import compile_model

        compiled = compile_model(case.build())
    else:
        compiled = nutpie.compile_pymc_model(case.build())
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    tree = nutpie.sample(compiled, draws=s["draws"], tune=s["tune"], chains=s["chains"],
                         cores=s["cores"], seed=s["seed"], progress_bar=False,
                         target_accept=s["target_accept"])
    sample_s = time.perf_counter() - start
    post = tree["posterior"].to_dataset()
    extra = derived(case_name, post)
    if extra is not None:
        post = post.merge(extra)
    frame = post[list(case.compare)].to_dataframe().reset_index()
    frame = frame.rename(columns={"chain": ".chain", "draw": ".iteration"})
    frame.to_csv(out / "draws.csv", index=False)
    divergences = int(tree["sample_stats"]["diverging"].sum())
    (out / "timing.json").write_text(json.dumps(
        {"compile_s": compile_s, "sample_s": sample_s, "divergences": divergences}))


def one_fit(case, side: str, out: Path, s: dict[str, Any],
            limit_s: float | None = None) -> dict[str, Any]:
    """Run one side's fit of a case in a child process; its figures. With `limit_s`, a
    fit still running after that long is stopped and recorded as unfinished."""
    out.mkdir(parents=True, exist_ok=True)
    if side in OUR_SIDES:
        cmd = [sys.executable, str(HERE / "run.py"), "--child", side, "--cases", case.name,
               "--out", str(out), "--settings", json.dumps(s)]
        names = {n: n for n in case.compare}
    else:
        case.rows.to_csv(out / "data.csv", index=False)
        settings = {**s, **(case.brms if side == "brms" else case.ml)}
        if side == "brms":
            settings["keep"] = list(case.compare.values())
        harness.write_settings(out / "settings.json", settings)
        script = "brms_fit.R" if side == "brms" else "ml_fit.R"
        cmd = ["Rscript", str(HERE / "r" / script), str(out / "data.csv"),
               str(out / "settings.json"), str(out)]
        names = case.compare if side == "brms" else None
    record = {"case": case.name, "side": side,
              **harness.measured(cmd, out / "log.txt", limit_s=limit_s)}
    if not record["finished"]:
        return record
    if side in ("metafor", "lme4"):
        est = json.loads((out / "estimates.json").read_text())
        record["fit_s"] = est["fit_s"]
        # a variance at its boundary gives R's NaN for its correlation (written "NaN")
        record["means"] = {ours: float(est["estimates"][theirs])
                           for ours, theirs in case.ml_compare.items()}
        return record
    timing = json.loads((out / "timing.json").read_text())
    post = harness.draws_table(out / "draws.csv", names)
    record.update(timing)
    record.update(harness.efficiency(post, timing["sample_s"]))
    record["means"] = harness.means(post)
    return record


# ---- cases ---------------------------------------------------------------------------


def reference_case(name: str, reps: int, s: dict[str, Any], work: Path) -> list[dict]:
    """Ours against brms and the ML reference, alternating sides."""
    from cases import CASES

    case = CASES[name]()
    sides = [*OUR_SIDES, "brms"] + ([case.ml["tool"]] if case.ml else [])
    records = []
    # PyTensor's compile cache (shared by both our sides) warmed once, untimed: the
    # repetitions measure a fit on a machine that has compiled the model before
    print(f"  {name}: warm-up fit (not timed)", flush=True)
    one_fit(case, "ours", work / name / "warmup", s)
    for rep in range(1, reps + 1):
        order = sides if rep % 2 else sides[::-1]
        for side in order:
            print(f"  {name} rep {rep}: {side}", flush=True)
            record = one_fit(case, side, work / name / f"{side}_{rep}", s)
            records.append({**record, "rep": rep})
    return records


def scaling_case(names: tuple[str, ...], reps: int, s: dict[str, Any], work: Path,
                 budget_s: float) -> list[dict]:
    """Ours alone, growing data; stops a series once a fit takes longer than budget_s
    (the next size would take longer still)."""
    from cases import CASES

    records = []
    for name in names:
        case = CASES[name]()
        for rep in range(1, reps + 1):
            print(f"  {name} rep {rep}", flush=True)
            record = one_fit(case, "ours", work / name / f"ours_{rep}", s)
            records.append({**record, "rep": rep, "rows": int(len(case.rows))})
        if record["wall_s"] > budget_s:
            print(f"  {name} took {record['wall_s']:.0f} s: larger sizes skipped", flush=True)
            break
    return records


def scaling_reference(names: tuple[str, ...], s: dict[str, Any], work: Path,
                      limit_s: float) -> list[dict]:
    """The largest scaling fits, ours and brms side by side (one repetition each, ours
    first). A brms fit is stopped once it has run BRMS_STOP / GOAL_WALL_RATIO times as long
    as ours, or after `limit_s`: its
    wall time is then a lower bound, and so the ratio an upper bound."""
    from cases import CASES

    records = []
    for name in names:
        case = CASES[name]()
        print(f"  {name}: ours", flush=True)
        ours = one_fit(case, "ours", work / name / "ours_ref", s)
        stop_after = min(limit_s, BRMS_STOP * ours["wall_s"] / GOAL_WALL_RATIO)
        print(f"  {name}: brms (stopped after {stop_after:.0f} s)", flush=True)
        brms = one_fit(case, "brms", work / name / "brms_ref", s, limit_s=stop_after)
        records += [{**r, "rep": 1, "rows": int(len(case.rows))} for r in (ours, brms)]
    return records


def scaling_reference_table(records: list[dict], limit_s: float | None,
                            run: dict[str, Any] | None) -> list[str]:
    where = ([f"Run on {run['date']}, {run['machine']['cpu']}, {run['machine']['cores']} "
              f"cores, {run['machine']['memory_gib']} GiB (compare within this table).", ""]
             if run else [])
    lines = [*where, "| case | rows | ours: wall (s) | brms: wall (s) | wall ours ÷ brms | "
             "ours: compile (s) | brms: compile (s) | ours: min bulk ESS / s | "
             "brms: min bulk ESS / s | ours: max R-hat | brms: max R-hat | "
             "peak MiB ours / brms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in dict.fromkeys(r["case"] for r in records):
        ours = next(r for r in records if r["case"] == case and r["side"] == "ours")
        brms = next(r for r in records if r["case"] == case and r["side"] == "brms")
        if brms.get("finished", True):
            wall, ratio = fmt(brms["wall_s"]), f"**{ours['wall_s'] / brms['wall_s']:.3f}**"
            ess, rhat, comp = (fmt(brms["min_bulk_ess_per_s"]), f"{brms['max_rhat']:.3f}",
                               fmt(brms["compile_s"]))
        else:
            wall = f"> {brms['wall_s']:.0f} (stopped, unfinished)"
            ratio = f"**< {ours['wall_s'] / brms['wall_s']:.3f}**"
            ess = rhat = comp = "–"
        lines.append(f"| {case} | {ours['rows']:,} | {fmt(ours['wall_s'])} | {wall} | {ratio} | "
                     f"{fmt(ours['compile_s'])} | {comp} | {fmt(ours['min_bulk_ess_per_s'])} | "
                     f"{ess} | {ours['max_rhat']:.3f} | {rhat} | {fmt(ours['peak_mib'], 0)} / "
                     f"{fmt(brms['peak_mib'], 0)} |")
    note = (f"A brms fit still running after {BRMS_STOP:g} ÷ the goal's ratio times our wall "
            "time (or "
            f"{limit_s:.0f} s) was stopped; its wall time is then a lower bound, so the ratio "
            "an upper bound. " if limit_s else "")
    return [*lines, "", note + f"Goal for the ratio: ≤ {GOAL_WALL_RATIO:g}.", ""]


# ---- the report ----------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {p: metadata.version(p) for p in ("pymc", "pytensor", "nutpie", "arviz", "numpy")}
    r = subprocess.run(["Rscript", "-e", "for (p in c('brms','rstan','metafor','lme4')) "
                        "cat(p, as.character(packageVersion(p)), '\\n'); cat(R.version.string)"],
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith("R version"):
            out["R"] = line.split()[2]
        elif line.strip():
            name, version = line.split()[:2]
            out[name] = version
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                / 2**30, 1)}


def summarise(records: list[dict]) -> dict[str, dict[str, float]]:
    """Medians per (case, side) of every figure."""
    keys = ("wall_s", "peak_mib", "compile_s", "sample_s", "fit_s", "min_bulk_ess",
            "min_tail_ess", "max_rhat", "min_bulk_ess_per_s", "divergences")
    out: dict[str, dict[str, float]] = {}
    for case in dict.fromkeys(r["case"] for r in records):
        for side in dict.fromkeys(r["side"] for r in records if r["case"] == case):
            mine = [r for r in records if r["case"] == case and r["side"] == side]
            out[f"{case}/{side}"] = {k: harness.median([r[k] for r in mine if k in r])
                                     for k in keys if any(k in r for r in mine)}
            out[f"{case}/{side}"]["reps"] = len(mine)
    return out


def fmt(x: float, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def reference_tables(records: list[dict], medians: dict) -> list[str]:
    lines = []
    for case in dict.fromkeys(r["case"] for r in records if r["side"] == "brms"):
        sides = [k.split("/")[1] for k in medians if k.startswith(case + "/")]
        lines += [f"### {case}", "",
                  "| figure (median over repetitions) | " + " | ".join(sides) + " |",
                  "|---|" + "---|" * len(sides)]
        for key, label, d in (("wall_s", "whole-process wall time (s)", 1),
                              ("compile_s", "compile / setup (s)", 1),
                              ("sample_s", "sampling (s)", 1), ("fit_s", "fit (s)", 2),
                              ("min_bulk_ess", "min bulk ESS", 0),
                              ("min_tail_ess", "min tail ESS", 0),
                              ("min_bulk_ess_per_s", "min bulk ESS / s of sampling", 1),
                              ("divergences", "divergences", 0), ("max_rhat", "max R-hat", 3),
                              ("peak_mib", "peak memory (MiB)", 0)):
            lines.append(f"| {label} | " + " | ".join(
                fmt(medians[f"{case}/{s}"].get(key), d) for s in sides) + " |")
        ours, brms = medians[f"{case}/ours"], medians[f"{case}/brms"]
        before = medians.get(f"{case}/before")
        ess_ratio = ours["min_bulk_ess_per_s"] / brms["min_bulk_ess_per_s"]
        wall_ratio = ours["wall_s"] / brms["wall_s"]
        for side in (*OUR_SIDES, "brms"):
            bad = [r for r in records if r["case"] == case and r["side"] == side
                   and (r["max_rhat"] > 1.01 or r["min_bulk_ess"] < 400 or r["divergences"])]
            if bad:
                worst = ", ".join(sorted({r["worst_parameter"] for r in bad}))
                lines += ["", f"**{side} failed the convergence gate** (R-hat ≤ 1.01, bulk ESS "
                          f"≥ 400, no divergences) in {len(bad)} of "
                          f"{sum(r['case'] == case and r['side'] == side for r in records)} "
                          f"repetitions; lowest ESS: {worst}. Its ESS per second is that of a "
                          "fit that does not pass its own checks."]
        lines += ["", f"Ratios ours ÷ brms: min bulk ESS per second of sampling "
                  f"**{ess_ratio:.1f}×** (goal ≥ {GOAL_ESS_RATIO:g}×: "
                  f"{'met' if ess_ratio >= GOAL_ESS_RATIO else 'missed'}); whole-process wall "
                  f"time **{wall_ratio:.2f}** (goal ≤ {GOAL_WALL_RATIO:g}: "
                  f"{'met' if wall_ratio <= GOAL_WALL_RATIO else 'missed'})"
                  + (f"; before (nutpie's own compilation, as the workflow compiled until "
                     f"2026-12-01) ÷ brms: **{before['wall_s'] / brms['wall_s']:.2f}**"
                     if before else "") + ".", ""]
        lines += means_table(case, records)
        lines += raw_table(case, records)
    return lines


def raw_table(case: str, records: list[dict]) -> list[str]:
    lines = [f"Raw figures, {case}, per repetition:", "",
             "| rep | side | wall (s) | compile (s) | sampling (s) | min bulk ESS | "
             "lowest-ESS parameter | min tail ESS | max R-hat | divergences | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in records if r["case"] == case):
        if "sample_s" in r:
            lines.append(
                f"| {r['rep']} | {r['side']} | {r['wall_s']:.1f} | {r['compile_s']:.1f} | "
                f"{r['sample_s']:.1f} | {r['min_bulk_ess']:.0f} | {r['worst_parameter']} | "
                f"{r['min_tail_ess']:.0f} | {r['max_rhat']:.3f} | {r['divergences']} | "
                f"{r['peak_mib']:.0f} |")
        else:
            lines.append(f"| {r['rep']} | {r['side']} | {r['wall_s']:.1f} | – | "
                         f"fit {r['fit_s']:.2f} | – | – | – | – | – | {r['peak_mib']:.0f} |")
    return [*lines, ""]


def means_table(case: str, records: list[dict]) -> list[str]:
    mine = [r for r in records if r["case"] == case]
    sides = list(dict.fromkeys(r["side"] for r in mine))
    params = list(mine[0]["means"])
    avg = {s: {p: float(np.mean([r["means"][p] for r in mine if r["side"] == s]))
               for p in params} for s in sides}
    lines = ["Posterior means (ML: REML point estimates), averaged over repetitions:", "",
             "| parameter | " + " | ".join(sides) + " |", "|---|" + "---|" * len(sides)]
    for p in params:
        lines.append(f"| {p} | " + " | ".join(f"{avg[s][p]:.4f}" for s in sides) + " |")
    return [*lines, ""]


def scaling_table(records: list[dict]) -> list[str]:
    lines = ["| case | rows | whole-process wall (s) | sampling (s) | compile (s) | "
             "min bulk ESS | lowest-ESS parameter | divergences | max R-hat | "
             "peak memory (MiB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['case']} | {r['rows']:,} | {fmt(r['wall_s'])} | "
                     f"{fmt(r['sample_s'])} | {fmt(r['compile_s'])} | "
                     f"{fmt(r['min_bulk_ess'], 0)} | {r['worst_parameter']} | "
                     f"{r['divergences']} | {r['max_rhat']:.3f} | {fmt(r['peak_mib'], 0)} |")
    return [*lines, ""]


def write_results(result: dict[str, Any], path_md: Path, path_json: Path) -> None:
    path_json.write_text(json.dumps(result, indent=1, default=float) + "\n")
    s = result["settings"]
    runs = result.get("runs") or [old_run(result)]
    reps = ", ".join(f"{k} {v}" for k, v in result["reps"].items()
                     if k in {r["case"] for r in result["reference"]})
    lines = [
        "# Benchmark results", "",
        "Written by " + "; then ".join(f"`{r['command']}` on {r['date']} ({r['minutes']:.0f} min)"
                                       for r in runs) + ". Raw figures: `results.json`.", "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"{result['machine']['memory_gib']} GiB; {result['machine']['platform']}.", "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".", "",
        f"Sampler settings (both sides): {s['chains']} chains × {s['draws']} draws after "
        f"{s['tune']} warm-up steps, {s['cores']} chains at a time, target acceptance "
        f"{s['target_accept']}. Repetitions per case: {reps or 'none'}, sides alternating "
        "(ours first in odd repetitions); figures are medians over repetitions.", ""]
    if result.get("reference"):
        lines += ["## Against the references", ""]
        lines += reference_tables(result["reference"], result["medians"])
    if result.get("scaling"):
        lines += ["## Scaling (ours)", ""] + scaling_table(result["scaling"])
    if result.get("scaling_reference"):
        lines += ["## Scaling against brms (the largest fits)", ""] + scaling_reference_table(
            result["scaling_reference"], result.get("brms_limit_s"),
            result.get("scaling_reference_run"))
    if result.get("workflow"):
        import workflow

        lines += ["## Workflow rebuilds", ""] + workflow.table(result["workflow"]["runs"]) + [""]
    if result.get("skipped"):
        lines += ["## Not run", ""] + [f"- {x}" for x in result["skipped"]] + [""]
    # figures this script does not take (the test suite, a fresh clone's `make run`), each
    # dated with its command, kept in their own file so that a new run does not drop them
    by_hand = path_md.parent / "by_hand.md"
    if by_hand.exists():
        lines += [by_hand.read_text().rstrip(), ""]
    path_md.write_text("\n".join(lines))


def repetitions(text: str, cases: list[str]) -> dict[str, int]:
    if "=" not in text:
        return {c: int(text) for c in cases}
    given = dict(item.split("=") for item in text.split(","))
    return {c: int(given.get(c, 3)) for c in cases}


def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """An earlier run's results with this run's sections put in: reference cases by
    case, scaling and workflow whole. Each part keeps its own date and command."""
    redone = {r["case"] for r in new["reference"]}
    out = dict(old)
    out["reference"] = [r for r in old.get("reference", []) if r["case"] not in redone]
    out["reference"] += new["reference"]
    for key in ("scaling", "scaling_reference", "brms_limit_s", "scaling_reference_run",
                "workflow"):
        if new.get(key):
            out[key] = new[key]
    out["reps"] = {**old.get("reps", {}), **new["reps"]}
    out["runs"] = [*old.get("runs", [old_run(old)]), old_run(new)]
    out["skipped"] = new["skipped"]
    out["wall_minutes"] = old.get("wall_minutes", 0) + new["wall_minutes"]
    return out


def old_run(result: dict[str, Any]) -> dict[str, Any]:
    return {"command": result["command"], "date": result["date"],
            "minutes": result.get("wall_minutes", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="M1,M2,M3,scaling,scaling_brms,workflow")
    parser.add_argument("--reps", default="3",
                        help="repetitions: a number, or per case, e.g. M1=3,M2=1,M3=1")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--scaling-budget", type=float, default=1200.0,
                        help="stop a scaling series after a fit longer than this (s)")
    parser.add_argument("--brms-limit", type=float, default=2400.0,
                        help="scaling_brms: stop a brms fit still running after this (s)")
    parser.add_argument("--results", default=str(HERE))
    parser.add_argument("--merge", action="store_true",
                        help="keep the sections of an earlier results.json that this run "
                             "does not redo")
    parser.add_argument("--child", choices=OUR_SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true",
                        help="only write RESULTS.md again from results.json")
    args = parser.parse_args()
    if args.render:
        results = Path(args.results)
        write_results(json.loads((results / "results.json").read_text()),
                      results / "RESULTS.md", results / "results.json")
        return
    if args.child:
        fit_ours(args.cases, Path(args.out), json.loads(args.settings), args.child)
        return
    s = {"draws": args.draws, "tune": args.tune, "chains": args.chains, "cores": 2,
         "seed": args.seed, "target_accept": 0.95}
    cases = args.cases.split(",")
    reps = repetitions(args.reps, cases)
    missing = harness.r_available()
    started, t0 = datetime.now(UTC), time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="allianceflow_bench_"))
    result: dict[str, Any] = {
        "command": "bench/run.py " + " ".join(sys.argv[1:]), "date": started.isoformat(
            timespec="seconds"), "machine": machine(), "settings": s, "reps": reps,
        "reference": [], "scaling": [], "skipped": []}
    result["versions"] = versions() if not missing else {}
    for name in [c for c in cases if c in ("M1", "M2", "M3")]:
        if missing:
            result["skipped"].append(f"{name}: R packages missing ({missing})")
            continue
        print(f"{name}", flush=True)
        result["reference"] += reference_case(name, reps[name], s, work)
    if "scaling" in cases:
        for series in SCALING.values():
            result["scaling"] += scaling_case(series, 1, s, work, args.scaling_budget)
    if "scaling_brms" in cases:
        if missing:
            result["skipped"].append(f"scaling_brms: R packages missing ({missing})")
        else:
            result["scaling_reference"] = scaling_reference(SCALING_BRMS, s, work,
                                                            args.brms_limit)
            result["brms_limit_s"] = args.brms_limit
            result["scaling_reference_run"] = {"date": result["date"], "machine": machine()}
    if "workflow" in cases:
        import workflow

        result["workflow"] = workflow.rebuild_times(work / "workflow")
    result["wall_minutes"] = (time.perf_counter() - t0) / 60
    results = Path(args.results)
    if args.merge and (results / "results.json").exists():
        result = merged(json.loads((results / "results.json").read_text()), result)
    result["medians"] = summarise(result["reference"])
    write_results(result, results / "RESULTS.md", results / "results.json")
    print(f"wrote {results / 'RESULTS.md'} (work files in {work})")
    shutil.rmtree(work / "workflow", ignore_errors=True)


if __name__ == "__main__":
    main()
