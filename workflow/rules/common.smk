# Configuration validation, dataset discovery and input functions.
# Statistics live in the allianceflow package; rules only call its command line.

import json
import os
from pathlib import Path

import yaml

from allianceflow.config import validate_config
from allianceflow.io import TABLE_SUFFIXES

# Validate before any job starts: unknown keys and bad values stop here, naming the key.
config.update(
    validate_config(config, Path(workflow.basedir) / "config" / "config.schema.yaml", "config")
)

RAW = config["raw_dir"]

# PyTensor's compile cache inside the project folder, which every cluster node reaches
# (the project must sit on a shared filesystem anyway); PyTensor locks it while it
# compiles, so concurrent jobs share it safely. A PYTENSOR_FLAGS set by the user wins.
os.environ.setdefault(
    "PYTENSOR_FLAGS", f"base_compiledir={Path(workflow.basedir, '.cache', 'pytensor')}"
)


def discover(kind):
    """Each sub-folder of data/raw/<kind>/ is one dataset (hidden folders ignored)."""
    root = Path(RAW) / kind
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


REVIEWS = discover("meta")
TRIALS = discover("trials")


def trial_analyses(trial):
    """{name: type} of the analyses a trial's trial.yaml asks for. A trial.yaml that does
    not parse gives none here: its cleaning job reports the error."""
    try:
        meta = yaml.safe_load((Path(RAW) / "trials" / trial / "trial.yaml").read_text())
        return {a["name"]: a["type"] for a in meta.get("analyses", [])}
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        return {}


def trial_fits(wildcards):
    """Summary, diagnostics and posterior of every analysis of one trial."""
    names = trial_analyses(wildcards.trial)
    fits = f"data/fits/trials/{wildcards.trial}"
    return {
        "summaries": [f"{fits}/{a}/summary.csv" for a in names],
        "diagnostics": [f"{fits}/{a}/diagnostics.json" for a in names],
        "posteriors": [f"{fits}/{a}/posterior.nc" for a in names],
        "checks": [f"{fits}/{a}/{f}" for a in names for f in CHECK_FILES],
        "kfold": [f"{fits}/{a}/kfold.csv" for a in names],
    }


CHECK_FILES = ("checks.json", "ppc.csv", "ppc_curves.csv", "loo_pit.csv", "sensitivity.csv",
               "priors.csv")


# The package modules each analysis type's results are computed by (see package_code).
FIT_CODE = ("analysis_stage.py", "analyses.py", "fitting.py", "compiled.py", "checks.py",
            "models/predictive.py", "models/structure.py", "provenance.py")
GROWTH_CODE = ("trial_models_stage.py", "models/multilevel.py", "models/gaussian.py")
ANALYSIS_CODE = {
    "growth": (*GROWTH_CODE, "models/growth.py"),
    "moderation": (*GROWTH_CODE, "models/growth.py"),
    "early_alliance": (*GROWTH_CODE, "models/early_alliance.py"),
    "riclpm": ("trial_models_stage.py", "models/riclpm.py"),
    "sequential_mediation": ("mediation_stage.py", "models/gaussian.py",
                             "models/sequential_mediation.py"),
    "within_mediation": ("mediation_stage.py", "models/gaussian.py",
                         "models/within_mediation.py"),
}


def analysis_code(wildcards):
    kind = trial_analyses(wildcards.trial).get(wildcards.analysis)
    return package_code(*FIT_CODE, *ANALYSIS_CODE.get(kind, ()))


# Longest first: with jobs side by side, a slow fit that starts late is the run's tail (the
# default RI-CLPM, the slowest job, started 12 of 18 minutes into a cold run when the
# scheduler's order was arbitrary). Order from the cold job times in bench/RESULTS.md;
# the reviews' fits and every other rule keep priority 0.
FIT_PRIORITY = {"riclpm": 6, "moderation": 5, "growth": 4, "within_mediation": 3,
                "sequential_mediation": 2, "early_alliance": 1}


def fit_priority(wildcards):
    return FIT_PRIORITY.get(trial_analyses(wildcards.trial).get(wildcards.analysis), 0)


def kfold_code(wildcards):
    return analysis_code(wildcards) + package_code("trial_kfold.py")


wildcard_constraints:
    review=r"[A-Za-z0-9_.\-]+",
    trial=r"[A-Za-z0-9_.\-]+",
    analysis=r"[A-Za-z0-9_]+",


def table_file(folder, stem):
    """The raw table <stem>.csv|.xlsx|.sav in a dataset folder (cleaning reports if absent)."""
    for suffix in TABLE_SUFFIXES:
        path = Path(folder) / f"{stem}{suffix}"
        if path.exists():
            return str(path)
    return []


def optional(path):
    return [str(path)] if Path(path).exists() else []


def package_code(*modules):
    """The package modules a rule's results are computed by, as inputs: editing one
    reruns exactly the rules that use it (Snakemake's own `code` trigger only sees the
    rule's shell command)."""
    return [f"{PACKAGE}/{m}" for m in modules]


PACKAGE = "workflow/allianceflow"
CLEAN_REVIEW_CODE = package_code("effects.py", "tables.py", "io.py", "config.py",
                                 "schemas/review.schema.yaml")
CLEAN_TRIAL_CODE = package_code("trials.py", "scoring.py", "tables.py", "io.py", "config.py",
                                "schemas/trial.schema.yaml")


def review_inputs(wildcards):
    folder = Path(RAW) / "meta" / wildcards.review
    return {"effects": table_file(folder, "effects"), "meta": optional(folder / "review.yaml"),
            "code": CLEAN_REVIEW_CODE}


def trial_inputs(wildcards):
    folder = Path(RAW) / "trials" / wildcards.trial
    return {
        "patients": table_file(folder, "patients"),
        "sessions": table_file(folder, "sessions"),
        "meta": optional(folder / "trial.yaml"),
        "code": CLEAN_TRIAL_CODE,
    }


def truth_file(kind, name):
    return optional(Path(RAW) / kind / name / "truth.yaml")


def fit_settings(keys=("sampler", "meta", "checks")):
    """Only the settings a fit depends on: changing them reruns the fits, nothing else.
    The trial analyses' own draws (sampler.draws_by_analysis) are left to
    trial_fit_settings, so that changing one type's reruns only that type's fits."""
    settings = {k: config[k] for k in keys}
    if "sampler" in settings:
        settings["sampler"] = {k: v for k, v in config["sampler"].items()
                               if k != "draws_by_analysis"}
    return json.dumps(settings, sort_keys=True)


def trial_fit_settings(wildcards):
    """The settings of one trial analysis's fit, with its type's draws per chain from
    sampler.draws_by_analysis where the type is listed there."""
    settings = json.loads(fit_settings(("sampler", "checks")))
    kind = trial_analyses(wildcards.trial).get(wildcards.analysis)
    by_type = config["sampler"]["draws_by_analysis"]
    if kind in by_type:
        settings["sampler"]["draws"] = by_type[kind]
    return json.dumps(settings, sort_keys=True)


# ---- simulation-based calibration (workflow/rules/checks.smk) ----------------------------

SBC_FAMILIES = list(config["sbc"]["families"])


def sbc_template_inputs(wildcards):
    """The cleaned tables of the dataset a family's simulations are shaped like."""
    template = config["sbc"]["families"][wildcards.family]
    if wildcards.family.startswith("meta_"):
        folder = f"data/clean/meta/{template['review']}"
        return {"effects": f"{folder}/effects.csv", "info": f"{folder}/review.json"}
    folder = f"data/clean/trials/{template['trial']}"
    return {"sessions": f"{folder}/sessions.csv", "patients": f"{folder}/patients.csv",
            "info": f"{folder}/trial.json"}


def sbc_batches(wildcards):
    n_jobs = -(-config["sbc"]["simulations"] // config["sbc"]["per_job"])
    return [f"data/sbc/{wildcards.family}/batch_{b}.csv" for b in range(n_jobs)]


def sbc_settings(family):
    """Only what a family's simulations depend on: editing another family's template
    reruns nothing here."""
    keys = ("simulations", "per_job", "chains", "draws", "tune", "thin_to", "seed")
    settings = {"sbc": {k: config["sbc"][k] for k in keys},
                "template": config["sbc"]["families"][family],
                "sampler": {k: config["sampler"][k] for k in ("backend", "target_accept",
                                                              "threads")
                            if k in config["sampler"]}}
    if family.startswith("meta_"):
        settings["meta"] = config["meta"]
    return json.dumps(settings, sort_keys=True)
