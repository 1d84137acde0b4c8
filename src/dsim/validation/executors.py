"""Executors: where the pretraining jobs and runs of a validation execute.

``local`` runs the plan in this process, each job just before its first run; ``ray`` submits
jobs and runs as Ray tasks (checkpoints and data through the object store, a crashed task retried
once). Both report back to the driver, which stores every result as it arrives.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from dsim.kernel.errors import DsimError, UnknownNameError, one_line
from dsim.kernel.interfaces import Executor
from dsim.kernel.records import RunResult, RunSpec
from dsim.networks.pretraining import (
    Checkpoint,
    PretrainJob,
    build,
    claim,
    job_data,
    save_checkpoint,
    train_checkpoint,
)
from dsim.validation.runs import Work, execute_run, run_inputs

__all__ = ["Callbacks", "LocalExecutor", "RayExecutor", "get_executor"]

OnResult = Callable[[RunSpec, "RunResult | None", "str | None"], None]


def _noop(*_a) -> None:
    return None


@dataclass
class Callbacks:
    """What an executor reports to the driver, always in the driver's process.

    ``on_result(spec, result, error)`` once per run (``result`` None and ``error`` the one-line
    message naming the run when it failed); ``on_pretrained(job, path, error)`` once per job
    (``path`` the checkpoint in the driver's cache); ``on_event(kind, message)`` for lines to
    show; ``run_progress(description, done, total)`` for the epochs of a run in this process."""

    on_result: OnResult
    on_pretrained: Callable[[PretrainJob, Path | None, str | None], None] = _noop
    on_event: Callable[[str, str], None] = _noop
    run_progress: Callable[[str, int, int], None] | None = None


@contextlib.contextmanager
def torch_threads(cpus: float | None) -> Iterator[None]:
    """torch's intra-op threads set to ``cpus`` (at least 1) for the block; None: unchanged."""
    if cpus is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _message(exc: BaseException, what: str) -> str:
    return one_line(exc, what)


# ------------------------------------------------------------------------------ local
class LocalExecutor(Executor):
    """The plan in this process, one after another: each pretraining job is built (or waited for,
    when another process trains it) just before its first run; on the GPU when there is one."""

    name = "local"

    def slots(self, work: Work) -> int:
        return 1

    def run(self, work: Work, cb: Callbacks) -> None:
        ready: dict[str, Checkpoint] = dict(work.checkpoints)
        job_errors: dict[str, str] = {}
        with torch_threads(work.cpus_per_run):
            for spec in work.runs:
                if spec.key in work.failed:
                    cb.on_result(spec, None, work.failed[spec.key])
                    continue
                cid = work.checkpoint_of.get(spec.key)
                if cid in work.jobs and cid not in ready and cid not in job_errors:
                    self._pretrain(work, work.jobs[cid], ready, job_errors, cb)
                if cid in job_errors:
                    cb.on_result(spec, None, f"{spec.label}: {job_errors[cid]}")
                    continue
                self._run_one(work, spec, ready.get(cid) if cid else None, cb)

    @staticmethod
    def _pretrain(work: Work, job: PretrainJob, ready: dict, job_errors: dict, cb: Callbacks) -> None:
        """Build ``job`` (or wait for another process that trains it) into ``ready``, or its
        one-line failure into ``job_errors``; reported to ``cb`` either way."""
        cid = job.key
        try:
            path = build(
                job,
                work.data[Work.job_key(job)],
                device=work.device,
                progress=cb.run_progress,
                on_wait=lambda m: cb.on_event("info", m),
            )
        except DsimError as exc:
            job_errors[cid] = str(exc)
        except MemoryError:
            job_errors[cid] = f"pretrain {job.describe()}: out of host memory"
        except Exception as exc:  # reported on every dependent run, never lost
            job_errors[cid] = _message(exc, f"pretrain {job.describe()}")
        else:
            ready[cid] = Checkpoint(id=cid, path=str(path))
        cb.on_pretrained(job, None if cid in job_errors else path, job_errors.get(cid))

    @staticmethod
    def _run_one(work: Work, spec: RunSpec, checkpoint: Checkpoint | None, cb: Callbacks) -> None:
        """One run in this process, its result or one-line failure reported to ``cb``."""
        progress = None
        if cb.run_progress is not None:
            progress = lambda d, a, b, _l=spec.label: cb.run_progress(_l, a, b)  # noqa: E731
        try:
            target, checkpoint = run_inputs(
                spec, target=work.data.get(Work.target_key(spec)), checkpoint=checkpoint, device=work.device
            )
            result = execute_run(
                spec, target=target, checkpoint=checkpoint, device=work.device, progress=progress
            )
        except DsimError as exc:
            cb.on_result(spec, None, str(exc))
            return
        except MemoryError:
            cb.on_result(spec, None, f"{spec.label}: out of host memory")
            return
        cb.on_result(spec, result, None)


# ------------------------------------------------------------------------------ Ray tasks
def _set_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def _pretrain_task(job: PretrainJob, device: str, cpus: float, data) -> dict:
    """In a Ray worker: train one job; the checkpoint's bytes go back through the object store."""
    _set_threads(cpus)
    try:
        if data is None:  # shared data placement: read from this node's DSIM_DATA_DIR
            data = job_data(job)
        blob, meta = train_checkpoint(job, data, device=device)
    except DsimError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # one job's crash must not take down the others
        return {"error": _message(exc, f"pretrain {job.describe()}")}
    import ray

    return {"key": job.key, "blob": blob, "meta": meta, "node": ray.get_runtime_context().get_node_id()}


def _run_task(spec: RunSpec, device: str, cpus: float, target, checkpoint) -> dict:
    """In a Ray worker: one run. ``checkpoint`` is a :class:`Checkpoint`, or the output of the
    pretraining task it depends on (Ray resolved that dependency before starting this task)."""
    _set_threads(cpus)
    if isinstance(checkpoint, dict):
        if "error" in checkpoint:
            return {"error": f"{spec.label}: {checkpoint['error']}"}
        checkpoint = Checkpoint(id=checkpoint["key"], blob=checkpoint["blob"])
    try:
        target, checkpoint = run_inputs(spec, target=target, checkpoint=checkpoint, device=device)
        return {"result": execute_run(spec, device=device, target=target, checkpoint=checkpoint)}
    except DsimError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # never let one run's crash take down the others
        return {"error": _message(exc, spec.label)}


def _ray_failure(exc: BaseException, retries: int) -> str:
    """A task Ray could not finish (its worker or node died, out of memory), in one line."""
    kind = type(exc).__name__
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    why = {
        "WorkerCrashedError": "its worker died",
        "NodeDiedError": "its node died",
        "OutOfMemoryError": "its worker ran out of memory",
        "TaskCancelledError": "it was cancelled",
    }.get(kind, f"Ray task failed ({kind})")
    tries = f" (tried {retries + 1} times)" if retries else ""
    return f"{why}{tries}: {first[:200]}"


class RayExecutor(Executor):
    """Jobs and runs as Ray tasks; the driver claims each job (so that no other process trains it
    at the same time), stores each checkpoint in its own cache and each result in the store.

    ``address``: a running cluster (None: start Ray here with ``num_cpus``); ``runtime_env``: passed
    to ``ray.init`` (e.g. ``env_vars``); ``max_retries``: how often a task whose worker died is run
    again before it is reported as failed."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        local_mode: bool = False,
        num_cpus: int | None = None,
        runtime_env: dict | None = None,
        max_retries: int = 1,
        poll_s: float = 1.0,
    ):
        self.address = address
        self.local_mode = local_mode
        self.num_cpus = num_cpus
        self.runtime_env = runtime_env
        self.max_retries = max_retries
        self.poll_s = poll_s
        self.stats: dict[str, int] = {}
        self.job_nodes: dict[str, str] = {}  # pretraining key -> id of the Ray node that trained it

    def _init(self):
        try:
            import ray
        except ImportError:
            raise DsimError("executor 'ray' needs Ray: pip install 'dsim[ray]'") from None
        if not ray.is_initialized():
            kw: dict[str, Any] = {
                "ignore_reinit_error": True,
                "include_dashboard": False,
                "log_to_driver": False,
            }
            if self.address:
                kw["address"] = self.address
            else:  # a Ray of its own here, never a cluster another process happens to run
                kw["address"] = "local"
                if self.num_cpus:
                    kw["num_cpus"] = self.num_cpus
            if self.runtime_env:
                kw["runtime_env"] = self.runtime_env
            try:
                ray.init(**kw)
            except Exception as exc:  # any start-up failure becomes one line naming the address
                raise DsimError(
                    f"executor 'ray': cannot start or reach a Ray cluster"
                    f"{' at ' + self.address if self.address else ''}: {' '.join(str(exc).split())[:300]}"
                ) from None
        return ray

    def _resources(self, ray, work: Work) -> tuple[float, float]:
        """CPUs and GPUs per task; refused when no node could ever run such a task (Ray would
        leave it pending for ever)."""
        res = ray.cluster_resources()
        cpus = float(work.cpus_per_run) if work.cpus_per_run is not None else 1.0
        gpus = work.gpus_per_run
        if gpus is None:
            gpus = 1.0 if float(res.get("GPU", 0)) >= 1 and work.device != "cpu" else 0.0
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(float(r.get("CPU", 0)) >= cpus and float(r.get("GPU", 0)) >= float(gpus) for r in nodes):
            have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes) or "none"
            raise DsimError(
                f"executor 'ray': no node of the cluster has {cpus:g} CPUs and {float(gpus):g} GPUs for a "
                f"run (--cpus-per-run/--gpus-per-run); its nodes have {have}"
            )
        return cpus, float(gpus)

    def slots(self, work: Work) -> int:
        """How many runs the cluster holds at once with the resources each asks for."""
        ray = self._init()
        cpus, gpus = self._resources(ray, work)
        res = ray.cluster_resources()
        n = int(float(res.get("CPU", 0)) // cpus) if cpus else 1 << 30
        if gpus:
            n = min(n, int(float(res.get("GPU", 0)) // gpus))
        return max(1, n)

    def run(self, work: Work, cb: Callbacks) -> None:
        if not work.runs:
            return
        ray = self._init()
        cpus, gpus = self._resources(ray, work)
        self.stats = {"datasets_put": 0, "checkpoints_put": 0, "pretrain_tasks": 0, "run_tasks": 0}
        session = _RaySession(self, ray, work, cb, cpus, gpus)
        try:
            session.start()
            session.wait()
        finally:
            for lock in session.claims.values():
                lock.release()

    def _get(self, ray, ref) -> dict:
        try:
            return ray.get(ref)
        except Exception as exc:  # the task's worker or node died after its retries
            return {"error": _ray_failure(exc, self.max_retries), "crashed": True}

    def _job_done(self, job: PretrainJob, out: dict, claims: dict, job_errors: dict, cb: Callbacks) -> None:
        path = None
        try:
            if "error" in out:
                job_errors[job.key] = (
                    out["error"] if not out.get("crashed") else f"pretrain {job.describe()}: {out['error']}"
                )
            else:
                self.job_nodes[job.key] = out.get("node", "")
                path = save_checkpoint(job, out["blob"], out["meta"])
        finally:
            lock = claims.pop(job.key, None)
            if lock is not None:
                lock.release()
        cb.on_pretrained(job, path, job_errors.get(job.key))

    def _run_done(self, spec: RunSpec, out: dict, work: Work, job_errors: dict, cb: Callbacks) -> None:
        if "result" in out:
            cb.on_result(spec, out["result"], None)
            return
        cid = work.checkpoint_of.get(spec.key)
        if out.get("crashed") and job_errors.get(cid):  # its pretraining failed
            cb.on_result(spec, None, f"{spec.label}: {job_errors[cid]}")
            return
        msg = out["error"]
        cb.on_result(spec, None, msg if msg.startswith(spec.label) else f"{spec.label}: {msg}")


class _RaySession:
    """One :meth:`RayExecutor.run`: the object refs put so far (datasets, checkpoints), the tasks
    pending, the jobs claimed here and those another process trains."""

    def __init__(self, ex: RayExecutor, ray, work: Work, cb: Callbacks, cpus: float, gpus: float):
        opts = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": ex.max_retries}
        self.ex, self.ray, self.work, self.cb, self.cpus = ex, ray, work, cb, cpus
        self.pre_task = ray.remote(**opts)(_pretrain_task)
        self.run_task = ray.remote(**opts)(_run_task)
        self.stats = ex.stats
        self.data_refs: dict[tuple, Any] = {}
        self.ck_refs: dict[
            str, Any
        ] = {}  # checkpoint id -> object ref (a ready checkpoint, or a job's output)
        self.pending: dict[Any, tuple[str, Any]] = {}
        self.claims: dict[str, Any] = {}
        self.held_elsewhere: dict[str, PretrainJob] = {}
        self.job_errors: dict[str, str] = {}
        self.deferred: list[RunSpec] = []

    def data_ref(self, key: tuple):
        if key in self.work.shared or key not in self.work.data:
            return None  # the worker reads it itself
        if key not in self.data_refs:
            self.data_refs[key] = self.ray.put(self.work.data[key])
            self.stats["datasets_put"] += 1
        return self.data_refs[key]

    def put_checkpoint(self, ck: Checkpoint) -> None:
        self.ck_refs[ck.id] = self.ray.put(ck.shippable())
        self.stats["checkpoints_put"] += 1

    def start_job(self, job: PretrainJob, lock) -> None:
        self.claims[job.key] = lock
        ref = self.pre_task.options(name=f"dsim pretrain {job.describe()}").remote(
            job, self.work.device, self.cpus, self.data_ref(Work.job_key(job))
        )
        self.stats["pretrain_tasks"] += 1
        self.ck_refs[job.key] = ref
        self.pending[ref] = ("job", job)

    def submit(self, spec: RunSpec) -> None:
        cid = self.work.checkpoint_of.get(spec.key)
        ref = self.run_task.options(name=f"dsim {spec.label}").remote(
            spec,
            self.work.device,
            self.cpus,
            self.data_ref(Work.target_key(spec)),
            self.ck_refs.get(cid) if cid else None,
        )
        self.stats["run_tasks"] += 1
        self.pending[ref] = ("run", spec)

    def try_job(self, job: PretrainJob) -> bool:
        """Claim and start a job, or use the checkpoint another process finished; False while
        another live process trains it."""
        lock = claim(job, wait=False)
        if lock is not None:
            self.start_job(job, lock)
            return True
        if job.path.exists():
            self.put_checkpoint(Checkpoint(id=job.key, path=str(job.path)))
            self.cb.on_event(
                "info", f"checkpoint of {job.describe()} was trained by another process meanwhile"
            )
            return True
        return False

    def start(self) -> None:
        """Every job claimed or waited for, every ready checkpoint put, every run submitted
        (or deferred until the job it depends on is free)."""
        work, cb = self.work, self.cb
        for job in work.jobs.values():
            if not self.try_job(job):
                self.held_elsewhere[job.key] = job
                cb.on_event("info", f"another process is pretraining {job.describe()}; its runs wait for it")
        used = {work.checkpoint_of[s.key] for s in work.runs if s.key in work.checkpoint_of}
        for cid, ck in work.checkpoints.items():
            if cid in used:
                self.put_checkpoint(ck)
        for spec in work.runs:
            if spec.key in work.failed:
                cb.on_result(spec, None, work.failed[spec.key])
            elif work.checkpoint_of.get(spec.key) in self.held_elsewhere:
                self.deferred.append(spec)
            else:
                self.submit(spec)

    def wait(self) -> None:
        """Each task's output handed to the driver as it finishes, until none is left."""
        ray, ex, work, pending, deferred = self.ray, self.ex, self.work, self.pending, self.deferred
        while pending or deferred:
            for key, job in list(self.held_elsewhere.items()):
                if self.try_job(job):
                    del self.held_elsewhere[key]
                    for spec in [s for s in deferred if work.checkpoint_of.get(s.key) == key]:
                        deferred.remove(spec)
                        self.submit(spec)
            if not pending:
                time.sleep(ex.poll_s)
                continue
            ready, _ = ray.wait(
                list(pending), num_returns=1, timeout=ex.poll_s if self.held_elsewhere else None
            )
            for ref in ready:
                kind, obj = pending.pop(ref)
                out = ex._get(ray, ref)
                if kind == "run" and out.get("crashed"):
                    # Ray fails a task whose dependency failed: settle the job first, if so
                    jref = self.ck_refs.get(work.checkpoint_of.get(obj.key, ""))
                    if jref in pending and ray.wait([jref], timeout=0)[0]:
                        ex._job_done(
                            pending.pop(jref)[1], ex._get(ray, jref), self.claims, self.job_errors, self.cb
                        )
                if kind == "job":
                    ex._job_done(obj, out, self.claims, self.job_errors, self.cb)
                else:
                    ex._run_done(obj, out, work, self.job_errors, self.cb)


def get_executor(executor: str | Executor = "local", *, address: str | None = None) -> Executor:
    """An executor by name (``local``, ``ray``) or an :class:`~dsim.Executor` instance."""
    if isinstance(executor, Executor):
        return executor
    if not isinstance(executor, str):
        raise DsimError(f"executor {executor!r}: not a dsim.Executor (nor the name of one: local, ray)")
    if executor == "local":
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor(address=address)

    raise UnknownNameError("executor", executor, ["local", "ray"])
