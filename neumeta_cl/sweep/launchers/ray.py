"""``launcher=ray``: one Ray task per run, on an existing cluster or on a local one started here.

Each task asks for ``cpus_per_run`` CPUs (its torch thread count) and ``gpus_per_run`` GPUs. A task
whose worker dies is retried up to ``max_retries`` times by Ray, and the retry resumes the run
from its checkpoint (a run folder is found again from its config). Errors a run reports (a bad
config, a NaN loss) are results, not exceptions, so Ray does not retry them.

On an existing cluster (``address=auto`` or ``ray://host:port``) every node needs this package
installed and the run folders on a shared file system.
"""

from __future__ import annotations

import os

from neumeta_cl.errors import ConfigError
from neumeta_cl.sweep.job import JobResult, JobSpec, run_job


def _run_in_ray(spec: JobSpec) -> JobResult:
    os.environ.setdefault("WANDB_SILENT", "true")
    return run_job(spec)


class RayLauncher:
    name = "ray"
    sees_start = False  # on_start means submitted: Ray starts a task when its resources are free

    def __init__(self, address: str | None, num_cpus: int | None, gpus_per_run: float, max_retries: int):
        self.address, self.num_cpus = address, num_cpus
        self.cores = num_cpus or os.cpu_count()  # a local cluster's CPUs; an existing cluster's are a guess
        self.gpus_per_run, self.max_retries = gpus_per_run, max_retries

    def _connect(self):
        import ray

        if ray.is_initialized():
            return ray, False
        kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.num_cpus, **kwargs)
        except ConnectionError as e:
            raise ConfigError(f"Cannot reach the Ray cluster at launcher.address={self.address} ({e}); start it with "
                              "`ray start --head`, or leave launcher.address unset to start a local one.") from None
        return ray, True

    def run(self, jobs: list[tuple[JobSpec, int]], on_start, on_done, stop) -> None:
        ray, started_here = self._connect()
        try:
            remote = ray.remote(_run_in_ray)
            refs = {}
            for spec, threads in jobs:
                ref = remote.options(num_cpus=threads, num_gpus=self.gpus_per_run, max_retries=self.max_retries,
                                     retry_exceptions=False, name=spec.label).remote(spec)
                refs[ref] = spec
                on_start(spec)  # queued on the cluster; Ray starts it when its resources are free
            while refs:
                if stop():
                    for ref in refs:
                        ray.cancel(ref)  # KeyboardInterrupt in the task: the run stops at a safe point
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
                for ref in ready:
                    spec = refs.pop(ref)
                    try:
                        on_done(ray.get(ref))
                    except Exception as e:  # retries used up, or cancelled
                        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                        on_done(JobResult(spec.index, "failed", reason=f"Ray task failed: {first}", exit_code=1,
                                          log=spec.log))
        finally:
            if started_here:
                ray.shutdown()
