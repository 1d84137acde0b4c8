"""Executors: where the runs of a validation execute.

* ``local`` (default): one run after another in this process, on the GPU when there is one.
* ``ray`` (``pip install dsim[ray]``, ``--executor ray [--address host:port]``): every run is a
  ``ray.remote`` task asking for one GPU when the cluster has GPUs (else one CPU); Ray schedules
  them. Results come back to the driver, which writes each one to the results store as it
  arrives (``ray.wait``), so a killed driver loses only the runs in flight. dsim has no scheduler
  of its own. Checkpoints are cached under ``DSIM_CACHE_DIR``: on a multi-node cluster point it at
  shared storage so that a source is pretrained once.

An executor calls ``on_result(spec, result, error)`` once per run: ``result`` a
:class:`dsim.RunResult` or ``None`` with ``error`` the one-line message naming the run. A failing
run never stops the others.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from .errors import DsimError
from .records import ImageSet, RunResult, RunSpec

__all__ = ["LocalExecutor", "RayExecutor", "get_executor"]

OnResult = Callable[[RunSpec, "RunResult | None", "str | None"], None]


class LocalExecutor:
    name = "local"

    def run(
        self,
        specs: Sequence[RunSpec],
        on_result: OnResult,
        *,
        device: str = "auto",
        inline: Mapping[str, ImageSet] | None = None,
        run_progress=None,
    ) -> None:
        from .validation import execute_run

        for spec in specs:
            try:
                result = execute_run(
                    spec,
                    device=device,
                    inline=inline,
                    progress=(lambda d, a, b, _l=spec.label: run_progress(_l, a, b))
                    if run_progress
                    else None,
                )
            except DsimError as exc:
                on_result(spec, None, str(exc))
                continue
            except MemoryError:
                on_result(spec, None, f"{spec.label}: out of host memory")
                continue
            on_result(spec, result, None)


def _ray_task(spec_dict: dict, device: str, inline: Mapping[str, ImageSet] | None) -> dict:
    """Runs in a Ray worker: returns plain dicts (records are serialisable by design)."""
    from dsim.errors import DsimError as _E
    from dsim.records import RunSpec as _Spec
    from dsim.validation import execute_run

    spec = _Spec.from_dict(spec_dict)
    try:
        return {"result": execute_run(spec, device=device, inline=inline).to_dict()}
    except _E as exc:
        return {"error": str(exc)}
    except Exception as exc:  # never let one run's crash take down the others
        return {"error": f"{spec.label}: {type(exc).__name__}: {exc}"}


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, local_mode: bool = False, num_cpus: int | None = None):
        self.address = address
        self.local_mode = local_mode
        self.num_cpus = num_cpus

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
            elif self.num_cpus:
                kw["num_cpus"] = self.num_cpus
            try:
                ray.init(**kw)
            except Exception as exc:
                raise DsimError(
                    f"executor 'ray': cannot start or reach a Ray cluster"
                    f"{' at ' + self.address if self.address else ''}: {exc}"
                ) from None
        return ray

    def run(
        self,
        specs: Sequence[RunSpec],
        on_result: OnResult,
        *,
        device: str = "auto",
        inline: Mapping[str, ImageSet] | None = None,
        run_progress=None,
    ) -> None:
        if not specs:
            return
        ray = self._init()
        gpus = float(ray.cluster_resources().get("GPU", 0))
        task = ray.remote(num_gpus=1 if gpus >= 1 and device != "cpu" else 0, num_cpus=1, max_retries=0)(
            _ray_task
        )
        inline_ref = ray.put(dict(inline)) if inline else None
        pending = {task.remote(s.to_dict(), device, inline_ref): s for s in specs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                spec = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as exc:  # the worker died (OOM killer, node lost)
                    on_result(
                        spec,
                        None,
                        f"{spec.label}: Ray task failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                    )
                    continue
                if "error" in out:
                    on_result(spec, None, out["error"])
                else:
                    on_result(spec, RunResult.from_dict(out["result"]), None)


def get_executor(executor: str | Any = "local", *, address: str | None = None):
    """An executor by name (``local``, ``ray``) or an object with a ``run`` method."""
    if not isinstance(executor, str):
        return executor
    if executor == "local":
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor(address=address)
    from .errors import UnknownNameError

    raise UnknownNameError("executor", executor, ["local", "ray"])
