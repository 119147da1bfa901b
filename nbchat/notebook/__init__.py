"""The notebook side of nbchat.

``magics`` (IPython wiring) · ``flags`` (the one flag <-> request field table: argparse, the
panel's controls, the help) · ``cell`` (what a %%chat cell does) · ``commands`` (%chat ...) ·
``settings`` (`NbChat`) · ``interpolate`` (``@{expr}``) · ``kernel`` (parent header, live
detection, output routing) · ``view`` (the live widget) · ``turnstate`` (what it shows, read
from the protocol's Accumulator) · ``streamdoc`` (the patch diff engine) · ``render`` (safe
HTML, static bundles) · ``panel`` + ``controls`` (the parameter panel).

Nothing is imported here on purpose: ``%load_ext nbchat`` loads only `magics` (IPython and
traitlets), and the widget modules (anywidget, ipywidgets, markdown-it-py) load on first use.
"""
