"""notebooks/tour.ipynb runs top to bottom (nbclient, a fresh kernel of this Python, started in the
repository) with no error, and draws its figures."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "tour.ipynb"

pytestmark = pytest.mark.slow


def test_the_tour_notebook_runs_top_to_bottom():
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 6, [sorted(o.get("data", {})) for o in outputs]


def test_the_notebook_is_stored_without_outputs():
    # outputs are made by running it; stored ones would go stale with every change of the engine
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells if c["cell_type"] == "code")
