# Stage 1: validate and clean each dataset. Bad input stops that dataset with an error
# naming file, row, column and reason; data/raw/ is only ever read.


rule clean_review:
    input:
        unpack(review_inputs),
    output:
        effects="data/clean/meta/{review}/effects.csv",
        info="data/clean/meta/{review}/review.json",
    params:
        raw=lambda wildcards: f"{RAW}/meta/{wildcards.review}",
    log:
        "logs/clean/meta/{review}.log",
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow clean-review --raw {params.raw:q}"
        " --effects {output.effects:q} --info {output.info:q} > {log:q} 2>&1"


rule clean_trial:
    input:
        unpack(trial_inputs),
    output:
        sessions="data/clean/trials/{trial}/sessions.csv",
        patients="data/clean/trials/{trial}/patients.csv",
        info="data/clean/trials/{trial}/trial.json",
    params:
        raw=lambda wildcards: f"{RAW}/trials/{wildcards.trial}",
        out=lambda wildcards, output: str(Path(output.info).parent),
    # seconds long, and the trial fits (the longest jobs, see FIT_PRIORITY) wait on it
    priority: max(FIT_PRIORITY.values()) + 1
    log:
        "logs/clean/trials/{trial}.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow clean-trial --raw {params.raw:q} --out {params.out:q}"
        " > {log:q} 2>&1"
