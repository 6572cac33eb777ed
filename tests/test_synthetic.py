"""Tests for engine/data/synthetic.py: the generator, its one declaration of parameters, its presets."""

import dataclasses
import hashlib
import re

import numpy as np
import pytest
import scipy.sparse as sp

from engine.__main__ import main
from engine.data import (GENERATOR_PRESETS, GeneratorConfig, generate, normalize_rows, resolve_dataset,
                         save_dataset)
from engine.errors import ConfigError

SMALL = dict(n_points=600, n_features=300, n_labels=400, n_clusters=12, seed=3)


def _arrays(ds):
    return [a for M in (ds.X_train, ds.Y_train, ds.X_test, ds.Y_test) for a in (M.data, M.indices, M.indptr)]


def test_generate_is_deterministic():
    a, b, c = generate(**SMALL), generate(**SMALL), generate(**{**SMALL, "seed": 4})
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert a.label_names == b.label_names
    assert any(x.shape != z.shape or np.any(x != z) for x, z in zip(_arrays(a), _arrays(c)))


def test_generate_shapes_and_params():
    ds = generate(**SMALL, mean_labels=5.0, mean_features=20.0, test_fraction=0.3, name="toy")
    assert ds.name == "toy"
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_labels) == (420, 180, 300, 400)
    for M in (ds.X_train, ds.Y_train, ds.X_test, ds.Y_test):
        assert M.format == "csr" and M.dtype == np.float32 and M.has_canonical_format
    s = ds.summary()
    assert 4.0 <= s["avg_labels_per_point"] <= 6.0
    assert 16 <= s["avg_features_per_point"] <= 24
    norms = np.sqrt(ds.X_train.multiply(ds.X_train).sum(1)).A1
    np.testing.assert_allclose(norms[norms > 0], 1, rtol=1e-5)
    assert re.fullmatch(r"c\d\d_label_\d{4}", ds.label_names[0]) and ds.feature_names[42] == "f0042"


def test_generate_sample_preset_is_long_tailed():
    sample = GeneratorConfig(**GENERATOR_PRESETS["sample"])
    ds = generate(**GENERATOR_PRESETS["sample"])
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_labels) == (3000, 1000, 1000, 2000)
    Y = sp.vstack([ds.Y_train, ds.Y_test])
    assert abs(Y.nnz / Y.shape[0] - sample.mean_labels) <= 0.2 * sample.mean_labels
    freq = np.sort(Y.sum(0).A1)[::-1]
    assert freq[:20].sum() > 2 * freq[1000:].sum()          # top 1% of labels vs bottom 50%
    assert freq[0] > 20 * np.median(freq)


def test_generate_label_names_reveal_clusters():
    # labels of one cluster share their points' features far more than labels of different clusters
    ds = generate(**SMALL)
    cluster = np.array([int(n[1:3]) for n in ds.label_names])
    P = normalize_rows(ds.Y_train.T @ ds.X_train).toarray()             # (L, D) label embeddings
    seen = np.flatnonzero(np.abs(P).sum(1) > 0)
    S, same = P[seen] @ P[seen].T, cluster[seen][:, None] == cluster[seen][None]
    assert S[same].mean() > 5 * S[~same].mean()


BAD_PARAMS = [
    ("n_points", 1), ("n_points", 10.0), ("n_features", 0), ("n_labels", 0), ("n_clusters", 0),
    ("n_clusters", 401), ("alpha", -0.5), ("alpha", float("nan")), ("mean_labels", 0), ("mean_features", 0.5),
    ("test_fraction", 0.0), ("test_fraction", 1.0), ("noise", -0.1), ("noise", 1.5), ("seed", -1),
    ("seed", 1.5), ("name", ""),
]


@pytest.mark.parametrize("param, value", BAD_PARAMS, ids=[f"{p}={v!r}" for p, v in BAD_PARAMS])
def test_generate_rejects_bad_params(param, value):
    with pytest.raises(ConfigError, match=re.escape(f"{param} must be")) as info:
        generate(**{**SMALL, param: value})
    assert repr(value) in str(info.value)


# ----------------------------------------------------------------------------
# the one declaration: defaults, presets, the CLI's flags

@pytest.mark.parametrize("preset", sorted(GENERATOR_PRESETS))
def test_a_preset_overrides_declared_parameters(preset):
    # a preset is a few overrides of GeneratorConfig's defaults, valid ones
    assert set(GENERATOR_PRESETS[preset]) <= {f.name for f in dataclasses.fields(GeneratorConfig)}
    GeneratorConfig(**GENERATOR_PRESETS[preset])


def test_generator_config_checks_on_construction():
    with pytest.raises(ConfigError, match=re.escape("n_clusters must be an integer in [1, n_labels=30], got 31")):
        GeneratorConfig(n_labels=30, n_clusters=31)


def test_cli_generate_flags_come_from_the_declaration(tmp_path):
    # every parameter but the name is a flag; the name is the output folder's
    params = dict(n_points=300, n_features=40, n_labels=30, n_clusters=3, alpha=0.5, mean_labels=2.0,
                  mean_features=8.0, test_fraction=0.3, noise=0.2, seed=4)
    assert set(params) == {f.name for f in dataclasses.fields(GeneratorConfig)} - {"name"}
    argv = [a for k, v in params.items() for a in ("--" + k.replace("_", "-"), str(v))]
    assert main(["generate", "--out", str(tmp_path / "toy"), *argv]) == 0
    save_dataset(generate(**params, name="toy"), tmp_path / "direct")
    for f in ("train.txt", "test.txt", "labels.txt", "features.txt"):
        assert (tmp_path / "toy" / f).read_bytes() == (tmp_path / "direct" / f).read_bytes(), f


def test_bundled_sample_matches_the_generator(tmp_path):
    # sample_data/ is exactly what `python -m engine generate --preset sample --out DIR` writes
    bundled = resolve_dataset("sample")
    if not (bundled / "train.txt").is_file():
        pytest.skip("sample_data/ not generated yet")
    assert main(["generate", "--preset", "sample", "--out", str(tmp_path / "fresh")]) == 0
    for f in ("train.txt", "test.txt", "labels.txt", "features.txt"):
        fresh, shipped = (tmp_path / "fresh" / f).read_bytes(), (bundled / f).read_bytes()
        assert hashlib.sha256(fresh).hexdigest() == hashlib.sha256(shipped).hexdigest(), f
