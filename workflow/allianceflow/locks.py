"""Stale Snakemake locks. A run killed outright (SIGKILL, a lost SSH session, a power cut)
leaves Snakemake's lock on the project, and the next run refuses to start until someone
runs `snakemake --unlock`. `make run` calls `clear_stale_locks` first, so that running the
same command again resumes: the locks go only when no Snakemake process on this machine
is working in this project."""

from __future__ import annotations

import os
from pathlib import Path


def snakemake_running_in(project: Path) -> bool | None:
    """Whether a Snakemake process on this machine has `project` as its working folder;
    None where processes cannot be inspected (no /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    target = project.resolve()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if not any(Path(a.decode(errors="replace")).name == "snakemake" for a in argv[:3]):
                continue
            if Path(os.readlink(entry / "cwd")).resolve() == target:
                return True
        except OSError:  # the process ended meanwhile, or is not ours to inspect
            continue
    return False


def clear_stale_locks(project: str | Path = ".") -> list[Path]:
    """Remove Snakemake's lock files if no Snakemake runs in `project`; return them."""
    project = Path(project)
    locks = project / ".snakemake" / "locks"
    files = sorted(f for f in locks.glob("*") if f.is_file()) if locks.is_dir() else []
    if not files or snakemake_running_in(project) is not False:
        return []
    for f in files:
        f.unlink()
    return files
