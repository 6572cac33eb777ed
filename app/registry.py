"""Where the app keeps its runs, and the one job registry per runs directory (st.cache_resource):
every page of every session of this server process sees the same training jobs (app/jobs.py).
The pages list the stored runs through here: a broken run is listed with its error (the engine's
RunStore.entries), and a runs directory that cannot be listed is an error box, not a traceback."""

import os
from pathlib import Path

import streamlit as st

from engine import RunNotFoundError

from app import text
from app.jobs import JobRegistry, default_threads

REPO = Path(__file__).resolve().parents[1]


def runs_root():
    """Where runs are stored: $XMC_RUNS_DIR, else runs/ in the working directory (as the CLI's --runs)."""
    return Path(os.environ.get("XMC_RUNS_DIR") or "runs").absolute()


@st.cache_resource(show_spinner=False)
def job_registry(root: str) -> JobRegistry:
    return JobRegistry(root, max_jobs=int(os.environ.get("XMC_MAX_JOBS", "2")), threads=default_threads())


def jobs():
    """The job registry (and run store) of the current runs directory."""
    return job_registry(str(runs_root()))


def run_entries():
    """Every stored run, newest first: RunEntry(run, config, records, error), the error's message
    in place of config and records for a broken run."""
    try:
        return list(reversed(jobs().store.entries()))
    except RunNotFoundError as e:                        # the runs directory itself
        st.error(text.md(e))
        return []


def runs_with_checkpoint():
    """Ids of the stored runs that have a checkpoint (in any state: a broken one is an error box
    where it is chosen), newest first."""
    try:
        runs = jobs().store.list()
    except RunNotFoundError as e:
        st.error(text.md(e))
        return []
    return [r.id for r in reversed(runs) if os.path.lexists(r.checkpoint_path)]
