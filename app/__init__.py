"""The Streamlit app (run: streamlit run app/Home.py): pages in app/views/, figures in app/figures.py,
training jobs in app/jobs.py, the analyses behind the views in app/analysis.py."""
