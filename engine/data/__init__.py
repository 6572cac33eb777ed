"""Datasets: one module per idea.

    xc.py         the Extreme Classification Repository's text format: read_xc, write_xc, name files
    dataset.py    the Dataset record, load_dataset / save_dataset of a directory, normalize_rows,
                  resolve_dataset: "sample" (the bundled sample_data/) or a folder
    synthetic.py  the seeded generator: GeneratorConfig (its parameters, declared once), presets, generate

    ds = load_dataset("sample")
    ds = generate(**GENERATOR_PRESETS["sample"])     # the same matrices: sample_data/ is this, saved
"""

from .dataset import Dataset, load_dataset, normalize_rows, resolve_dataset, save_dataset
from .synthetic import GENERATOR_PRESETS, GeneratorConfig, generate
from .xc import read_names, read_xc, write_names, write_xc

__all__ = ["GENERATOR_PRESETS", "Dataset", "GeneratorConfig", "generate", "load_dataset", "normalize_rows",
           "read_names", "read_xc", "resolve_dataset", "save_dataset", "write_names", "write_xc"]
