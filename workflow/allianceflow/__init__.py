"""allianceflow: statistics for the therapeutic-alliance workflow.

Pure functions by stage: io and schemas (`io`, `errors`, `config`), cleaning
(`effects`, `trials`, `scoring`), models (`models`), fitting and checks
(`fitting`), reports (`reports`), synthetic data (`synthetic`). Nothing here
imports Snakemake; the rules call `python -m allianceflow ...`.
"""

__version__ = "0.1.0"
