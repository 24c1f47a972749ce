"""Report rendering (papermill -> HTML) and the index page a reader starts from."""

from __future__ import annotations

import html
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import DONE_MARK, AllianceFlowError
from .io import atomic_path, write_text

KEY_PACKAGES = ("pymc", "pytensor", "nutpie", "arviz", "numpy", "pandas", "xarray",
                "papermill", "snakemake", "allianceflow")


# nbconvert's lab template minus its CDN scripts (workflow/notebooks/templates/offline)
OFFLINE_TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "notebooks" / "templates"


class ReportError(AllianceFlowError):
    """A report notebook failed to execute."""


def render_notebook(template: str | Path, notebook: str | Path, html_out: str | Path,
                    parameters: dict[str, Any], kernel: str = "python3") -> None:
    """Execute `template` with papermill, keep the executed notebook, write standalone HTML.

    Code cells are hidden in the HTML until the reader presses "Show code" (readers
    see text, tables and figures first); the executed notebook is kept beside it. A
    failing cell fails the job with the notebook's own error message.
    """
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    with atomic_path(notebook) as tmp_nb:
        try:
            pm.execute_notebook(str(template), str(tmp_nb), parameters=parameters,
                                kernel_name=kernel, cwd=os.getcwd(), progress_bar=False,
                                log_output=False)
        except pm.PapermillExecutionError as exc:
            raise ReportError(f"{template}: cell {exc.exec_count} failed: {exc.ename}: "
                              f"{exc.evalue}") from None
        except Exception as exc:  # e.g. an unknown kernel name
            raise ReportError(f"{template}: could not be executed: {exc}") from None
        nb = nbformat.read(tmp_nb, as_version=4)
        exporter = HTMLExporter(template_name="offline",
                                extra_template_basedirs=[str(OFFLINE_TEMPLATE_DIR)])
        exporter.exclude_input_prompt = True
        exporter.exclude_output_prompt = True
        body, _ = exporter.from_notebook_node(nb)
        write_text(with_code_toggle(body), html_out)


# Code cells are in the HTML but hidden until the reader asks for them (a button at
# the top right; hidden again when printing).
CODE_TOGGLE = """
<style>
body:not(.show-code) .jp-CodeCell .jp-Cell-inputWrapper{display:none}
.code-toggle{position:fixed;top:.6rem;right:.8rem;z-index:10;font:600 .85rem system-ui,
sans-serif;padding:.35rem .7rem;border:1px solid #888;border-radius:.4rem;background:#fff;
cursor:pointer}
@media print{.code-toggle{display:none}}
</style>
<button class="code-toggle" type="button" aria-pressed="false"
 onclick="var on=document.body.classList.toggle('show-code');this.setAttribute('aria-pressed',on);
 this.textContent=on?'Hide code':'Show code'">Show code</button>
"""


def with_code_toggle(body: str) -> str:
    """Insert the code toggle right after <body ...>."""
    start = body.find("<body")
    end = body.find(">", start) + 1
    if start < 0 or end <= 0:
        raise ReportError("nbconvert produced HTML without a <body> element")
    return body[:end] + CODE_TOGGLE + body[end:]


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if pd.isna(x) else f"{x:.{digits}f}"


def headline(summary: pd.DataFrame, info: dict[str, Any]) -> str:
    """The pooled estimate in one line, from the richest model fitted."""
    model = "three_level" if (summary["model"] == "three_level").any() else "random_effects"
    rows = summary[summary["model"] == model].set_index("parameter")
    name = "mu_r" if "mu_r" in rows.index else "mu"
    r = rows.loc[name]
    label = "r" if name == "mu_r" else info.get("measure", "effect")
    return (f"{label} = {_fmt(r['mean'])} [{_fmt(r['q2.5'])}, {_fmt(r['q97.5'])}] "
            f"({model.replace('_', '-')}, k = {info['n_effects']}, studies = {info['n_studies']})")


def gate_status(diag: dict[str, Any]) -> str:
    if diag.get("passed"):
        return "passed"
    return "warned" if diag.get("policy") == "warn" else "failed"


def checks_status(check_files: list[Path]) -> str:
    """'all passed' or the number of model-check warnings over a dataset's fits."""
    found = [json.loads(f.read_text()) for f in check_files if f.exists()]
    if not found:
        return "not run"
    models = [m for doc in found for m in doc["models"].values()]
    n = sum(len(m["warnings"]) for m in models)
    conflicts = sum(bool(m.get("prior_data_conflict")) for m in models)
    if n == 0:
        return "all passed"
    text = f"{n} warning{'s' if n > 1 else ''}"
    if conflicts:
        text += (f", potential prior-data conflict in {conflicts} "
                 f"model{'s' if conflicts > 1 else ''}")
    return text + " (see report)"


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")


def index_rows(reports_dir: Path, fits_dir: Path, clean_dir: Path, reviews: list[str],
               trials: list[str], logs_dir: Path = Path("logs")) -> list[dict[str, str]]:
    """One row per dataset; a dataset whose jobs logged an error, or whose report or fits
    are missing, is shown as failed with the first error (values withheld)."""
    rows = []
    for kind, names, row_of in (("meta", reviews, review_row), ("trials", trials, trial_row)):
        for name in names:
            failure = dataset_failure(logs_dir, kind, name)
            if failure is None:
                try:
                    rows.append(row_of(reports_dir, fits_dir, clean_dir, name))
                    continue
                except (FileNotFoundError, KeyError) as exc:
                    failure = f"not built ({type(exc).__name__}: {exc})"
            rows.append({"kind": "review" if kind == "meta" else "trial", "name": name,
                         "title": "", "label": "", "status": "failed", "checks": "",
                         "headline": failure, "href": "", "built": ""})
    return rows


def review_row(reports_dir: Path, fits_dir: Path, clean_dir: Path, review: str) -> dict:
    info = json.loads((clean_dir / "meta" / review / "review.json").read_text())
    summary = pd.read_csv(fits_dir / "meta" / review / "summary.csv")
    diag = json.loads((fits_dir / "meta" / review / "diagnostics.json").read_text())
    report = reports_dir / "meta" / f"{review}.html"
    return {"kind": "review", "name": review, "title": info["title"],
            "label": "synthetic" if info["synthetic"] else "real",
            "status": gate_status(diag),
            "checks": checks_status([fits_dir / "meta" / review / "checks.json"]),
            "headline": headline(summary, info),
            "href": os.path.relpath(report, reports_dir), "built": _mtime(report)}


def trial_row(reports_dir: Path, fits_dir: Path, clean_dir: Path, trial: str) -> dict:
    info = json.loads((clean_dir / "trials" / trial / "trial.json").read_text())
    report = reports_dir / "trials" / f"{trial}.html"
    statuses, lines = trial_fit_lines(fits_dir / "trials" / trial, info)
    status = ("cleaned (no models yet)" if not statuses else
              next((s for s in ("failed", "warned") if s in statuses), "passed"))
    lines.append(f"{info['n_patients']} patients, {info['n_session_rows']} session rows")
    return {"kind": "trial", "name": trial, "title": info["title"],
            "label": "synthetic" if info["synthetic"] else "real",
            "status": status,
            "checks": checks_status([fits_dir / "trials" / trial / a["name"] / "checks.json"
                                     for a in info["analyses"]]),
            "headline": "; ".join(lines),
            "href": os.path.relpath(report, reports_dir), "built": _mtime(report)}


STAGES = ("clean", "fit", "influence", "report")


def withhold_values(message: str) -> str:
    """Drop quoted cell values from an error message (the index may be shared); the file,
    row and column it names stay."""
    head, sep, reason = message.partition(": ")
    reason = re.sub(r"\(value: .*?\)", "(value withheld)", reason)
    reason = re.sub(r"'[^']*'", "'…'", reason)
    return head + sep + reason


def dataset_failure(logs_dir: Path, kind: str, name: str) -> str | None:
    """The error in this dataset's job logs, stage first; None if no job of it failed.

    Each job rewrites its log when it runs, so an error found here is from the latest run
    of that job. A log that ends with the command line's DONE line is of a job that
    finished, whatever tracebacks libraries logged on the way."""
    for stage in STAGES:
        folder = logs_dir / stage / kind
        for log in [folder / f"{name}.log", *sorted((folder / name).glob("*.log"))]:
            if not log.is_file():
                continue
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            if lines and lines[-1].startswith(DONE_MARK):
                continue
            errors = [ln[len("ERROR: "):] for ln in lines if ln.startswith("ERROR: ")]
            if errors:
                return f"{stage}: {withhold_values(errors[-1])}"
            if any(ln.startswith("Traceback") for ln in lines):
                return f"{stage}: {withhold_values(lines[-1])} (see {log})"
    return None


# the headline parameter of each analysis type
HEADLINE_PARAMETER = {"sequential_mediation": "indirect_total", "within_mediation": "me",
                      "growth": "alliance_within", "moderation": "alliance_within",
                      "early_alliance": "early_alliance"}


def headline_parameter(analysis: dict[str, Any]) -> str:
    """RI-CLPM: the indirect effect along its variables (lag: one session per arrow), or
    the first cross-lag."""
    if analysis["type"] == "riclpm":
        v = analysis["variables"]
        return f"indirect[{'->'.join(v)}]" if len(v) >= 3 else f"cl[{v[0]}->{v[1]}]"
    return HEADLINE_PARAMETER[analysis["type"]]


def trial_fit_lines(trial_fits: Path, info: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Gate status and headline estimate of each fitted analysis of one trial."""
    statuses, lines = [], []
    for analysis in info["analyses"]:
        folder = trial_fits / analysis["name"]
        if not (folder / "summary.csv").exists():
            continue
        statuses.append(gate_status(json.loads((folder / "diagnostics.json").read_text())))
        rows = pd.read_csv(folder / "summary.csv").set_index("parameter")
        name = headline_parameter(analysis)
        r = rows.loc[name]
        lines.append(f"{analysis['name']}: {name} = {_fmt(r['mean'])} "
                     f"[{_fmt(r['q2.5'])}, {_fmt(r['q97.5'])}]")
    return statuses, lines


INDEX_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.45rem .6rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}.synthetic{background:#fff3cd;color:#7a5b00;padding:.1rem .4rem;
border-radius:.3rem}.real{background:#d1e7dd;color:#0f5132;padding:.1rem .4rem;
border-radius:.3rem}.passed{color:#0f5132;font-weight:600}.warned,.failed{color:#fff;
background:#b02a37;padding:.1rem .4rem;border-radius:.3rem;font-weight:600}
.note{color:#555;font-size:.9rem}
"""


def index_html(rows: list[dict[str, str]]) -> str:
    body = []
    for r in rows:
        status_class = r["status"] if r["status"] in ("passed", "warned", "failed") else ""
        body.append(
            "<tr>"
            f"<td>{html.escape(r['kind'])}</td>"
            + (f"<td><a href=\"{html.escape(r['href'])}\">{html.escape(r['name'])}</a><br>"
               if r["href"] else f"<td>{html.escape(r['name'])}<br>")
            + f"<span class=note>{html.escape(r['title'])}</span></td>"
            f"<td><span class={r['label'] or 'note'}>{r['label'] or '–'}</span></td>"
            f"<td><span class=\"{status_class}\">{html.escape(r['status'])}</span></td>"
            f"<td>{html.escape(r.get('checks', ''))}</td>"
            f"<td>{html.escape(r['headline'])}</td>"
            f"<td>{html.escape(r['built'])}</td></tr>")
    built = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Alliance workflow reports</title>
<style>{INDEX_CSS}</style></head><body>
<h1>Therapeutic-alliance workflow: reports</h1>
<p class=note>Built {built}. Every number links back to a file under <code>data/fits/</code>.
Datasets marked <span class=synthetic>synthetic</span> were generated by this project's code
with a fixed seed; they are not data from any real study.</p>
<table><thead><tr><th>Kind</th><th>Dataset</th><th>Data</th><th>Gate</th>
<th>Model checks</th><th>Headline</th><th>Report built</th></tr></thead><tbody>
{''.join(body)}
</tbody></table></body></html>
"""


def write_index(reports_dir: str | Path, fits_dir: str | Path, clean_dir: str | Path,
                out: str | Path, reviews: list[str], trials: list[str],
                logs_dir: str | Path = "logs") -> None:
    rows = index_rows(Path(reports_dir), Path(fits_dir), Path(clean_dir), reviews, trials,
                      Path(logs_dir))
    write_text(index_html(rows), out)
