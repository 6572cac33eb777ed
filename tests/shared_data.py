"""Where the real datasets are: $XMC_DATASETS, else ../shared/datasets beside the repository.
Tests that need one skip when it is not there."""

import os
from pathlib import Path

DATASETS = Path(os.environ.get("XMC_DATASETS") or Path(__file__).resolve().parents[2] / "shared" / "datasets")
