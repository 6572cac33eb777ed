"""The words around the views: a page's opening (title, explanation, formula), the notes beside a
view (open in classroom mode, folded away otherwise), and byte counts as people read them."""

import streamlit as st


def intro(title, text, formula=None):
    """A page's opening: title, a plain-language explanation, the formula that matters."""
    st.title(title)
    st.markdown(text)
    if formula:
        st.latex(formula)


def note(text):
    """An explanation beside a view: always in classroom mode, else folded away."""
    if st.session_state.get("classroom"):
        st.info(text)
    else:
        with st.expander("What am I looking at?"):
            st.markdown(text)


def classroom():
    return bool(st.session_state.get("classroom"))


def fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
