# Therapeutic-alliance workflow: raw trial and meta-analytic data -> cleaned tables ->
# Bayesian models -> checks -> papermill reports. Run with `make run` (see README.md).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# `snakemake --report report.html` collects the outputs marked with report() by category.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/clean.smk"
include: "workflow/rules/meta.smk"
include: "workflow/rules/trial.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/checks.smk"


# The target rule only collects; it never goes to a cluster.
localrules:
    all,
    sbc,


rule all:
    input:
        "reports/index.html",
    default_target: True
