"""Home: what the lab is for, and where to start."""

import streamlit as st

from app import teaching

teaching.intro(
    "XMC lab: output layers for millions of labels",
    "Extreme multi-label classification (XMC) tags each input with a few of a huge number of labels "
    "(L can be millions). The last layer dominates: a dense layer holds one weight per label and input, "
    "so its memory grows as d·L. A **fixed fan-in** layer lets each label read only k of the d inputs; a "
    "**group-shared** layer lets m labels share one set of k inputs, so the index costs G·k with G = L/m.",
    r"\text{dense: } O(d\cdot L) \qquad \text{fixed fan-in / group-shared: } O(k\cdot L) \;+\; "
    r"\underbrace{O(k\cdot L/m)}_{\text{indices}}, \qquad z_{g m + j} = \sum_{t=1}^{k} W_{g,j,t}\, h_{\mathrm{idx}[g,t]}",
)
st.markdown(
    "**Start here:** pick a dataset in the sidebar (the bundled sample is ready), look at it on **Data**, "
    "train a head on **Train** and watch the metrics live, then see how labels group on **Label map** and "
    "which inputs each group reads on **Connectivity**. **Compare** puts memory and speed of the heads side "
    "by side, and **Fast inference** puts a trained model's labels in hash tables, so a point scores only "
    "a few of them. With **dynamic sparse training** (Train page) the index sets move while the model trains: "
    "each group swaps its weakest inputs for new ones, and Connectivity replays the updates. "
    "The settings in the sidebar live in the URL: copy the address to share exactly this setup."
)
cols = st.columns(6)
for col, (path, label, icon) in zip(cols, [
        ("views/data.py", "Data", ":material/table:"), ("views/train.py", "Train", ":material/monitoring:"),
        ("views/label_map.py", "Label map", ":material/scatter_plot:"),
        ("views/connectivity.py", "Connectivity", ":material/hub:"),
        ("views/compare.py", "Compare", ":material/compare_arrows:"),
        ("views/inference.py", "Fast inference", ":material/bolt:")]):
    col.page_link(path, label=label, icon=icon)
teaching.note(
    "Each page opens with a short explanation and the formula behind its numbers. Classroom mode (sidebar) "
    "keeps those explanations open and hides the advanced controls."
)
