"""docs/scaling.md's SLURM recipe builds a dask-jobqueue SLURMCluster whose job script
asks for what the text says (no jobs are submitted: constructing needs no SLURM)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

DOC = ROOT / "docs" / "scaling.md"


def recipe() -> str:
    text = DOC.read_text()
    after = text.split("<!-- recipe: slurm-cluster -->", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_slurm_recipe_builds_the_cluster_it_describes(tmp_path):
    pytest.importorskip("dask_jobqueue")
    code = (
        recipe()
        + "\nprint(cluster.job_script())\nprint('SATURATION', cluster.scheduler.WORKER_SATURATION)\ncluster.close()\n"
    )
    # in a subprocess: the recipe sets dask's configuration globally
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    script = result.stdout
    for line in (
        "#SBATCH -p regular",
        "#SBATCH -A mx-project",
        "#SBATCH --cpus-per-task=32",
        "#SBATCH -t 04:00:00",
        "source /opt/braggsim/venv/bin/activate",
    ):
        assert line in script.splitlines(), line
    worker = next(line for line in script.splitlines() if "dask_worker" in line or "dask worker" in line)
    assert worker.startswith("python -m distributed.cli.dask_worker tcp://")
    assert "--nthreads 1" in worker and "--nworkers 32" in worker and "--nanny" in worker
    assert "SATURATION 1.0" in script
