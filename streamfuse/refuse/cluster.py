"""Re-fuse jobs as Ray tasks (`--ray auto` or `--ray HEAD:PORT`), ray from the cluster extra.

Each job is one task, sized by `job.job_resources` (CPUs from the rig; a GPU when it fuses
on CUDA), and at most `workers` run at once (default: as many as the cluster has CPUs).
Inputs and OUT_DIR are read and written by path, so every node must see them at the same
paths (shared storage). A task whose worker dies is run again by Ray (`MAX_RETRIES`); its
output appears only when a run of it has ended well (`job.py`), so the retry writes the same
file and no half file is ever left. Workers report progress to a small actor (`ProgressBox`)
that this process empties twice a second.
"""
from __future__ import annotations

import os
import socket

from streamfuse.errors import UsageError
from streamfuse.refuse.job import JobResult, JobSpec, job_resources, run_job
from streamfuse.refuse.local import Done, Progress

#: Ray runs a task again this many times when its worker dies.
MAX_RETRIES = 3
#: Seconds between looks at the progress actor.
POLL_S = 0.5
#: Seconds to wait for the head's port to answer before giving up.
CONNECT_TIMEOUT_S = 5.0
CLUSTER_EXTRA = "pip install -e '.[cluster]' (or pip install 'streamfuse[cluster]')"


def import_ray():
    """The ray module, or the one-line UsageError naming the extra."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray: needs ray, from the cluster extra: {CLUSTER_EXTRA}") from None
    return ray


def connect(address: str | None) -> bool:
    """Connect this process to the Ray cluster at `address` ("auto": the one this machine is
    part of), unless it already is; True when this call connected (and so should disconnect)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address not in (None, "auto"):
        _check_reachable(address)
    try:
        ray.init(address=address or "auto", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"--ray {address or 'auto'}: no Ray cluster there ({str(exc).splitlines()[0]}); start one "
                         f"with `ray start --head` and give its address (HEAD:PORT)") from None
    return True


def _check_reachable(address: str) -> None:
    """UsageError unless something listens at HOST:PORT (ray.init would retry for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--ray {address}: expected auto or HOST:PORT of the cluster's head "
                         f"(ray start --head prints it)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UsageError(f"--ray {address}: nothing answers there ({exc.strerror or exc}); start the head with "
                         f"`ray start --head --port {port}`, or check the address") from None


class ProgressBox:
    """A Ray actor holding the workers' progress messages until the driver takes them."""

    def __init__(self):
        self.messages: list[tuple[str, int, int]] = []

    def put(self, name: str, frames: int, pid: int) -> None:
        self.messages.append((name, frames, pid))

    def take(self) -> list[tuple[str, int, int]]:
        messages, self.messages = self.messages, []
        return messages


def run_ray(specs: list[JobSpec], address: str | None, workers: int | None, on_progress: Progress,
            on_result: Done) -> list[JobResult]:
    """Run `specs` as Ray tasks; results in the order of `specs`."""
    ray = import_ray()
    disconnect = connect(address)
    try:
        box = ray.remote(num_cpus=0)(ProgressBox).remote()
        task = ray.remote(_ray_job)
        limit = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        todo, running, results = list(range(len(specs))), {}, {}
        while todo or running:
            while todo and len(running) < limit:
                i = todo.pop(0)
                cpus, gpus = job_resources(specs[i])
                ref = task.options(num_cpus=cpus, num_gpus=gpus, max_retries=MAX_RETRIES, retry_exceptions=False,
                                   name=f"refuse {specs[i].item.name}").remote(specs[i], box)
                running[ref] = i
            done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            for message in ray.get(box.take.remote()):
                on_progress(*message)
            for ref in done:
                i = running.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the retries are spent, or the cluster lost the task
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    results[i] = JobResult.failed(specs[i], f"{specs[i].item.path}: Ray gave up on it "
                                                            f"({type(exc).__name__}: {first})", 0.0)
                on_result(results[i])
        for message in ray.get(box.take.remote()):
            on_progress(*message)
        ray.kill(box)
        return [results[i] for i in range(len(specs))]
    finally:
        if disconnect:
            ray.shutdown()


def _ray_job(spec: JobSpec, box) -> JobResult:
    pid = os.getpid()
    box.put.remote(spec.item.name, 0, pid)
    return run_job(spec, lambda name, frames: box.put.remote(name, frames, pid))
