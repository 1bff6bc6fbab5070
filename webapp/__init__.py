"""The Streamlit app's glue (``common``) and its pages (``pages/``, run by ``app.py``'s ``st.navigation``).

The app is a thin layer over :mod:`scclip.explore`, which holds its logic without Streamlit.
"""
