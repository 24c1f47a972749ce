# Stage 3: mediation analyses of each trial, as its trial.yaml asks: sequential mediation
# on latent change scores, and within-person (1-1-1, bmlm-equivalent) mediation.
# Writes summary.csv, diagnostics.json, posterior.nc and provenance.json per analysis.


rule fit_mediation:
    input:
        sessions="data/clean/trials/{trial}/sessions.csv",
        patients="data/clean/trials/{trial}/patients.csv",
        info="data/clean/trials/{trial}/trial.json",
        code=package_code(
            "mediation_stage.py", "analyses.py", "fitting.py", "models/gaussian.py",
            "models/sequential_mediation.py", "models/within_mediation.py", "provenance.py",
        ),
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
    params:
        settings=fit_settings(("sampler", "checks")),
        out=lambda wildcards, output: str(Path(output.summary).parent),
    threads: config["sampler"]["threads"]
    log:
        "logs/fit/trials/{trial}/{analysis}.log",
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow fit-mediation --sessions {input.sessions:q}"
        " --patients {input.patients:q} --info {input.info:q} --analysis {wildcards.analysis:q}"
        " --settings {params.settings:q} --out {params.out:q} > {log:q} 2>&1"
