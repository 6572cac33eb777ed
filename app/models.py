"""The models the pages look into, built once per process (st.cache_resource): the untrained,
seeded model of the sidebar settings, or a stored run's model at its latest checkpoint."""

import json

import streamlit as st

from engine import TrainConfig, Trainer

from app.datasets import current_dataset, dataset_by_ref
from app.registry import jobs, runs_with_checkpoint
from app.sidebar import train_config


CURRENT = "(current settings, untrained)"


def pick_model(container, label, key, **kw):
    """A select box of the sidebar's untrained model (CURRENT) and the stored runs with a
    checkpoint, bound to the URL: the chosen one."""
    return container.selectbox(label, [CURRENT] + runs_with_checkpoint(), key=key, bind="query-params", **kw)


def load_run_model(run, dataset):
    """The model of a stored run at its latest checkpoint (None when it has no checkpoint yet)."""
    if not (run.path / "model.safetensors").exists():
        return None
    trainer = Trainer(run.config.here(), dataset=dataset)
    run.load_checkpoint(trainer.model)
    return trainer.model


@st.cache_resource(show_spinner="Building the model ...", max_entries=4)
def model_for(config_json, data_ref, run_id):
    """The untrained model of a config (as JSON), or a stored run's model at its checkpoint."""
    dataset = dataset_by_ref(data_ref) if run_id else current_dataset()[0]
    if run_id:
        return load_run_model(jobs().store.get(run_id), dataset)
    return Trainer(TrainConfig.from_dict(json.loads(config_json)), dataset=dataset).model


def current_model(ref):
    """The untrained model of the sidebar settings on dataset `ref`."""
    return model_for(json.dumps(train_config(ref).to_dict(), sort_keys=True), ref, None)
