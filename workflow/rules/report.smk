# Stage 4: papermill-executed notebooks rendered to HTML, and the index linking them.


rule report_review:
    input:
        template="workflow/notebooks/review.ipynb",
        effects="data/clean/meta/{review}/effects.csv",
        info="data/clean/meta/{review}/review.json",
        summary="data/fits/meta/{review}/summary.csv",
        diagnostics="data/fits/meta/{review}/diagnostics.json",
        provenance="data/fits/meta/{review}/provenance.json",
        funnel="data/fits/meta/{review}/funnel.csv",
        posterior="data/fits/meta/{review}/posterior.nc",
        loso="data/fits/meta/{review}/loso.csv",
        cumulative="data/fits/meta/{review}/cumulative.csv",
        checks="data/fits/meta/{review}/checks.json",
        check_tables=expand(
            "data/fits/meta/{{review}}/{table}.csv",
            table=["ppc", "ppc_curves", "loo_pit", "sensitivity", "comparison"],
        ),
        truth=lambda wildcards: truth_file("meta", wildcards.review),
        code=package_code("reports.py", "report_parts.py", "report_meta.py", "report_checks.py"),
    output:
        notebook="reports/meta/{review}.ipynb",
        html=report(
            "reports/meta/{review}.html",
            caption="../report/review_report.rst",
            category="Reports",
            subcategory="Reviews",
            labels={"dataset": "{review}", "kind": "review"},
        ),
    params:
        parameters=lambda wildcards, input: json.dumps(
            {
                "review": wildcards.review,
                "effects_csv": input.effects,
                "info_json": input.info,
                "summary_csv": input.summary,
                "diagnostics_json": input.diagnostics,
                "provenance_json": input.provenance,
                "funnel_csv": input.funnel,
                "posterior_nc": input.posterior,
                "loso_csv": input.loso,
                "cumulative_csv": input.cumulative,
                # history.csv is appended by fit_review, not a declared output (see
                # history.updated_history); the report reruns whenever the fit does
                "history_csv": str(Path(input.summary).parent / "history.csv"),
                "truth_yaml": input.truth[0] if input.truth else "",
            }
        ),
    log:
        "logs/report/meta/{review}.log",
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow render --template {input.template:q}"
        " --notebook {output.notebook:q} --html {output.html:q}"
        " --parameters {params.parameters:q} > {log:q} 2>&1"


rule report_trial:
    input:
        unpack(trial_fits),
        comparison="data/fits/trials/{trial}/comparison.csv",
        template="workflow/notebooks/trial.ipynb",
        sessions="data/clean/trials/{trial}/sessions.csv",
        patients="data/clean/trials/{trial}/patients.csv",
        info="data/clean/trials/{trial}/trial.json",
        truth=lambda wildcards: truth_file("trials", wildcards.trial),
        code=package_code("reports.py", "report_parts.py", "report_trial.py",
                          "report_trial_models.py", "report_checks.py"),
    output:
        notebook="reports/trials/{trial}.ipynb",
        html=report(
            "reports/trials/{trial}.html",
            caption="../report/trial_report.rst",
            category="Reports",
            subcategory="Trials",
            labels={"dataset": "{trial}", "kind": "trial"},
        ),
    params:
        parameters=lambda wildcards, input: json.dumps(
            {
                "trial": wildcards.trial,
                "sessions_csv": input.sessions,
                "patients_csv": input.patients,
                "info_json": input.info,
                "truth_yaml": input.truth[0] if input.truth else "",
                "comparison_csv": input.comparison,
                # analysis name -> its fit folder under data/fits/trials/<trial>/
                "analysis_dirs": {
                    Path(s).parent.name: str(Path(s).parent) for s in input.summaries
                },
            }
        ),
    log:
        "logs/report/trials/{trial}.log",
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow render --template {input.template:q}"
        " --notebook {output.notebook:q} --html {output.html:q}"
        " --parameters {params.parameters:q} > {log:q} 2>&1"


rule index:
    input:
        reviews=expand("reports/meta/{review}.html", review=REVIEWS),
        trials=expand("reports/trials/{trial}.html", trial=TRIALS),
        summaries=expand("data/fits/meta/{review}/summary.csv", review=REVIEWS),
        diagnostics=expand("data/fits/meta/{review}/diagnostics.json", review=REVIEWS),
        review_info=expand("data/clean/meta/{review}/review.json", review=REVIEWS),
        trial_info=expand("data/clean/trials/{trial}/trial.json", trial=TRIALS),
        trial_diagnostics=[
            f"data/fits/trials/{t}/{a}/diagnostics.json"
            for t in TRIALS
            for a in trial_analyses(t)
        ],
        checks=expand("data/fits/meta/{review}/checks.json", review=REVIEWS)
        + [f"data/fits/trials/{t}/{a}/checks.json" for t in TRIALS for a in trial_analyses(t)],
        code=package_code("reports.py"),
    output:
        report(
            "reports/index.html",
            caption="../report/index.rst",
            category="Reports",
            labels={"dataset": "all", "kind": "index"},
        ),
    params:
        reviews=REVIEWS,
        trials=TRIALS,
    log:
        "logs/report/index.log",
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow index --reports-dir reports --fits-dir data/fits"
        " --clean-dir data/clean --reviews {params.reviews:q} --trials {params.trials:q}"
        " --out {output:q} > {log:q} 2>&1"


# After a failed run (make run keeps going past a bad dataset, then exits non-zero) the
# index is rewritten from what exists, each dataset whose jobs logged an error marked
# failed with that error, so that the page a reader opens never looks complete when it
# is not. Runs on the machine Snakemake runs on (also under the SLURM profile).
# That index is then dated 2 January 1970, older than any of its inputs: Snakemake does not
# remake missing intermediate files (a failed job's removed outputs) below a target that
# exists and is newer than its inputs, so the same command run again would report nothing
# to be done and never retry the failed job. (Not the epoch itself: Snakemake reads a
# modification time of 0 as none.)
onerror:
    shell(
        "mkdir -p logs/report && python -m allianceflow index --reports-dir reports"
        " --fits-dir data/fits"
        " --clean-dir data/clean --logs-dir logs --reviews {REVIEWS} --trials {TRIALS}"
        " --out reports/index.html > logs/report/index-after-failure.log 2>&1 || true"
    )
    if os.path.exists("reports/index.html"):
        os.utime("reports/index.html", (86400, 86400))
