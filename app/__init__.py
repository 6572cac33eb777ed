"""The Streamlit app (run: streamlit run app/Home.py): pages in app/views/, figures in app/figures.py,
the analyses behind the views in app/analysis.py, training jobs in app/jobs.py and their registry in
app/registry.py; the sidebar's state in app/sidebar.py (its tables in app/settings.py), the datasets and
models it names in app/datasets.py and app/models.py, the background warm-up in app/warmup.py and the
words around the views in app/teaching.py."""
