"""Shared fixtures: paths, the validation data, small raw datasets written on the fly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_VALIDATION = ROOT.parent / "shared" / "validation"
LOCAL_VALIDATION = ROOT / "tests" / "data" / "validation"

# The tests share PyTensor's own default cache (~/.pytensor) across every project they
# build; the workflow's default, a cache inside each project folder, would start cold in
# each new test project. The SLURM test removes this to check the workflow's default.
os.environ.setdefault("PYTENSOR_FLAGS", f"base_compiledir={Path.home() / '.pytensor'}")


# The integration modules that read the built project and nothing more: they run first, on
# one worker, which builds it (tests/integration/conftest.py) while the other works through
# the unit tests. The other integration modules come last, one at a time on whichever
# worker is free, so that two of them (each mostly one job at a time) run side by side,
# the longest first: a worker takes its next module one test before it finishes the
# last, so a long module taken late can keep one worker busy while the other has none.
BUILD_FIRST = ("tests/integration/test_workflow.py", "tests/integration/test_browser.py")
LONGEST_FIRST = tuple(f"tests/integration/test_{name}.py"
                      for name in ("faults", "slurm", "new_data", "review_formats"))


def run_order(nodeid: str) -> tuple[int, int]:
    module = nodeid.split("::", 1)[0]
    if module in BUILD_FIRST:
        return 0, 0
    if not module.startswith("tests/integration/"):
        return 1, 0
    return 2, LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: run_order(item.nodeid))  # stable: modules keep their order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs pytest-xdist workers (`CORES`), each taking a module at a time
    (some modules fit a model once for all their tests) in the order of run_order, the
    BUILD_FIRST modules as one. xdist's own `loadgroup` would group them with markers, but
    it renames node ids in a way pytest 9 no longer supports."""
    from xdist.scheduler import LoadScopeScheduling

    class BuildFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "built project" if module in BUILD_FIRST else module

    config.option.loadscopereorder = False  # the order above, not the largest module first
    return BuildFirst(config, log)


def validation_file(name: str) -> Path:
    """Validation data from ../shared/validation/, or the copy in tests/data/validation/."""
    for folder in (SHARED_VALIDATION, LOCAL_VALIDATION):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(name)


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def tmp_review(tmp_path):
    """Write a review folder from (effects DataFrame, review.yaml text)."""
    def make(effects, review_yaml: str | None = None, name: str = "rev", fmt: str = "csv"):
        folder = tmp_path / "meta" / name
        folder.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            effects.to_csv(folder / "effects.csv", index=False)
        elif fmt == "xlsx":
            effects.to_excel(folder / "effects.xlsx", index=False)
        if review_yaml is not None:
            (folder / "review.yaml").write_text(review_yaml)
        return folder
    return make


@pytest.fixture
def copy_tree():
    def copy(src: Path, dst: Path) -> Path:
        shutil.copytree(src, dst)
        return dst
    return copy
