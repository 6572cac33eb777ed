"""XMC lab: the Streamlit app. Run from any folder:

    python -m app                      (or: make app; or streamlit run app/Home.py in the repository root)

The entrypoint first checks the options the server runs with (app/server.py: this machine only,
XSRF protection, no usage statistics, the upload limit) and shows nothing else when they fall
short; then it draws the shared sidebar (dataset and model settings, bound to the URL) and routes
to the pages in app/views/.
"""

import streamlit as st

from app import server, sidebar, text, warmup

st.set_page_config(page_title="XMC lab", page_icon=":material/hub:", layout="wide")
unsafe = server.problems(st.get_option)
if unsafe:
    st.error("The app is not shown: this server was started with options that are not safe.\n\n" +
             "".join(f"- {text.md(p)}\n" for p in unsafe) + "\n" + server.HOW)
    st.stop()

pages = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/data.py", title="Data", icon=":material/table:"),
    st.Page("views/train.py", title="Train", icon=":material/monitoring:"),
    st.Page("views/label_map.py", title="Label map", icon=":material/scatter_plot:"),
    st.Page("views/connectivity.py", title="Connectivity", icon=":material/hub:"),
    st.Page("views/layer.py", title="The layer drawn", icon=":material/account_tree:"),
    st.Page("views/label.py", title="One label", icon=":material/label:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("views/inference.py", title="Fast inference", icon=":material/bolt:"),
    st.Page("views/tail.py", title="Tail", icon=":material/stacked_bar_chart:"),
]
page = st.navigation(pages)
sidebar.sidebar()
warmup.warm_up()
page.run()
