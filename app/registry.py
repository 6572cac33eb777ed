"""Where the app keeps its runs, and the one job registry per runs directory (st.cache_resource):
every page of every session of this server process sees the same training jobs (app/jobs.py)."""

import os
from pathlib import Path

import streamlit as st

from app.jobs import JobRegistry, default_threads

REPO = Path(__file__).resolve().parents[1]


def runs_root():
    """Where runs are stored: $XMC_RUNS_DIR, else runs/ in the repository."""
    return Path(os.environ.get("XMC_RUNS_DIR") or REPO / "runs")


@st.cache_resource(show_spinner=False)
def job_registry(root: str) -> JobRegistry:
    return JobRegistry(root, max_jobs=int(os.environ.get("XMC_MAX_JOBS", "2")), threads=default_threads())


def jobs():
    """The job registry (and run store) of the current runs directory."""
    return job_registry(str(runs_root()))


def runs_with_checkpoint():
    """Ids of the stored runs that have a checkpoint, newest first."""
    return [r.id for r in reversed(jobs().store.list()) if (r.path / "model.safetensors").exists()]
