"""environment.yml (for conda users) says exactly what requirements.lock (for make) says."""

from allianceflow.envfiles import environment_yml, lock_pins


def test_environment_yml_matches_lock(root):
    lock = (root / "requirements.lock").read_text()
    current = (root / "environment.yml").read_text()
    assert current == environment_yml(lock, python="3.12"), (
        "environment.yml is out of date with requirements.lock: run `make env-sync`")


def test_lock_pins_every_required_package(root):
    pins = lock_pins((root / "requirements.lock").read_text())
    for name in ("snakemake", "pandas", "pymc", "arviz", "papermill", "pytest", "nutpie",
                 "snakemake-executor-plugin-slurm", "pyreadstat", "openpyxl", "h5netcdf", "jax",
                 "jaxlib"):
        assert name in pins, f"{name} is not pinned in requirements.lock"
