"""The analyses a trial.yaml asks for: lookup and checks of their role mappings.

Kept free of model imports so that cleaning can check every analysis before any fit.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

MEDIATION_TYPES = ("sequential_mediation", "within_mediation")


def find_analysis(info: dict[str, Any], name: str) -> dict[str, Any]:
    for analysis in info["analyses"]:
        if analysis["name"] == name:
            return analysis
    raise ConfigError(f"{info['name']}/trial.yaml: no analysis named '{name}' "
                      f"(analyses: {', '.join(a['name'] for a in info['analyses'])})")


def check_analysis(analysis: dict[str, Any], info: dict[str, Any], source: str) -> None:
    """Role mappings of a mediation analysis name measures and settings the trial has."""
    kind = analysis["type"]
    where = f"{source}: analysis '{analysis['name']}' ({kind})"
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
