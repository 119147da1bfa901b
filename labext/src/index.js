// nbchat front-end extension (prebuilt; shipped in the wheel as share/jupyter/labextensions/nbchat).
//
// Every %%chat turn and every panel is displayed as one bundle holding the live widget
// (application/vnd.jupyter.widget-view+json) AND the turn itself (application/vnd.nbchat.*+json),
// plus text/html, text/markdown and text/plain for nbconvert, GitHub and VS Code.
// This renderer outranks the widget renderer: it draws the turn from the saved data with the
// same view code as the live widget (js/view.js), and when the widget's model is alive in the
// kernel it swaps in the live widget (Stop, Approve, and later post-turn buttons keep working).
// A reopened notebook whose kernel is gone therefore shows the turn, never "Error displaying
// widget", and no JS/CSS is stored per output.

import { Panel, Widget } from "@lumino/widgets";
import view from "../../js/view.js";
import "../../js/view.css";
import "./saved.css";

const TURN = "application/vnd.nbchat.turn+json";
const PANEL = "application/vnd.nbchat.panel+json";
const WIDGET = "application/vnd.jupyter.widget-view+json";
const RANK = -20; // the widget view's renderer is -10: this one is preferred

function savedModel(doc) {
  const st = Object.assign({ s: 1, blocks: [], tail: "", meta: {}, plan: "", think: "", lp: [], n: 0 }, doc.state || {});
  st.s = Math.max(1, st.s || 0);
  const values = { prompt: doc.prompt || "", title: doc.title || "", params: doc.params || {}, images: doc.images || [], state: st };
  const noop = () => undefined;
  return { get: (k) => values[k], set: noop, on: noop, off: noop, send: noop, save_changes: noop };
}

// Draw one turn document into `node`; returns the view's cleanup function.
function drawTurn(node, doc) {
  node.classList.add("nbchat-saved-turn");
  return view.render({ model: savedModel(doc || {}), el: node }) || (() => undefined);
}

function drawPanel(node, doc) {
  const cleanups = [];
  node.classList.add("nbchat-saved-panel");
  const note = document.createElement("div");
  note.className = "nbchat-saved-note";
  note.textContent = "nbchat panel (saved transcript; run the cell again to chat)";
  const list = document.createElement("div");
  list.className = "nbchat-panel-transcript nbchat-saved-transcript";
  for (const turn of (doc && doc.turns) || []) {
    const box = document.createElement("div");
    list.append(box);
    cleanups.push(drawTurn(box, turn));
  }
  const foot = document.createElement("div");
  foot.className = "nbchat-saved-foot";
  foot.textContent = (doc && doc.footer) || "";
  node.replaceChildren(note, list, foot);
  return () => cleanups.forEach((c) => c());
}

class SavedRenderer extends Panel {
  constructor(options, rendermime) {
    super();
    this.mimeType = options.mimeType;
    this._options = options;
    this._rendermime = rendermime;
    this._cleanup = null;
    this.addClass("nbchat-saved");
  }

  async renderModel(model) {
    this._reset();
    const doc = model.data[this.mimeType];
    const saved = new Widget();
    this.addWidget(saved);
    this._cleanup = (this.mimeType === PANEL ? drawPanel : drawTurn)(saved.node, doc);
    const ref = model.data[WIDGET];
    const factory = model.trusted && ref && ref.model_id && this._rendermime
      ? this._rendermime.getFactory(WIDGET)
      : undefined;
    if (!factory) return;
    // the live widget, kept hidden until its model is found in the kernel
    const live = factory.createRenderer(Object.assign({}, this._options, { mimeType: WIDGET }));
    live.hide();
    this.addWidget(live);
    const settle = () => {
      if (live.isDisposed) return true;
      if (live.widgets && live.widgets.length > 0) {
        this._dropSaved(saved);
        live.show();
        return true;
      }
      if ((live.node.textContent || "").startsWith("Error displaying widget")) {
        live.dispose(); // model gone (kernel restarted or shut down): the saved turn stays
        return true;
      }
      return false;
    };
    const watch = new MutationObserver(() => settle() && watch.disconnect());
    watch.observe(live.node, { childList: true, characterData: true, subtree: true });
    try {
      await live.renderModel({ data: { [WIDGET]: ref }, metadata: {}, trusted: true, setData: () => undefined });
    } catch (err) {
      console.warn("nbchat: live view unavailable, showing the saved turn", err);
      live.dispose();
    }
    if (settle()) watch.disconnect();
  }

  _dropSaved(saved) {
    if (this._cleanup) this._cleanup();
    this._cleanup = null;
    saved.dispose();
  }

  _reset() {
    if (this._cleanup) this._cleanup();
    this._cleanup = null;
    for (const w of [...this.widgets]) w.dispose();
  }

  dispose() {
    if (this.isDisposed) return;
    if (this._cleanup) this._cleanup();
    this._cleanup = null;
    super.dispose();
  }
}

function factoryFor(rendermime) {
  return {
    safe: true, // the view sanitises every block itself (allow-listed tags, http/mailto links only)
    mimeTypes: [TURN, PANEL],
    defaultRank: RANK,
    createRenderer: (options) => new SavedRenderer(options, rendermime),
  };
}

// "Insert below" (js/view.js dispatches INSERT_EVENT from a code block or a live view): a new
// code cell holding the code, right below the cell whose output the event came from; not run.
const INSERT_EVENT = "nbchat-insert-below";

function notebookOf(app, node) {
  for (const w of app.shell.widgets("main")) {
    if (w.content && w.content.widgets && w.content.model && w.node.contains(node)) return w.content;
  }
  return null;
}

function insertBelow(app, event) {
  const code = event.detail && typeof event.detail.code === "string" ? event.detail.code : null;
  const notebook = code === null ? null : notebookOf(app, event.target);
  if (!notebook) return;
  const index = notebook.widgets.findIndex((cell) => cell.node.contains(event.target));
  if (index < 0) return;
  notebook.model.sharedModel.insertCell(index + 1, { cell_type: "code", source: code, metadata: {} });
  notebook.activeCellIndex = index + 1;
}

const plugin = {
  id: "nbchat:saved-turns",
  description: "Render nbchat turns and panels from saved notebooks, with or without a kernel.",
  autoStart: true,
  requires: [],
  activate: (app) => {
    document.body.dataset.nbchatInsert = "1"; // js/view.js shows "Insert below" only then
    document.addEventListener(INSERT_EVENT, (event) => insertBelow(app, event));
    // per notebook: the renderer needs that notebook's registry to find the widget renderer
    app.docRegistry.addWidgetExtension("Notebook", {
      createNew: (panel) => {
        const rm = panel.content && panel.content.rendermime;
        if (rm) rm.addFactory(factoryFor(rm), RANK);
      },
    });
  },
};

export default plugin;
