"""A single-node SLURM cluster for the tests, from Debian's packages (munge, slurmctld,
slurmd, slurm-client), with every file under one temporary folder.

No systemd: each daemon runs in the foreground as a child of the test, its PID is
recorded, and `stop` ends exactly those processes. The configuration is written to
the default path, /etc/slurm/slurm.conf (only where none exists; removed at `stop`):
the Snakemake job-step plugin removes SLURM_CONF from the environment of the `srun`
it starts inside each job, so a configuration anywhere else is not found there.
Accounting is off (no slurmdbd), so job records come from squeue and the controller's
log; MinJobAge keeps finished jobs visible to squeue for an hour: beyond the whole
test run (the check of every job's final state reads them all at the end), and
well beyond Snakemake's first status check.
This is test harness, not part of the user's path.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")


def install_packages() -> str | None:
    """Install the Debian packages if missing; return why not where that is impossible."""
    if all(shutil.which(x) for x in ("munged", "slurmctld", "slurmd", "sbatch")):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "SLURM packages are missing and installing them needs root and apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if run.returncode != 0:
            return f"could not install {' '.join(PACKAGES)}: {run.stderr[-500:]}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path
    cpus: int = 2
    memory_mb: int = 8000
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    conf: Path = Path("/etc/slurm/slurm.conf")
    wrote_conf: bool = False

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    @property
    def controller_log(self) -> Path:
        return self.root / "slurmctld.log"

    def write_config(self) -> None:
        if self.conf.exists():
            raise FileExistsError(f"{self.conf} exists: this machine has a SLURM setup of "
                                  "its own, which the test will not overwrite")
        host = socket.gethostname().split(".")[0]
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.wrote_conf = True
        self.conf.write_text(f"""\
ClusterName=allianceflow-ci
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.root / 'munge.socket'}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'slurmd.pid'}
SlurmctldLogFile={self.controller_log}
SlurmdLogFile={self.root / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=3600
NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=ci Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")

    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                env=self.env, start_new_session=True)

    def start(self, timeout: float = 60) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.write_config()
        self._start("munged", ["munged", "--foreground", "--force", f"--key-file={key}",
                               f"--socket={self.root / 'munge.socket'}",
                               f"--pid-file={self.root / 'munged.pid'}",
                               f"--log-file={self.root / 'munged.log'}",
                               f"--seed-file={self.root / 'munged.seed'}"])
        self._wait(lambda: (self.root / "munge.socket").exists(), timeout, "munged")
        self._start("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._wait(self.node_idle, timeout, "the node to become idle")

    def node_idle(self) -> bool:
        run = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             env=self.env, timeout=20)
        return run.returncode == 0 and run.stdout.strip() == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    out = (self.root / f"{name}.out").read_text()[-2000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {out}")
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}")

    def submitted_job_ids(self) -> list[int]:
        """Jobs the controller accepted from sbatch, from its log."""
        text = self.controller_log.read_text() if self.controller_log.exists() else ""
        return sorted({int(x) for x in
                       re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", text)})

    def stop(self) -> None:
        """End exactly the processes this cluster started, controller last."""
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.wrote_conf:
            shutil.copy(self.conf, self.root / "slurm.conf")  # kept with the logs
            self.conf.unlink()
            self.wrote_conf = False
