"""Where the real datasets of ../shared/datasets are: $XMC_DATASETS, else ../shared/datasets beside
the repository, else the workplace's /work/shared/datasets (for a clone made elsewhere)."""

import os
from pathlib import Path


def datasets_dir():
    candidates = [os.environ.get("XMC_DATASETS"),
                  Path(__file__).resolve().parents[1].parent / "shared" / "datasets",
                  "/work/shared/datasets"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return Path(candidates[1])


DATASETS = datasets_dir()
