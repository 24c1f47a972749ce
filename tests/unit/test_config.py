"""Config validation: defaults filled in, and a wrong key or value named before any job."""

import pytest
import yaml
from allianceflow.analyses import ANALYSIS_TYPES
from allianceflow.config import validate_config
from allianceflow.errors import ConfigError


@pytest.fixture
def schema(root):
    return root / "config" / "config.schema.yaml"


def test_defaults_fill_an_empty_config(schema):
    cfg = validate_config({}, schema)
    assert cfg["sampler"]["chains"] == 4 and cfg["sampler"]["backend"] == "nutpie"
    assert cfg["checks"]["policy"] == "fail" and cfg["checks"]["max_rhat"] == 1.01
    # the scales of mu, tau and beta follow each review's measure (models/meta_priors.py)
    assert cfg["meta"]["priors"] == {"pet_sd": 2.0, "peese_sd": 10.0}
    assert cfg["meta"]["selection_cutpoints"] == [0.025, 0.05, 0.5]


def test_analysis_types_in_the_schemas_are_the_registry(root, schema):
    """The analysis types a trial.yaml may name and those draws_by_analysis takes are
    allianceflow.analyses.ANALYSIS_TYPES, so a new type cannot be missed in either."""
    config_types = yaml.safe_load(schema.read_text())["properties"]["sampler"][
        "properties"]["draws_by_analysis"]["propertyNames"]["enum"]
    trial_schema = yaml.safe_load(
        (root / "workflow/allianceflow/schemas/trial.schema.yaml").read_text())
    trial_types = trial_schema["properties"]["analyses"]["items"]["properties"]["type"]["enum"]
    assert sorted(config_types) == sorted(trial_types) == sorted(ANALYSIS_TYPES)


def test_shipped_configs_are_valid(root, schema):
    for name in ("config.yaml", "test.yaml"):
        validate_config(yaml.safe_load((root / "config" / name).read_text()), schema)


@pytest.mark.parametrize("cfg, words", [
    ({"samplr": {}}, "unknown key 'samplr'"),
    ({"sampler": {"chain": 4}}, "unknown key 'sampler.chain'"),
    ({"sampler": {"chains": 0}}, "key 'sampler.chains'"),
    ({"sampler": {"backend": "stan"}}, "key 'sampler.backend'"),
    ({"checks": {"policy": "ignore"}}, "key 'checks.policy'"),
    ({"meta": {"priors": {"mu_sd": -1}}}, "key 'meta.priors.mu_sd'"),
    ({"sampler": {"draws_by_analysis": {"riclmp": 500}}},
     "key 'sampler.draws_by_analysis': 'riclmp' is not one of"),
    ({"sampler": {"draws_by_analysis": {"riclpm": 5}}}, "key 'sampler.draws_by_analysis.riclpm'"),
])
def test_wrong_key_or_value_is_named(schema, cfg, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        validate_config(cfg, schema)
