"""Stale Snakemake locks are cleared only when no Snakemake works in the project."""

import subprocess
import time

from allianceflow.locks import clear_stale_locks, snakemake_running_in


def make_lock(project):
    locks = project / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("data/raw/x\n")
    return locks


def test_stale_lock_is_removed(tmp_path):
    locks = make_lock(tmp_path)
    assert snakemake_running_in(tmp_path) is False
    assert [p.name for p in clear_stale_locks(tmp_path)] == ["0.input.lock"]
    assert not list(locks.iterdir())


def test_lock_of_a_running_snakemake_is_kept(tmp_path):
    locks = make_lock(tmp_path)
    fake = tmp_path / "bin" / "snakemake"  # a process that looks like Snakemake
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    proc = subprocess.Popen([str(fake)], cwd=tmp_path)
    try:
        time.sleep(0.3)
        assert snakemake_running_in(tmp_path) is True
        assert clear_stale_locks(tmp_path) == []
        assert list(locks.iterdir())
    finally:
        proc.kill()
        proc.wait()


def test_nothing_to_do_without_locks(tmp_path):
    assert clear_stale_locks(tmp_path) == []
