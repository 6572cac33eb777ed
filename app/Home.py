"""XMC lab: the Streamlit app. Run from the repository root:

    streamlit run app/Home.py          (or: make app)

The entrypoint draws the shared sidebar (dataset and model settings, bound to the URL) and
routes to the pages in app/views/.
"""

import streamlit as st

from app import sidebar, warmup

st.set_page_config(page_title="XMC lab", page_icon=":material/hub:", layout="wide")

pages = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/data.py", title="Data", icon=":material/table:"),
    st.Page("views/train.py", title="Train", icon=":material/monitoring:"),
    st.Page("views/label_map.py", title="Label map", icon=":material/scatter_plot:"),
    st.Page("views/connectivity.py", title="Connectivity", icon=":material/hub:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("views/inference.py", title="Fast inference", icon=":material/bolt:"),
]
page = st.navigation(pages)
sidebar.sidebar()
warmup.warm_up()
page.run()
