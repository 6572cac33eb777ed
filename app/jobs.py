"""Training jobs off the script thread: a small registry (kept in st.cache_resource), keyed by run id.

    registry = JobRegistry("runs", max_jobs=2)
    job = registry.start(TrainConfig.of(head="group_shared", epochs=30), dataset)
    job.stop()                     # takes effect between two records (one step)

A job is a thread that consumes `Trainer.run()` and appends every record to the run store
(`Run.append`; a checkpoint at each evaluation and at the end). It never calls st.*: the
page reads the run store, which is the truth, so a reload or a second tab finds the run.
Pause / Step / Stop are flags the thread checks between records. Next to the engine's files
a job keeps `status.json` in the run directory: state (starting, running, paused, done,
stopped, failed), the error message of a failed run, and the sizes the app shows.
"""

import os
import sys
import threading
import time
import traceback

from engine import Run, RunStore, Trainer, XMCError

STATUS = "status.json"
LIVE = ("starting", "running", "paused")


class JobLimitError(XMCError):
    """Too many trainings at once."""


STATUS_FIELDS = {"state": str, "error": str, "updated": float, "n_features": int, "n_labels": int, "dataset": str,
                 "head_params": int, "total_steps": int, "first_record_s": float, "first_eval_s": float}


def write_status(run_path, **fields):
    """Merge fields into <run>/status.json, atomically (Run.write_json). Where it cannot be written
    (a full disk) the status stays as it was and stderr says so: the run store is the truth."""
    status = read_status(run_path)
    status.update(fields, updated=time.time())
    try:
        Run(run_path).write_json(STATUS, status, indent=None)
    except XMCError as e:
        print(f"status not updated: {e}", file=sys.stderr)


def read_status(run_path):
    """The run's status.json: its STATUS_FIELDS of the right type (or null), {} where it is missing
    or broken (a FIFO, a device, not JSON, not an object)."""
    try:
        status = Run(run_path).read_json(STATUS, {})
    except XMCError:
        return {}
    if not isinstance(status, dict):
        return {}
    return {k: v for k, v in status.items() if k in STATUS_FIELDS and (v is None or _is(v, STATUS_FIELDS[k]))}


def _is(value, kind):
    """isinstance, with ints as floats and never a bool as a number."""
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, (int, float) if kind is float else kind)


def default_threads():
    """CPU threads a training job uses: $XMC_APP_THREADS, else all cores but one (the page needs one).
    On a small machine a job with every core, plus the server and the browser, oversubscribes it and
    spinning thread pools slow both the training and the page (measured: ~20x fewer steps on 2 cores)."""
    env = os.environ.get("XMC_APP_THREADS")
    return max(1, int(env)) if env else max(1, (os.cpu_count() or 2) - 1)


def limit_threads(n):
    """Use at most n threads: torch's intra-op pool (process-wide) and numba's (this thread)."""
    import numba
    import torch
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


class Job:
    def __init__(self, run, config, dataset, first_eval=True, threads=None):
        self.run, self.config, self.dataset, self.first_eval = run, config, dataset, first_eval
        self.threads = threads
        self.state = "starting"
        self.error = None
        self.started = time.perf_counter()
        self.first_record_s = None          # seconds from start to the first record in the store
        self.first_eval_s = None            # ... to the first evaluation
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._step_credit = 0
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._work, name=f"train-{run.id}", daemon=True)

    @property
    def id(self):
        return self.run.id

    @property
    def alive(self):
        return self.thread.is_alive()

    def stop(self):
        self._stop.set()

    def pause(self):
        if self.alive:
            self._paused.set()

    def resume(self):
        self._paused.clear()

    def step(self):
        """While paused: let one more training step through."""
        with self._lock:
            self._step_credit += 1

    @property
    def paused(self):
        return self._paused.is_set()

    def _wait_while_paused(self):
        """Block while paused (no step credit), waking often enough to see Stop."""
        announced = False
        while self._paused.is_set() and not self._stop.is_set():
            with self._lock:
                if self._step_credit > 0:
                    self._step_credit -= 1
                    return
            if not announced:
                self._set_state("paused")
                announced = True
            time.sleep(0.02)
        if announced and not self._stop.is_set():
            self._set_state("running")

    def _set_state(self, state, **extra):
        self.state = state
        write_status(self.run.path, state=state, **extra)

    def _consume(self, trainer):
        """Let the trainer's records into the run store, pausing and stopping between two of them
        (with first_eval, a first point at step 0: metrics show at once); "done" or "stopped"."""
        self._wait_while_paused()
        if self._stop.is_set():
            return "stopped"
        for record in trainer.recorded(self.run, first_eval=self.first_eval):
            time.sleep(0)                             # hand the GIL to the page's script thread
            self._timed(record)
            self._wait_while_paused()
            if self._stop.is_set():
                return "stopped"
        return "done"

    def _timed(self, record):
        """Note when the first record and the first evaluation reached the store."""
        now = time.perf_counter() - self.started
        if self.first_record_s is None:
            self.first_record_s = now
        if record["kind"] == "eval" and self.first_eval_s is None:
            self.first_eval_s = now

    def _work(self):
        trainer, state = None, "failed"
        try:
            if self.threads:
                limit_threads(self.threads)
            trainer = Trainer(self.config, dataset=self.dataset)
            ds, model = trainer.dataset, trainer.model
            self._set_state("running", n_features=ds.n_features, n_labels=ds.n_labels, dataset=ds.name,
                            head_params=model.head_params(),
                            total_steps=trainer.total_steps)
            state = self._consume(trainer)
        except XMCError as e:                         # a bad setting: the message says which
            self.error = str(e)
        except Exception as e:                        # noqa: BLE001 - the job thread reports, never raises
            self.error = f"{type(e).__name__}: {e}"
            traceback.print_exc(file=sys.stderr)
        finally:
            if trainer is not None and state in ("stopped", "done"):
                try:
                    self.run.save_checkpoint(trainer.model, trainer)
                except (OSError, XMCError) as e:            # a full disk: the last checkpoint is kept
                    self.error = f"checkpoint not saved: {e}"
            self._set_state(state, error=self.error, first_record_s=self.first_record_s,
                            first_eval_s=self.first_eval_s)


class JobRegistry:
    """The training jobs of this server process, keyed by run id; at most max_jobs at once."""

    def __init__(self, root, max_jobs=2, threads=None):
        self.store = RunStore(root)
        self.max_jobs = max_jobs
        self.threads = threads
        self.jobs = {}
        self._lock = threading.Lock()

    def active(self):
        return [j for j in self.jobs.values() if j.alive]

    def start(self, config, dataset=None, first_eval=True):
        """Create the run and start its thread; JobLimitError when max_jobs are running."""
        with self._lock:
            active = self.active()
            if len(active) >= self.max_jobs:
                raise JobLimitError(f"{len(active)} trainings are running already (at most {self.max_jobs} "
                                    f"at once): stop one ({', '.join(j.id for j in active)}) first")
            run = self.store.create(config)
            write_status(run.path, state="starting")
            job = Job(run, config, dataset, first_eval=first_eval, threads=self.threads)
            self.jobs[run.id] = job
            job.thread.start()
        return job

    def get(self, run_id):
        return self.jobs.get(run_id)

    def stop(self, run_id):
        job = self.jobs.get(run_id)
        if job is not None:
            job.stop()
        return job

    def stop_all(self, timeout=5.0):
        for job in list(self.jobs.values()):
            job.stop()
        for job in list(self.jobs.values()):
            job.thread.join(timeout)

    def state(self, run):
        """The state of a stored run: live from its job here, else from status.json; a run that says
        it is live but has no thread in this process was interrupted (the server stopped)."""
        job = self.jobs.get(run.id)
        if job is not None and job.alive:
            return job.state
        state = read_status(run.path).get("state")
        if state is None:
            return "finished" if (run.path / "model.safetensors").exists() else "unknown"
        return "interrupted" if state in LIVE else state
