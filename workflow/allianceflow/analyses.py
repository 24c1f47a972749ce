"""The analyses a trial.yaml asks for: lookup and checks of their role mappings.

Kept free of model imports so that cleaning can check every analysis before any fit.
Types: growth and moderation (models/growth.py; moderation is the growth model with
moderators of the alliance effect), early_alliance, riclpm, sequential_mediation and
within_mediation.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

MEDIATION_TYPES = ("sequential_mediation", "within_mediation")
GROWTH_TYPES = ("growth", "moderation")
ANALYSIS_TYPES = (*GROWTH_TYPES, "early_alliance", "riclpm", *MEDIATION_TYPES)


def find_analysis(info: dict[str, Any], name: str) -> dict[str, Any]:
    for analysis in info["analyses"]:
        if analysis["name"] == name:
            return analysis
    raise ConfigError(f"{info['name']}/trial.yaml: no analysis named '{name}' "
                      f"(analyses: {', '.join(a['name'] for a in info['analyses'])})")


def check_analysis(analysis: dict[str, Any], info: dict[str, Any], source: str) -> None:
    """Role mappings of an analysis name measures and settings the trial has."""
    kind = analysis["type"]
    where = f"{source}: analysis '{analysis['name']}' ({kind})"
    if kind not in MEDIATION_TYPES:
        check_trial_model(analysis, info, where)
        return
    scores = info.get("scores", info["measures"])
    missing = [k for k in ("x", "m", "y") if k not in analysis]
    if missing:
        raise ConfigError(f"{where} needs {', '.join(missing)} (x: the cause, m: the "
                          "mediator(s), y: the outcome)")
    m = analysis["m"] if isinstance(analysis["m"], list) else [analysis["m"]]
    names = ([] if analysis["x"] == "arm" and kind == "sequential_mediation"
             else [analysis["x"]]) + m + [analysis["y"]]
    unknown = [n for n in names if n not in scores]
    if unknown:
        raise ConfigError(f"{where} names {', '.join(unknown)}, which are not measures of "
                          f"this trial ({', '.join(scores)})")
    if kind == "sequential_mediation":
        if analysis["x"] == "arm" and not info.get("arm"):
            raise ConfigError(f"{where}: x is 'arm' but trial.yaml declares no arm "
                              "(arm.reference and arm.levels)")
        if not info.get("change"):
            raise ConfigError(f"{where} needs `change: {{from: <session>, to: <session>}}` "
                              "in trial.yaml to define change")
        if not 1 <= len(m) <= 3:
            raise ConfigError(f"{where}: m lists {len(m)} mediators; 1 to 3 are supported")
        unknown = [c for c in analysis.get("covariates", []) if c not in info["baseline"]]
        if unknown:
            raise ConfigError(f"{where}: covariates {', '.join(unknown)} are not baseline "
                              f"covariates of trial.yaml ({', '.join(info['baseline'])})")
    else:
        if isinstance(analysis["m"], list):
            raise ConfigError(f"{where}: m must be one measure")
        lag = analysis.get("lag", 0)
        if not isinstance(lag, int) or lag < 0:
            raise ConfigError(f"{where}: lag must be a whole number of sessions >= 0")


def _unknown(names: list[str], known: list[str], where: str, what: str) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"{where} names {', '.join(map(str, unknown))}, which are not "
                          f"{what} of this trial ({', '.join(known) or 'none'})")


def session_window(analysis: dict[str, Any], info: dict[str, Any]) -> tuple[int, int]:
    """Sessions an analysis covers: its own start/end, else trial.yaml's change, else all."""
    change = info.get("change") or {}
    sessions = info["sessions"]
    start = int(analysis.get("start", change.get("from", sessions[0])))
    end = int(analysis.get("end", change.get("to", sessions[-1])))
    return start, end


def check_trial_model(analysis: dict[str, Any], info: dict[str, Any], where: str) -> None:
    """growth, moderation, early_alliance and riclpm analyses."""
    kind = analysis["type"]
    scores = info.get("scores", info["measures"])
    start, end = session_window(analysis, info)
    if not start < end:
        raise ConfigError(f"{where}: start ({start}) must come before end ({end})")
    if kind == "riclpm":
        variables = analysis.get("variables", [])
        if not isinstance(variables, list) or not 2 <= len(variables) <= 4:
            raise ConfigError(f"{where} needs `variables`: a list of 2 to 4 measures "
                              "(e.g. [alliance, depression])")
        _unknown(variables, scores, where, "measures")
        if len(set(variables)) < len(variables):
            raise ConfigError(f"{where}: variables lists a measure twice")
        if len([s for s in info["sessions"] if start <= s <= end]) < 3:
            raise ConfigError(f"{where}: needs at least 3 sessions between {start} and {end}")
        return
    roles = info["roles"]
    _unknown([analysis.get("outcome", roles["outcome"]), analysis.get("alliance",
                                                                      roles["alliance"])],
             scores, where, "measures")
    _unknown(analysis.get("covariates", []), info["baseline"], where, "baseline covariates")
    if kind == "early_alliance":
        session = analysis.get("session", 3)
        if session not in info["sessions"] or not session < end:
            raise ConfigError(f"{where}: session {session} (the early alliance) must be a "
                              f"session of the trial before the end ({end})")
        return
    if analysis.get("decomposition", "latent") not in ("latent", "observed"):
        raise ConfigError(f"{where}: decomposition must be latent or observed")
    moderators = analysis.get("moderators", [])
    _unknown(moderators, scores + info["baseline"], where,
             "measures or baseline covariates")
    by_arm = by_arm_default(analysis, info)
    if kind == "moderation" and not moderators and not by_arm:
        raise ConfigError(f"{where} needs `moderators` (e.g. [adherence, competence]) or "
                          "an arm in trial.yaml (the alliance effect by arm)")
    if by_arm and not info.get("arm"):
        raise ConfigError(f"{where}: the alliance effect by arm needs an arm in trial.yaml")


def by_arm_default(analysis: dict[str, Any], info: dict[str, Any]) -> bool:
    """Alliance effects by arm: asked for with `by_arm`; a moderation analysis of a trial
    with arms has them unless it says `by_arm: false`."""
    return bool(analysis.get("by_arm", analysis["type"] == "moderation" and info.get("arm")))
