"""Pairs-trading dashboard: `streamlit run app.py`.

`streamlit run app.py` first imports this file as the module "app" to find the server
``app`` (below), then runs it as "__main__" in every browser session. Only a session draws
the page (``page.main``), and only a session imports what the page needs: the server's
import stops at Streamlit and ``server`` (which imports the rest in a thread once the
server listens), so that the browser gets Streamlit's scripts ~0.6 s sooner.

The page's code lives in ``page``, imported once per process, not here: Streamlit
compiles this script anew after the last session disconnects (a reload of the only tab)
and re-creates every cached function's key on every run, ~30 ms of a reload's first run
for the page's ~1,800 lines.
"""

import streamlit as st

if __name__ == "__main__":
    import page

    page.main()
else:  # imported by `streamlit run app.py`: the server, with the REST API (server.py)
    import server

    app = st.App(__file__, routes=server.ROUTES, lifespan=server.lifespan)
