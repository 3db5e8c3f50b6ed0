"""Many scans in one go: ``astra-inr batch CONFIG.toml``, in-process or on a Dask cluster.

The configuration file (TOML)::

    out = "results"                 # relative paths are relative to this file
    [defaults]                      # any reconstruct option (snake_case, as on the CLI)
    algorithm = "INR"
    iterations = 800                # default for INR: chosen by the data
    [[scan]]
    input = "beamtime/*.h5"         # a path or a glob; each match is one scan
    [[scan]]
    input = "sample_7"
    name = "sample_7_top"           # result folder name (default: the file's stem)
    rows = "0:64"                   # per-scan overrides

Each scan is written to ``out/<name>/`` (atomically: a folder there is a
finished result).  A finished scan is skipped on the next run, so an
interrupted batch resumes; leftovers of a scan interrupted while writing are
removed and it is redone, an INR from its last checkpoint where it has one
(:mod:`astra_inr.checkpoint`).  A scan that fails (missing, corrupt, inconsistent)
is recorded with its error in ``out/batch_report.json`` and the others go on.

Without a cluster the scans run one after the other in this process.  With
``workers`` a local Dask cluster runs one scan per task in separate
processes; with ``scheduler`` an existing cluster (e.g. dask-jobqueue on
SLURM) does.  Each worker imports astra_inr, which registers the plugin there,
and takes one GPU (worker number modulo the GPUs it sees) when there are GPUs.
Dask starts its worker processes with ``OMP_NUM_THREADS=1`` (its
``distributed.nanny.pre-spawn-environ``), so each scan sets PyTorch's CPU
threads itself: the cores this process may run on, shared among the task
threads of every worker on its host (`_share_cores`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .io.writers import is_complete_result, write_json
from .progress import ProgressBar
from .recon import ReconOptions, reconstruct

__all__ = ["ScanJob", "load_batch", "run_batch", "BATCH_REPORT"]

BATCH_REPORT = "batch_report.json"
_SCAN_KEYS = {"input", "name"}


@dataclass
class ScanJob:
    """One scan of a batch: where it comes from, where it goes, how it is reconstructed."""

    name: str
    input: str
    out_dir: str
    options: dict[str, Any]
    error: str | None = None       # a problem found while planning (e.g. no file matches)


def load_batch(config_path: str | os.PathLike) -> tuple[Path, list[ScanJob]]:
    """Read and check a batch file; returns (output folder, jobs).

    Every job's options are validated here, so a typo fails before any work.

    Raises
    ------
    ValueError
        Unreadable TOML, no ``out``, no ``[[scan]]``, unknown keys, bad values,
        duplicate names (messages name the file and the scan entry).
    """
    path = Path(config_path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    base = path.parent
    unknown = set(data) - {"out", "defaults", "scan"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; expected out, "
                         "[defaults] and [[scan]]")
    if "out" not in data:
        raise ValueError(f"{path}: missing 'out' (the folder results go to)")
    out = (base / data["out"]).resolve()
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ValueError(f"{path}: [defaults] must be a table")
    _check_options(defaults, f"{path} [defaults]")
    scans = data.get("scan", [])
    if not scans:
        raise ValueError(f"{path}: no [[scan]] entries")
    jobs: list[ScanJob] = []
    for i, entry in enumerate(scans, 1):
        where = f"{path} [[scan]] #{i}"
        if "input" not in entry:
            raise ValueError(f"{where}: missing 'input'")
        overrides = {k: v for k, v in entry.items() if k not in _SCAN_KEYS}
        options = {**defaults, **overrides}
        _check_options(options, where)
        pattern = str(base / entry["input"]) if not os.path.isabs(entry["input"]) else entry["input"]
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            name = entry.get("name") or Path(entry["input"]).stem.replace("*", "") or f"scan{i}"
            jobs.append(ScanJob(name, pattern, str(out / name), options,
                                error=f"no file matches {entry['input']!r}"))
            continue
        for m in matches:
            stem = Path(m.rstrip("/")).stem
            name = entry.get("name") or stem
            if entry.get("name") and len(matches) > 1:
                name = f"{entry['name']}_{stem}"
            jobs.append(ScanJob(name, m, str(out / name), options))
    seen: dict[str, str] = {}
    for job in jobs:
        if job.name in seen:
            raise ValueError(f"{path}: two scans would write to {job.name!r} ({seen[job.name]} and "
                             f"{job.input}); give them distinct 'name's")
        seen[job.name] = job.input
    return out, jobs


def _check_options(options: dict[str, Any], where: str) -> None:
    try:
        ReconOptions.from_mapping(options, what="option")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _assign_gpu(options: dict[str, Any]) -> dict[str, Any]:
    """On a Dask worker with GPUs: this worker's GPU (worker number modulo the GPUs)."""
    try:
        import torch
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return options
    if not torch.cuda.is_available() or "gpu_index" in options:
        return options
    try:
        number = int(str(worker.name).rsplit("-", 1)[-1])
    except ValueError:
        number = abs(hash(worker.name))
    index = number % torch.cuda.device_count()
    import astra

    astra.set_gpu_index(index)
    return {**options, "gpu_index": index}


def _usable_cores() -> int:
    """CPU cores this process may run on (its affinity, e.g. a SLURM job's cgroup)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def _share_cores() -> int | None:
    """On a Dask worker: set PyTorch's CPU threads to this task's share of the host's cores.

    Dask's nanny spawns workers with ``OMP_NUM_THREADS=1``, which would leave
    one core per scan however many the host has.  The share is the usable
    cores divided by the task threads (``nthreads``) of all the workers on this
    host, so a local cluster of N workers splits the machine N ways and several
    worker processes of one job do not oversubscribe it.  Returns the threads
    set, or None outside a Dask worker (PyTorch's own default then stands).
    An ``OMP_NUM_THREADS`` above 1 in the worker's environment was set on
    purpose (Dask's default is 1) and is kept.
    """
    try:
        from distributed import get_client, get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    import torch

    asked = os.environ.get("OMP_NUM_THREADS", "")
    if asked.isdigit() and int(asked) > 1:
        torch.set_num_threads(int(asked))
        return int(asked)
    host = worker.address.rsplit(":", 1)[0]
    try:
        workers = get_client().scheduler_info()["workers"]
        tasks = sum(w["nthreads"] for address, w in workers.items()
                    if address.rsplit(":", 1)[0] == host)
    except Exception:  # the scheduler unreachable: count this worker alone
        tasks = 0
    threads = max(1, _usable_cores() // max(tasks, worker.state.nthreads, 1))
    torch.set_num_threads(threads)
    return threads


def run_job(job: ScanJob, overwrite: bool = False, quiet: bool = True) -> dict[str, Any]:
    """Reconstruct one scan; never raises: returns its record for the batch report."""
    import astra_inr  # noqa: F401  (registers the INR plugin in a fresh worker process)

    record: dict[str, Any] = {"name": job.name, "input": job.input, "out": job.out_dir}
    start = time.perf_counter()
    out = Path(job.out_dir)
    if job.error:
        return {**record, "status": "failed", "error": job.error, "seconds": 0.0}
    if is_complete_result(out) and not overwrite:
        return {**record, "status": "skipped", "reason": "finished earlier", "seconds": 0.0}
    # A folder without a report is not ours to trust (a crash mid-copy, a user's
    # folder): only our own temporary leftovers are removed.
    for stale in out.parent.glob(f".tmp-{out.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    threads = _share_cores()
    if threads is not None:
        record["cpu_threads"] = threads
    try:
        options = ReconOptions.from_mapping(_assign_gpu(job.options))
        progress = None if quiet else ProgressBar(prefix=f"[{job.name}] ")
        reconstruct(job.input, out, options, overwrite=overwrite or out.exists(), progress=progress)
        status = {"status": "done"}
    except Exception as exc:  # one failed scan must not stop the others
        status = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc(limit=6)}
    return {**record, **status, "seconds": time.perf_counter() - start}


def _write_report(out: Path, config_path: Path, records: list[dict[str, Any]],
                  started: float, mode: str) -> None:
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed")}
    tmp = out / f".{BATCH_REPORT}.tmp"
    write_json(tmp, {"config": str(config_path), "mode": mode, "counts": counts,
                     "seconds": time.perf_counter() - started, "scans": records})
    os.replace(tmp, out / BATCH_REPORT)


def run_batch(config_path: str | os.PathLike, workers: int | None = None,
              scheduler: str | None = None, overwrite: bool = False, quiet: bool = False,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every scan of a batch file; returns the batch report (also written to out/).

    Parameters
    ----------
    workers : int, optional
        Start a local Dask cluster of this many worker processes.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``).
    overwrite : bool
        Redo finished scans too.
    """
    if workers is not None and scheduler is not None:
        raise ValueError("give either workers or scheduler, not both")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    say = log or (lambda msg: None)
    config_path = Path(config_path)
    out, jobs = load_batch(config_path)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    mode = "in-process" if workers is None and scheduler is None else \
        (f"local dask cluster, {workers} workers" if workers else f"dask scheduler {scheduler}")
    say(f"batch: {len(jobs)} scans -> {out} ({mode})")

    def done(record: dict[str, Any]) -> None:
        records.append(record)
        _write_report(out, config_path, records, started, mode)
        detail = record.get("error") or record.get("reason") or f"{record['seconds']:.1f}s"
        say(f"[{len(records)}/{len(jobs)}] {record['name']}: {record['status']} ({detail})")

    if workers is None and scheduler is None:
        for job in jobs:
            done(run_job(job, overwrite, quiet))
    else:
        try:
            from distributed import Client, LocalCluster, as_completed
        except ImportError:
            raise RuntimeError("the Dask cluster path needs the optional extra: "
                               "pip install 'astra-inr[distributed]'") from None
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None) if workers else None
        try:
            with Client(cluster if cluster else scheduler) as client:
                futures = [client.submit(run_job, job, overwrite, True, pure=False, key=f"scan-{job.name}")
                           for job in jobs]
                for future in as_completed(futures):
                    try:
                        done(future.result())
                    except Exception as exc:  # a worker died: record it, keep going
                        name = future.key.removeprefix("scan-") if isinstance(future.key, str) else "?"
                        done({"name": name, "status": "failed", "seconds": 0.0,
                              "error": f"worker failure: {type(exc).__name__}: {exc}"})
        finally:
            if cluster is not None:
                cluster.close()
    order = {job.name: i for i, job in enumerate(jobs)}
    records.sort(key=lambda r: order.get(r["name"], len(order)))
    _write_report(out, config_path, records, started, mode)
    return json.loads((out / BATCH_REPORT).read_text())
