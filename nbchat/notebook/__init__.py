"""The notebook side of nbchat: the ``%%chat`` magic (`magics`), the live view of a turn
(`view`, `render`) and the parameter panel (`panel`).

Nothing is imported here on purpose: ``%load_ext nbchat`` loads only `magics` (IPython and
traitlets), and the widget modules (anywidget, ipywidgets, markdown-it-py) load on first use.
"""
