# Stage 2: Bayesian meta-analysis per review (two-level; three-level where a study
# has several effect sizes; meta-regressions; publication-bias models and their
# stacking average). Writes summary.csv, diagnostics.json, posterior.nc, funnel.csv;
# then leave-one-study-out and cumulative refits of the primary model.


rule fit_review:
    input:
        effects="data/clean/meta/{review}/effects.csv",
        info="data/clean/meta/{review}/review.json",
        code=package_code(
            "meta_stage.py", "fitting.py", "compiled.py", "checks.py", "models/meta.py",
            "models/meta_priors.py",
            "models/bias.py", "models/predictive.py", "models/structure.py", "provenance.py",
            "history.py",
        ),
    output:
        summary=report(
            "data/fits/meta/{review}/summary.csv",
            caption="../report/summary.rst",
            category="Meta-analysis",
            subcategory="{review}",
            labels={"review": "{review}", "table": "summary"},
        ),
        diagnostics="data/fits/meta/{review}/diagnostics.json",
        posterior="data/fits/meta/{review}/posterior.nc",
        provenance="data/fits/meta/{review}/provenance.json",
        funnel=report(
            "data/fits/meta/{review}/funnel.csv",
            caption="../report/funnel.rst",
            category="Meta-analysis",
            subcategory="{review}",
            labels={"review": "{review}", "table": "funnel"},
        ),
        checks="data/fits/meta/{review}/checks.json",
        ppc=report(
            "data/fits/meta/{review}/ppc.csv",
            caption="../report/ppc.rst",
            category="Meta-analysis",
            subcategory="{review}",
            labels={"review": "{review}", "table": "predictive checks"},
        ),
        ppc_curves="data/fits/meta/{review}/ppc_curves.csv",
        loo_pit="data/fits/meta/{review}/loo_pit.csv",
        sensitivity=report(
            "data/fits/meta/{review}/sensitivity.csv",
            caption="../report/sensitivity.rst",
            category="Meta-analysis",
            subcategory="{review}",
            labels={"review": "{review}", "table": "prior sensitivity"},
        ),
        priors=report(
            "data/fits/meta/{review}/priors.csv",
            caption="../report/priors.rst",
            category="Meta-analysis",
            subcategory="{review}",
            labels={"review": "{review}", "table": "priors"},
        ),
        comparison=report(
            "data/fits/meta/{review}/comparison.csv",
            caption="../report/comparison.rst",
            category="Meta-analysis",
            subcategory="{review}",
            labels={"review": "{review}", "table": "model comparison"},
        ),
    params:
        settings=fit_settings(),
        out=lambda wildcards, output: str(Path(output.summary).parent),
    threads: config["sampler"]["threads"]
    log:
        "logs/fit/meta/{review}.log",
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow fit-review --effects {input.effects:q} --info {input.info:q}"
        " --settings {params.settings:q} --out {params.out:q} > {log:q} 2>&1"


rule influence_review:
    input:
        effects="data/clean/meta/{review}/effects.csv",
        info="data/clean/meta/{review}/review.json",
        code=package_code("meta_influence.py", "checks.py", "fitting.py", "compiled.py",
                          "models/meta.py", "models/meta_priors.py", "models/predictive.py",
                          "models/structure.py"),
    output:
        loso=report(
            "data/fits/meta/{review}/loso.csv",
            caption="../report/loso.rst",
            category="Meta-analysis",
            subcategory="{review}",
            labels={"review": "{review}", "table": "leave-one-study-out"},
        ),
        cumulative=report(
            "data/fits/meta/{review}/cumulative.csv",
            caption="../report/cumulative.rst",
            category="Meta-analysis",
            subcategory="{review}",
            labels={"review": "{review}", "table": "cumulative"},
        ),
    params:
        settings=fit_settings(),
        out=lambda wildcards, output: str(Path(output.loso).parent),
    threads: config["sampler"]["threads"]
    log:
        "logs/influence/meta/{review}.log",
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow influence-review --effects {input.effects:q}"
        " --info {input.info:q} --settings {params.settings:q} --out {params.out:q}"
        " > {log:q} 2>&1"
