# Stage 3: the analyses each trial's trial.yaml asks for, one job per analysis:
# growth and moderation (between/within alliance), early alliance, RI-CLPM, sequential
# mediation on latent change scores and within-person (1-1-1) mediation. The package
# picks the model by the analysis's type. Writes summary.csv, diagnostics.json,
# posterior.nc and provenance.json per analysis, and (rule kfold_trial_analysis) the
# leave-patients-out refits where PSIS-LOO by patient is not reliable, kfold.csv, and
# (rule compare_trial) the comparison of a trial's analyses of the same data.


rule fit_trial_analysis:
    input:
        sessions="data/clean/trials/{trial}/sessions.csv",
        patients="data/clean/trials/{trial}/patients.csv",
        info="data/clean/trials/{trial}/trial.json",
        code=analysis_code,
    output:
        summary=report(
            "data/fits/trials/{trial}/{analysis}/summary.csv",
            caption="../report/summary.rst",
            category="Trials",
            subcategory="{trial}",
            labels={"trial": "{trial}", "analysis": "{analysis}", "table": "summary"},
        ),
        diagnostics="data/fits/trials/{trial}/{analysis}/diagnostics.json",
        posterior="data/fits/trials/{trial}/{analysis}/posterior.nc",
        provenance="data/fits/trials/{trial}/{analysis}/provenance.json",
        checks="data/fits/trials/{trial}/{analysis}/checks.json",
        ppc=report(
            "data/fits/trials/{trial}/{analysis}/ppc.csv",
            caption="../report/ppc.rst",
            category="Trials",
            subcategory="{trial}",
            labels={"trial": "{trial}", "analysis": "{analysis}", "table": "predictive checks"},
        ),
        ppc_curves="data/fits/trials/{trial}/{analysis}/ppc_curves.csv",
        loo_pit="data/fits/trials/{trial}/{analysis}/loo_pit.csv",
        sensitivity=report(
            "data/fits/trials/{trial}/{analysis}/sensitivity.csv",
            caption="../report/sensitivity.rst",
            category="Trials",
            subcategory="{trial}",
            labels={"trial": "{trial}", "analysis": "{analysis}", "table": "prior sensitivity"},
        ),
        priors=report(
            "data/fits/trials/{trial}/{analysis}/priors.csv",
            caption="../report/priors.rst",
            category="Trials",
            subcategory="{trial}",
            labels={"trial": "{trial}", "analysis": "{analysis}", "table": "priors"},
        ),
    params:
        settings=trial_fit_settings,
        out=lambda wildcards, output: str(Path(output.summary).parent),
    threads: config["sampler"]["threads"]
    priority: fit_priority
    log:
        "logs/fit/trials/{trial}/{analysis}.log",
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow fit-trial-analysis --sessions {input.sessions:q}"
        " --patients {input.patients:q} --info {input.info:q} --analysis {wildcards.analysis:q}"
        " --settings {params.settings:q} --out {params.out:q} > {log:q} 2>&1"


rule kfold_trial_analysis:
    input:
        sessions="data/clean/trials/{trial}/sessions.csv",
        patients="data/clean/trials/{trial}/patients.csv",
        info="data/clean/trials/{trial}/trial.json",
        posterior="data/fits/trials/{trial}/{analysis}/posterior.nc",
        code=kfold_code,
    output:
        report(
            "data/fits/trials/{trial}/{analysis}/kfold.csv",
            caption="../report/kfold.rst",
            category="Trials",
            subcategory="{trial}",
            labels={"trial": "{trial}", "analysis": "{analysis}", "table": "K-fold by patient"},
        ),
    params:
        settings=trial_fit_settings,
    threads: config["sampler"]["threads"]
    log:
        "logs/kfold/trials/{trial}/{analysis}.log",
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow kfold-trial-analysis --sessions {input.sessions:q}"
        " --patients {input.patients:q} --info {input.info:q} --posterior {input.posterior:q}"
        " --analysis {wildcards.analysis:q} --settings {params.settings:q} --out {output:q}"
        " > {log:q} 2>&1"


rule compare_trial:
    input:
        kfold=lambda wildcards: trial_fits(wildcards)["kfold"],
        code=package_code("trial_kfold.py", "checks.py", "models/structure.py"),
    output:
        report(
            "data/fits/trials/{trial}/comparison.csv",
            caption="../report/trial_comparison.rst",
            category="Trials",
            subcategory="{trial}",
            labels={"trial": "{trial}", "analysis": "all", "table": "model comparison"},
        ),
    log:
        "logs/kfold/trials/{trial}/comparison.log",
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow compare-trial --kfold {input.kfold:q} --out {output:q}"
        " > {log:q} 2>&1"
