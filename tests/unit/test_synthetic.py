"""Synthetic default data: reproduced byte for byte by the generator, labelled everywhere."""

import filecmp

import yaml
from allianceflow.synthetic import DEFAULT_GENERATORS, write_default_data


def test_regeneration_reproduces_committed_files(root, tmp_path):
    for folder in write_default_data(tmp_path):
        committed = root / "data" / "raw" / folder.relative_to(tmp_path)
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted(p.name for p in committed.iterdir()), committed
        match, mismatch, errors = filecmp.cmpfiles(folder, committed, names, shallow=False)
        assert not mismatch and not errors, f"{committed}: {mismatch or errors} differ"


def test_synthetic_data_say_so(root):
    for gen in DEFAULT_GENERATORS:
        ds = gen()
        assert "synthetic" in ds.name
        folder = root / "data" / "raw" / ds.kind / ds.name
        meta_file = "review.yaml" if ds.kind == "meta" else "trial.yaml"
        meta = yaml.safe_load((folder / meta_file).read_text())
        assert meta["synthetic"] is True and meta["generator"]["seed"] >= 0
        assert "SYNTHETIC" in meta["title"]
        truth = yaml.safe_load((folder / "truth.yaml").read_text())
        assert truth, "truth.yaml is empty"


def test_shapes_match_the_motivating_studies():
    ao = DEFAULT_GENERATORS[0]()
    e = ao.tables["effects"]
    assert e["study"].nunique() == 295 and (e.groupby("study").size() > 1).any()
    assert 0.25 < ao.truth["mu_r"] < 0.31
    iip = DEFAULT_GENERATORS[1]()
    assert iip.tables["effects"]["study"].nunique() == 27 and len(iip.tables["effects"]) == 48
    assert -0.16 < iip.truth["mu_r"] < -0.10 and iip.truth["beta"]["timing:late"] > 0
    rct = DEFAULT_GENERATORS[2]()
    assert len(rct.tables["patients"]) == 270
    assert rct.tables["patients"]["therapist"].nunique() > rct.tables["patients"]["site"].nunique()
    web = DEFAULT_GENERATORS[3]()
    weeks = web.tables["sessions"].groupby("patient")["week"].max()
    assert (weeks < 10).sum() > 10, "the weekly trial should have dropout"
