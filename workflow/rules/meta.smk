# Stage 2: Bayesian meta-analysis per review (two-level; three-level where a study
# has several effect sizes). Writes summary.csv, diagnostics.json, posterior.nc.


rule fit_review:
    input:
        effects="data/clean/meta/{review}/effects.csv",
        info="data/clean/meta/{review}/review.json",
    output:
        summary="data/fits/meta/{review}/summary.csv",
        diagnostics="data/fits/meta/{review}/diagnostics.json",
        posterior="data/fits/meta/{review}/posterior.nc",
        provenance="data/fits/meta/{review}/provenance.json",
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
