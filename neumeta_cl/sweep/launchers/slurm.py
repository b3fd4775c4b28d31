"""``launcher=slurm``: a SLURM job array through submitit, one array task per run.

Partition, time, memory, CPUs and GPUs come from ``configs/launcher/slurm.yaml``. A preempted or
timed-out task gets submitit's signal (USR2); submitit requeues it, and the requeued task resumes
the run from its checkpoint (the last finished experience). ``launcher.cluster=local`` runs the
same array with submitit's local executor, on this machine (how the tests run it).
"""

from __future__ import annotations

import time
from pathlib import Path

import submitit

from neumeta_cl.errors import ConfigError
from neumeta_cl.sweep.job import JobResult, JobSpec, run_job


class RunTask(submitit.helpers.Checkpointable):
    """A submitit callable: on preemption, submitit pickles it with its arguments and requeues.

    The run itself checkpoints after every experience, so requeuing needs no state of its own.
    """

    def __call__(self, spec: JobSpec) -> JobResult:
        return run_job(spec)


class SlurmLauncher:
    name = "slurm"
    sees_start = False  # on_start means submitted: SLURM starts an array task when the scheduler does

    def __init__(self, folder: Path, cluster: str | None, parameters: dict, max_requeues: int = 3, poll_s: float = 1.0):
        self.folder, self.cluster, self.parameters, self.poll_s = Path(folder), cluster, parameters, poll_s
        self.max_requeues = max_requeues
        self.submitted: list = []  # the submitit jobs, for whoever wants to look (the tests)

    def executor(self) -> submitit.AutoExecutor:
        # Time-outs requeue at most max_requeues times (a SLURM executor setting; preemptions always requeue).
        try:
            ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster,
                                       slurm_max_num_timeout=self.max_requeues)
        except RuntimeError as e:  # submitit's "Could not detect srun": no SLURM here
            raise ConfigError(f"launcher=slurm cannot submit from this machine ({e}); run it on a SLURM login node, "
                              "or use launcher.cluster=local to run the array here.") from None
        ex.update_parameters(**self.parameters)
        return ex

    def run(self, jobs: list[tuple[JobSpec, int]], on_start, on_done, stop) -> None:
        ex = self.executor()
        specs = [spec for spec, _ in jobs]
        submitted = ex.map_array(RunTask(), specs)  # one sbatch --array
        self.submitted = list(zip(specs, submitted))
        for spec in specs:
            on_start(spec)
        pending = {job.job_id: (spec, job) for spec, job in self.submitted}
        while pending:
            if stop():
                for _, job in pending.values():
                    job.cancel(check=False)
            for key, (spec, job) in list(pending.items()):
                if not job.done():
                    continue
                del pending[key]
                try:
                    on_done(job.result())
                except Exception as e:  # the task died or was cancelled without returning
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    on_done(JobResult(spec.index, "failed", reason=f"submitit job {job.job_id} failed: {first[:300]}",
                                      exit_code=1, log=str(job.paths.stderr)))
            time.sleep(self.poll_s)
