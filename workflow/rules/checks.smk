# Simulation-based calibration (target `sbc`, not part of `all`): for each model family
# in config `sbc.families`, simulations fanned out as jobs of `sbc.per_job` simulations
# (each job compiles its model once and refits it on every simulated dataset), then the
# rank-ECDF test per family and a report, reports/sbc.html.


rule sbc_batch:
    input:
        unpack(sbc_template_inputs),
        code=package_code(
            "sbc.py", "checks.py", "fitting.py", "compiled.py", "models/meta.py",
            "models/meta_priors.py",
            "models/bias.py", "models/predictive.py", "models/structure.py",
            "models/growth.py", "models/early_alliance.py", "models/riclpm.py",
            "models/sequential_mediation.py", "models/within_mediation.py",
            "models/gaussian.py", "models/multilevel.py",
        ),
    output:
        "data/sbc/{family}/batch_{batch}.csv",
    params:
        settings=lambda wildcards: sbc_settings(wildcards.family),
    threads: config["sampler"]["threads"]
    log:
        "logs/sbc/{family}/batch_{batch}.log",
    resources:
        mem_mb=4000,
        runtime=240,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow sbc-batch --family {wildcards.family:q}"
        " --batch {wildcards.batch} --clean-dir data/clean --settings {params.settings:q}"
        " --out {output:q} > {log:q} 2>&1"


rule sbc_family:
    input:
        batches=sbc_batches,
        code=package_code("sbc.py", "checks.py", "models/structure.py"),
    output:
        ranks="data/sbc/{family}/ranks.csv",
        summary=report(
            "data/sbc/{family}/summary.csv",
            caption="../report/sbc.rst",
            category="Simulation-based calibration",
            labels={"family": "{family}", "table": "summary"},
        ),
        ecdf="data/sbc/{family}/ecdf.csv",
    params:
        prob=config["sbc"]["prob"],
    log:
        "logs/sbc/{family}/summary.log",
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow sbc-summary --batches {input.batches:q} --prob {params.prob}"
        " --ranks {output.ranks:q} --summary {output.summary:q} --ecdf {output.ecdf:q}"
        " > {log:q} 2>&1"


rule report_sbc:
    input:
        template="workflow/notebooks/sbc.ipynb",
        summaries=expand("data/sbc/{family}/summary.csv", family=SBC_FAMILIES),
        ecdfs=expand("data/sbc/{family}/ecdf.csv", family=SBC_FAMILIES),
        ranks=expand("data/sbc/{family}/ranks.csv", family=SBC_FAMILIES),
        code=package_code("reports.py", "report_parts.py", "report_checks.py"),
    output:
        notebook="reports/sbc.ipynb",
        html=report(
            "reports/sbc.html",
            caption="../report/sbc_report.rst",
            category="Reports",
            labels={"dataset": "all", "kind": "simulation-based calibration"},
        ),
    params:
        parameters=lambda wildcards, input: json.dumps(
            {
                "families": {
                    f: {"template": config["sbc"]["families"][f], "folder": f"data/sbc/{f}"}
                    for f in SBC_FAMILIES
                },
                "settings": config["sbc"],
            }
        ),
    log:
        "logs/report/sbc.log",
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../../environment.yml"
    shell:
        "python -m allianceflow render --template {input.template:q}"
        " --notebook {output.notebook:q} --html {output.html:q}"
        " --parameters {params.parameters:q} > {log:q} 2>&1"


rule sbc:
    input:
        "reports/sbc.html",
