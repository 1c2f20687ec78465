"""The slurm profile on a real single-node SLURM cluster (tests/slurm/cluster.sh, no accounting).

Run with: python -m pytest -m slurm tests/test_slurm.py
The module starts the cluster (installing the Debian packages if needed), runs a toy workflow
and the micro preset through snakemake-executor-plugin-slurm, and stops the cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests/slurm/cluster.sh"
PROFILE = REPO / "workflow/profiles/slurm"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PARTITION = "asymprune"  # cluster.sh's partition; not the cluster default, so it must be passed
# docs/slurm.md's flags for a cluster without accounting; the first status check after 3 s
# (MinJobAge is 300 s, far above 3 x 3 s) keeps the chain of short jobs moving
NO_ACCOUNTING_FLAGS = ["--slurm-status-command", "squeue",
                       "--slurm-init-seconds-before-status-checks", "3"]


def run(cmd, env, timeout):
    """Run a command; on a timeout return what it printed so far instead of raising."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        return proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        return None, f"TIMED OUT after {timeout}s\n{text(e.stdout)}{text(e.stderr)}"


class Cluster:
    def __init__(self, path: Path):
        self.path = path
        self.env = dict(os.environ, SLURM_CONF=str(path / "slurm.conf"))
        for var in ("ASYMPRUNE_SLURM_PARTITION", "ASYMPRUNE_SLURM_ACCOUNT",
                    "ASYMPRUNE_SLURM_CPU_PARTITION", "ASYMPRUNE_SLURM_CORES"):
            self.env.pop(var, None)

    def query(self, *cmd) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env,
                              check=True, timeout=30).stdout

    def jobs(self) -> dict[str, tuple[str, str]]:
        """SLURM job id -> (state, comment) of every job slurmctld still remembers."""
        out = self.query("squeue", "--states=all", "--noheader", "--format=%i|%T|%k")
        rows = (line.split("|", 2) for line in out.splitlines() if line.strip())
        return {r[0]: (r[1], r[2]) for r in rows if len(r) == 3}

    def record(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as key -> value (slurmctld keeps finished jobs for MinJobAge)."""
        out = self.query("scontrol", "--oneliner", "show", "job", job_id)
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def gpu_request(self, job_id: str) -> str:
        """The job's per-job/node/task TRES requests, where a --gpus or --gres shows up."""
        return " ".join(f"{k}={v}" for k, v in self.record(job_id).items()
                        if k.startswith("TresPer") or k == "Gres")

    def diagnostics(self) -> str:
        """The tail of slurmctld's and slurmd's logs, for assertion messages."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            log = self.path / "log" / name
            if log.exists():
                parts.append(f"---- {log}\n" + "\n".join(log.read_text().splitlines()[-30:]))
        return "\n".join(parts)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root (SlurmUser=root, apt-get)")
    installed = all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not installed and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    # short path: the munge socket lives under it (unix socket paths are limited to 108 bytes)
    path = tmp_path_factory.mktemp("slurm")
    c = Cluster(path)
    rc, out = run(["bash", str(CLUSTER), "start", str(path)], c.env, timeout=900)
    try:
        assert rc == 0, f"cluster.sh start failed:\n{out}"
        yield c
    finally:
        rc, out = run(["bash", str(CLUSTER), "stop", str(path)], c.env, timeout=120)
        assert rc == 0, f"cluster.sh stop failed:\n{out}"


TOY = textwrap.dedent("""
    rule all:
        input: "gpu.txt"
        localrule: True

    rule cpu:
        output: "cpu.txt"
        resources: gpu=0, mem_mb=200, runtime=5
        shell: 'echo "$SLURM_JOB_ID $SLURM_JOB_PARTITION" > {output}'

    rule gpu:
        input: "cpu.txt"
        output: "gpu.txt"
        resources: gpu=1, mem_mb=200, runtime=5
        shell: 'echo "$SLURM_JOB_ID ${{CUDA_VISIBLE_DEVICES:-none}}" > {output}'
""")


def test_toy_workflow_runs_under_slurm_with_the_profile(cluster, tmp_path):
    """Two rules through the profile alone: it must find out by itself that this cluster has no
    accounting (a plain plugin default, sacct, would wait forever), take partition and account
    from the environment, and give a GPU only to the rule that asks for one."""
    (tmp_path / "Snakefile").write_text(TOY)
    env = dict(cluster.env, ASYMPRUNE_SLURM_PARTITION=PARTITION,
               ASYMPRUNE_SLURM_ACCOUNT="someproject")
    rc, out = run([SNAKEMAKE, "--profile", str(PROFILE), "-s", str(tmp_path / "Snakefile"),
                   "--directory", str(tmp_path),
                   # only to be quick: the status command is left to the profile
                   "--slurm-init-seconds-before-status-checks", "3"],
                  env, timeout=240)
    assert rc == 0, f"{out}\n{cluster.diagnostics()}"

    cpu_id, partition = (tmp_path / "cpu.txt").read_text().split()
    gpu_id, visible = (tmp_path / "gpu.txt").read_text().split()
    assert re.fullmatch(r"\d+", cpu_id) and re.fullmatch(r"\d+", gpu_id), out
    assert cpu_id != gpu_id
    assert partition == PARTITION
    jobs = cluster.jobs()
    assert jobs[cpu_id][0] == "COMPLETED" and jobs[cpu_id][1] == "rule_cpu", jobs
    assert jobs[gpu_id][0] == "COMPLETED" and jobs[gpu_id][1] == "rule_gpu", jobs
    # the gpu resource became a gres request (--gpus=1); gpu=0 asked for none
    assert "gpu:1" in cluster.gpu_request(gpu_id)
    assert "gpu" not in cluster.gpu_request(cpu_id)
    assert visible == "0"
    # without accounting SLURM records any account name it is given
    assert cluster.record(cpu_id)["Account"] == "someproject"


def test_micro_preset_end_to_end_through_slurm(cluster, tmp_path):
    """The micro preset with the documented command for a cluster without accounting."""
    before = set(cluster.jobs())
    rc, out = run([SNAKEMAKE, "--profile", str(PROFILE),
                   "--configfile", str(REPO / "configs/micro.yaml"),
                   "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                   *NO_ACCOUNTING_FLAGS,
                   "--default-resources", f"slurm_partition={PARTITION}", "runtime=60",
                   # keep the SLURM logs of successful jobs too: they show where each job ran
                   "--slurm-keep-successful-logs"],
                  cluster.env, timeout=420)
    assert rc == 0, f"{out}\n{cluster.diagnostics()}"
    assert (tmp_path / "reports/micro/DONE").exists()

    jobs = {i: v for i, v in cluster.jobs().items() if i not in before}
    by_rule: dict[str, list[str]] = {}
    for job_id, (state, comment) in jobs.items():
        assert state == "COMPLETED", (job_id, state, comment)
        by_rule.setdefault(comment.split("_wildcards_")[0].removeprefix("rule_"), []).append(job_id)
    # every stage went through sbatch; the aggregation (report, all) stayed on the submit host
    for rule in ("data", "tokenizer", "finetune", "prune_layers", "refinetune", "nash",
                 "nash_finetune", "evaluate", "benchmark"):
        assert rule in by_rule, (rule, by_rule)
    assert "report" not in by_rule and "all" not in by_rule, by_rule
    micro = yaml.safe_load((REPO / "configs/micro.yaml").read_text())
    # 4 depth variants + 1 NASH variant + 1 equal-budget baseline are evaluated; 3 are pruned;
    # the NASH stage trains the NASH variant and the baseline; one benchmark job times all
    n_models = (len(micro["variants"]) + len(micro["nash"]["variants"])
                + len(micro["baselines"]["variants"]) * len(micro["baselines"]["objectives"]))
    assert len(by_rule["evaluate"]) == n_models == 6, by_rule
    assert len(by_rule["prune_layers"]) == 3 and len(by_rule["nash"]) == 2, by_rule
    assert len(by_rule["benchmark"]) == 1, by_rule
    # the teacher's training ran as that SLURM job: its SLURM log is named after the job id
    (finetune_id,) = by_rule["finetune"]
    logs = list((tmp_path / ".snakemake/slurm_logs/rule_finetune").rglob(f"{finetune_id}.log"))
    assert logs, sorted(str(p) for p in (tmp_path / ".snakemake/slurm_logs").rglob("*.log"))
    # the micro model asks for gpu: 0, so no job of it got a GPU
    assert not [i for i in jobs if "gpu" in cluster.gpu_request(i)], jobs
