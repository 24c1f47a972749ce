"""Command line the Snakemake rules call: `python -m allianceflow <command> ...`.

Project errors (bad data, bad metadata, failed gates) print one clear line and
exit with status 2 rather than a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .errors import DONE_MARK, AllianceFlowError


def _settings(args) -> dict:
    """Settings arrive as a JSON string (the rule's params), so that Snakemake reruns a
    fit exactly when its own settings change."""
    try:
        return json.loads(args.settings)
    except json.JSONDecodeError as exc:
        raise AllianceFlowError(f"--settings is not valid JSON: {exc}") from None


def cmd_clean_review(args) -> None:
    from .meta_stage import clean_review

    clean_review(args.raw, args.effects, args.info)


def cmd_fit_review(args) -> None:
    from .meta_stage import fit_review

    fit_review(args.effects, args.info, args.out, _settings(args))


def cmd_influence_review(args) -> None:
    from .meta_influence import influence_review

    influence_review(args.effects, args.info, args.out, _settings(args))


def cmd_clean_trial(args) -> None:
    from .trial_stage import clean_trial

    clean_trial(args.raw, args.out)


def cmd_fit_trial_analysis(args) -> None:
    from .analysis_stage import fit_trial_analysis

    fit_trial_analysis(args.sessions, args.patients, args.info, args.analysis, args.out,
                  _settings(args))


def cmd_kfold_trial_analysis(args) -> None:
    from .trial_kfold import kfold_trial_analysis

    kfold_trial_analysis(args.sessions, args.patients, args.info, args.posterior,
                         args.analysis, args.out, _settings(args))


def cmd_compare_trial(args) -> None:
    from .trial_kfold import compare_trial

    compare_trial(args.kfold, args.out)


def cmd_sbc_batch(args) -> None:
    from .sbc import sbc_batch

    sbc_batch(args.family, args.batch, args.clean_dir, _settings(args), args.out)


def cmd_sbc_summary(args) -> None:
    from .sbc import sbc_summary

    sbc_summary(args.batches, args.prob, args.ranks, args.summary, args.ecdf)


def cmd_clear_stale_locks(args) -> None:
    from .locks import clear_stale_locks

    for lock in clear_stale_locks(args.project):
        print(f"removed a stale Snakemake lock left by an interrupted run: {lock}")


def cmd_index(args) -> None:
    from .reports import write_index

    write_index(args.reports_dir, args.fits_dir, args.clean_dir, args.out,
                reviews=args.reviews or [], trials=args.trials or [], logs_dir=args.logs_dir)


def cmd_render(args) -> None:
    from .reports import render_notebook

    render_notebook(args.template, args.notebook, args.html, json.loads(args.parameters),
                    kernel=args.kernel)


def cmd_synthesize(args) -> None:
    from .synthetic import write_default_data

    for folder in write_default_data(args.raw_dir):
        print(f"wrote {folder}")


def cmd_env_yml(args) -> None:
    from .envfiles import environment_yml

    sys.stdout.write(environment_yml(Path(args.lock).read_text()))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="allianceflow", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("clean-review", help="validate and clean one review folder")
    s.add_argument("--raw", required=True)
    s.add_argument("--effects", required=True)
    s.add_argument("--info", required=True)
    s.set_defaults(func=cmd_clean_review)

    for name, func, text in [
        ("fit-review", cmd_fit_review, "fit the meta-analysis models of one review"),
        ("influence-review", cmd_influence_review,
         "leave-one-study-out and cumulative refits of one review's primary model"),
    ]:
        s = sub.add_parser(name, help=text)
        s.add_argument("--effects", required=True)
        s.add_argument("--info", required=True)
        s.add_argument("--settings", required=True,
                       help="JSON object with the validated sampler, meta and checks settings")
        s.add_argument("--out", required=True)
        s.set_defaults(func=func)

    s = sub.add_parser("clean-trial", help="validate and clean one trial folder")
    s.add_argument("--raw", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_clean_trial)

    s = sub.add_parser("fit-trial-analysis",
                       help="fit one analysis of one trial (as its trial.yaml asks)")
    for arg in ("--sessions", "--patients", "--info", "--analysis", "--out"):
        s.add_argument(arg, required=True)
    s.add_argument("--settings", required=True,
                   help="JSON object with the validated sampler and checks settings")
    s.set_defaults(func=cmd_fit_trial_analysis)

    s = sub.add_parser("kfold-trial-analysis",
                       help="leave-patients-out refits of one trial analysis (kfold.csv)")
    for arg in ("--sessions", "--patients", "--info", "--posterior", "--analysis", "--out"):
        s.add_argument(arg, required=True)
    s.add_argument("--settings", required=True,
                   help="JSON object with the validated sampler and checks settings")
    s.set_defaults(func=cmd_kfold_trial_analysis)

    s = sub.add_parser("compare-trial",
                       help="compare a trial's analyses of the same data (comparison.csv)")
    s.add_argument("--kfold", nargs="*", default=[], help="the analyses' kfold.csv files")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_compare_trial)

    s = sub.add_parser("sbc-batch", help="simulation-based calibration: one job's simulations")
    s.add_argument("--family", required=True)
    s.add_argument("--batch", required=True, type=int)
    s.add_argument("--clean-dir", required=True)
    s.add_argument("--settings", required=True,
                   help="JSON object with the sbc settings and the family's template")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sbc_batch)

    s = sub.add_parser("sbc-summary", help="simulation-based calibration: one family's test")
    s.add_argument("--batches", required=True, nargs="+")
    s.add_argument("--prob", required=True, type=float)
    for arg in ("--ranks", "--summary", "--ecdf"):
        s.add_argument(arg, required=True)
    s.set_defaults(func=cmd_sbc_summary)

    s = sub.add_parser("render", help="execute a report notebook with papermill, render HTML")
    s.add_argument("--template", required=True)
    s.add_argument("--notebook", required=True)
    s.add_argument("--html", required=True)
    s.add_argument("--parameters", required=True, help="JSON object of notebook parameters")
    s.add_argument("--kernel", default="python3")
    s.set_defaults(func=cmd_render)

    s = sub.add_parser("index", help="write reports/index.html")
    s.add_argument("--reports-dir", required=True)
    s.add_argument("--fits-dir", required=True)
    s.add_argument("--clean-dir", required=True)
    s.add_argument("--reviews", nargs="*")
    s.add_argument("--trials", nargs="*")
    s.add_argument("--logs-dir", default="logs",
                   help="job logs; a dataset with an error there is listed as failed")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("clear-stale-locks",
                       help="remove Snakemake's locks if no Snakemake runs in the project")
    s.add_argument("--project", default=".")
    s.set_defaults(func=cmd_clear_stale_locks)

    s = sub.add_parser("synthesize", help="(re)write the synthetic default datasets")
    s.add_argument("raw_dir")
    s.set_defaults(func=cmd_synthesize)

    s = sub.add_parser("env-yml", help="print environment.yml for a pip lock")
    s.add_argument("lock")
    s.set_defaults(func=cmd_env_yml)
    return p


COMPILING = (cmd_fit_review, cmd_influence_review, cmd_fit_trial_analysis,
             cmd_kfold_trial_analysis, cmd_sbc_batch)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # the package's own messages (e.g. whether a model's compiled code came from the cache)
    # go to the job's log
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("allianceflow").setLevel(logging.INFO)
    from . import rewrite_cache

    # only the commands that compile models import PyTensor (the index, for one, must be
    # written even where PyTensor cannot start)
    if args.func in COMPILING and os.environ.get("ALLIANCEFLOW_REWRITE_CACHE", "1") != "0":
        rewrite_cache.install()
    try:
        args.func(args)
    except AllianceFlowError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    if any(rewrite_cache.stats().values()):
        logging.getLogger("allianceflow.rewrite_cache").info(
            "rewritten graphs: %(loaded)d loaded, %(stored)d stored, %(uncached)d not cached",
            rewrite_cache.stats())
    # the last line of a job's log says it finished: libraries may log tracebacks of
    # errors they recovered from (PyTensor's graph rewriter does), which are not failures
    print(f"{DONE_MARK}{(argv or sys.argv[1:])[0]}", file=sys.stderr)
    return 0
