// nbchat live turn view (anywidget ES module; no dependencies, no network).
//
// The kernel sends small patches (see nbchat/notebook/view.py for the format). initialize()
// keeps one state per model, so no patch is missed before a view renders; views redraw from it.

const ALLOWED = new Set([
  "P", "H1", "H2", "H3", "H4", "H5", "H6", "UL", "OL", "LI", "BLOCKQUOTE", "PRE", "CODE",
  "EM", "STRONG", "A", "HR", "BR", "SUP", "SPAN", "DIV", "S", "DEL",
  "TABLE", "THEAD", "TBODY", "TR", "TH", "TD",
]);
const ATTRS = new Set(["href", "title", "class", "start", "target", "rel"]);

function blank() {
  return { s: 0, blocks: [], tail: "", meta: {}, plan: "", think: "", lp: [], n: 0 };
}

// Defence in depth: the kernel already renders with raw HTML disabled; still, anything that is
// not plain markdown output is turned into text before it reaches the page.
function safeFragment(html) {
  const tpl = document.createElement("template");
  tpl.innerHTML = html;
  const walk = (node) => {
    for (const child of Array.from(node.children)) {
      if (!ALLOWED.has(child.tagName)) {
        child.replaceWith(document.createTextNode(child.outerHTML));
        continue;
      }
      for (const a of Array.from(child.attributes)) {
        const ok = ATTRS.has(a.name) &&
          !(a.name === "href" && !/^(https?:|mailto:|#)/i.test(a.value.trim()));
        if (!ok) child.removeAttribute(a.name);
      }
      walk(child);
    }
  };
  walk(tpl.content);
  return tpl.content;
}

function setHTML(el, html) {
  el.replaceChildren(safeFragment(html));
  for (const pre of el.querySelectorAll("pre")) decorateCode(pre);
  // wide tables scroll on their own instead of widening the cell
  for (const table of el.querySelectorAll("table")) {
    const box = document.createElement("div");
    box.className = "nbchat-table";
    table.replaceWith(box);
    box.append(table);
  }
}

// A code block gets a small bar above it (language + Copy), so the button never covers code.
function decorateCode(pre) {
  if (pre.parentElement && pre.parentElement.classList.contains("nbchat-code")) return;
  const wrap = document.createElement("div");
  wrap.className = "nbchat-code";
  const bar = document.createElement("div");
  bar.className = "nbchat-codebar";
  const code = pre.querySelector("code");
  const m = code && /(?:^|\s)language-([\w+#.-]{1,30})/.exec(code.className);
  const lang = document.createElement("span");
  lang.className = "nbchat-lang";
  lang.textContent = m ? m[1] : "";
  bar.append(lang, ...insertButtons(pre), copyButton(pre));
  pre.replaceWith(wrap);
  wrap.append(bar, pre);
  if (code) highlight(code, m ? m[1].toLowerCase() : "");
}

// Small, safe highlighter: tokens become text nodes in spans (code can never become markup).
const KW = new Set(("and as async await break case catch class const continue def elif else except export " +
  "false False finally for from function if import in is lambda let new None not null or pass raise " +
  "return self this throw true True try var while with yield").split(" "));
const TOKEN = /(#[^\n]*|\/\/[^\n]*|"""[\s\S]*?"""|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`|\b\d[\d_.]*\b|\b[A-Za-z_]\w*\b)/g;

function highlight(code, lang) {
  const src = code.textContent;
  if (!src || src.length > 20000 || /^(text|plain|txt|output)$/.test(lang)) return;
  const frag = document.createDocumentFragment();
  let pos = 0;
  for (const m of src.matchAll(TOKEN)) {
    const t = m[0], c = t[0];
    const cls = c === "#" ? (/^(js|ts|json|css|c|cpp|java|go|rust)/.test(lang) ? "" : "com")
      : t.startsWith("//") ? (/^py/.test(lang) ? "" : "com")
      : "\"'`".includes(c) ? "str" : /\d/.test(c) ? "num" : KW.has(t) ? "kw" : "";
    if (!cls) continue;
    frag.append(src.slice(pos, m.index), el("span", `nbchat-hl-${cls}`, t));
    pos = m.index + t.length;
  }
  if (pos) code.replaceChildren(frag, src.slice(pos));
}

// Citation sources as a numbered list (hover alone is not enough).
function sourceList(body) {
  const seen = new Map();
  for (const sup of body.querySelectorAll("sup.nbchat-cite")) {
    const n = sup.textContent.replace(/[^\d]/g, "");
    if (n && !seen.has(n)) seen.set(n, sup.title || "");
  }
  return [...seen.entries()].sort((a, b) => Number(a[0]) - Number(b[0]));
}

function copyButton(pre) {
  const btn = document.createElement("button");
  btn.className = "nbchat-copy";
  btn.type = "button";
  btn.textContent = "Copy";
  btn.title = "Copy code to the clipboard";
  btn.addEventListener("click", async () => {
    const text = pre.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const ta = document.createElement("textarea");
      ta.value = text;
      document.body.appendChild(ta);
      ta.select();
      document.execCommand("copy");
      ta.remove();
    }
    btn.textContent = "Copied ✓";
    setTimeout(() => (btn.textContent = "Copy"), 1200);
  });
  return btn;
}

// "Insert below": only the nbchat JupyterLab/Notebook 7 extension (labext) can insert a cell;
// it marks the page when active, so the button shows nowhere else (VS Code, static HTML).
function insertBelow(from, code) {
  from.dispatchEvent(new CustomEvent("nbchat-insert-below", { bubbles: true, detail: { code } }));
}

function insertButtons(pre) {
  if (document.body.dataset.nbchatInsert !== "1") return [];
  const b = el("button", "nbchat-insert", "Insert below");
  b.type = "button";
  b.title = "Put this code into a new cell below (not run)";
  b.addEventListener("click", () => insertBelow(b, pre.textContent.replace(/\n$/, "")));
  return [b];
}

// the kernel's {type: "insert-below", code} (%%chat --code), from a view of this model
function kernelInsert(store, code) {
  const root = [...store.roots].find((r) => r.isConnected);
  if (root) insertBelow(root, code);
  else store.pendingInsert = code; // the first view to render does it
}

// Continue / Regenerate: offered by the kernel in meta.actions; they stream into this view.
// Not on a saved turn drawn without a kernel.
function followupButtons(model, root) {
  const buttons = ["Continue", "Regenerate"].map((label) => {
    const b = el("button", "nbchat-" + label.toLowerCase(), label);
    b.type = "button";
    b.hidden = true;
    b.addEventListener("click", () => {
      model.send({ type: label.toLowerCase() });
      for (const x of buttons) x.disabled = true;
    });
    return b;
  });
  const draw = (meta, live) => {
    const offered = root.classList.contains("nbchat-saved-turn") || live ? [] : meta.actions || [];
    for (const b of buttons) {
      const show = offered.includes(b.textContent.toLowerCase());
      if (show && b.hidden) b.disabled = false;
      b.hidden = !show;
    }
  };
  return { buttons, draw };
}

// Slice a JS string by UTF-16 units (the unit the kernel counts in).
function apply(S, msg) {
  if (msg.type === "snap") return Object.assign(blank(), msg.state);
  for (const op of msg.o || []) {
    if (op[0] === "k") {
      S.blocks.push(S.tail.slice(0, op[1]));
      S.tail = S.tail.slice(op[1]);
      S.dirtyBlocks = true;
    } else if (op[0] === "b") {
      S.blocks.push(op[1]);
      S.dirtyBlocks = true;
    } else if (op[0] === "t") {
      const end = op.length > 3 ? S.tail.slice(S.tail.length - op[3]) : "";
      S.tail = S.tail.slice(0, op[1]) + op[2] + end;
    } else if (op[0] === "r") {
      S.blocks[op[1]] = op[2];
      (S.replaced = S.replaced || new Set()).add(op[1]);
    }
  }
  if (msg.pl) S.plan += msg.pl;
  if (msg.th) S.think += msg.th;
  if (msg.lp) S.lp = S.lp.concat(msg.lp);
  if (msg.m) Object.assign(S.meta, msg.m);
  if (msg.n !== undefined) {
    if (!S.firstAt && msg.n > 0) S.firstAt = performance.now();
    S.n = msg.n;
  }
  S.s = msg.s ?? S.s;
  return S;
}

const stores = new WeakMap();

function plainState(S) {
  const { s, blocks, tail, meta, plan, think, lp, n } = S;
  return { s, blocks, tail, meta, plan, think, lp, n };
}

function initialize({ model }) {
  const initial = model.get("state");
  const store = { S: initial && initial.s ? Object.assign(blank(), initial) : blank(), views: new Set(), roots: new Set() };
  stores.set(model, store);
  const onMsg = (msg) => {
    if (msg.type === "insert-below") return kernelInsert(store, msg.code);
    if (msg.type !== "snap" && msg.s !== undefined && msg.s <= store.S.s) return; // already have it
    if (msg.type !== "snap" && msg.s !== undefined && msg.s > store.S.s + 1) {
      model.send({ type: "resync", s: store.S.s }); // a gap: ask for a snapshot
      return;
    }
    store.S = apply(store.S, msg);
    if (msg.type === "e") {
      const html = store.S.blocks.join("") + store.S.tail;
      if (html.length !== msg.len || store.S.blocks.length !== msg.nb) {
        model.send({ type: "resync", s: 0 });
      } else {
        model.set("state", plainState(store.S)); // local only: saved widget state is complete
      }
    }
    for (const v of store.views) v();
  };
  model.on("msg:custom", onMsg);
  model.send({ type: "hello", s: store.S.s });
  return () => model.off("msg:custom", onMsg);
}

function prettyArgs(args) {
  if (!args) return "{}";
  try {
    const v = JSON.parse(args);
    if (v && typeof v === "object") return JSON.stringify(v, null, 1).replace(/\n\s*/g, " ");
  } catch {
    // still streaming (or not JSON): show it as it is
  }
  return args;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtStats(S, status) {
  const st = S.meta.stats || {};
  const bits = [];
  const tokens = st.finish || status === "stopped" ? st.tokens ?? S.n : S.n;
  if (status === "queued") return "queued: waiting for the previous reply";
  if (tokens || status !== "error") {
    const inBits = [];
    if (st.input_tokens !== undefined) inBits.push(`${st.input_tokens} in`);
    if (st.cached_tokens !== undefined) inBits.push(`${st.cached_tokens} cached`);
    const t = tokens ?? 0;
    bits.push(`${t} token${t === 1 ? "" : "s"}` + (inBits.length ? ` (${inBits.join(", ")})` : ""));
  }
  if (st.thinking_tokens) bits.push(`thinking ${st.thinking_tokens} · answer ${st.answer_tokens ?? 0}`);
  if (st.rounds > 1) bits.push(`${st.rounds} rounds`);
  let tps = st.tps;
  if (tps === undefined && S.firstAt && S.n > 1 && !["done", "stopped", "error"].includes(status)) {
    const dt = (performance.now() - S.firstAt) / 1000;
    if (dt > 0.2) tps = (S.n / dt).toFixed(1);
  }
  if (tps !== undefined) bits.push(`${tps} tok/s`);
  if (st.ttft !== undefined) bits.push(`TTFT ${st.ttft.toFixed(2)} s`);
  if (st.elapsed !== undefined && ["done", "stopped", "error"].includes(status)) bits.push(`${st.elapsed.toFixed(1)} s`);
  if (status === "stopped") bits.push("stopped" + (st.stop_ms !== undefined ? ` in ${st.stop_ms < 1 ? "< 1" : st.stop_ms} ms` : ""));
  else if (st.finish) bits.push(st.finish);
  else if (status === "approval") bits.push("waiting for approval");
  else if (status === "waiting" || status === "streaming") bits.push("streaming…");
  else if (status === "stopping") bits.push("stopping…");
  if (st.omitted) bits.push(`${st.omitted} earlier turn${st.omitted === 1 ? "" : "s"} not sent`);
  return bits.join(" · ");
}

// red (unlikely) -> yellow -> green (likely); translucent, so text stays readable on light
// and dark themes alike
function lpColor(p) {
  const hue = Math.round(120 * Math.max(0, Math.min(1, p)));
  return `hsla(${hue}, 75%, 50%, 0.28)`;
}

const FINISH_HELP = {
  COMPLETE: "the model finished its reply",
  MAX_TOKENS: "the reply hit max_tokens and was cut off",
  STOP_SEQUENCE: "a stop sequence ended the reply",
  TOOL_CALL: "the model asked to call tools",
  ERROR: "the reply ended with an error",
  TIMEOUT: "the request timed out",
};

function render({ model, el: root }) {
  let store = stores.get(model);
  if (!store) {
    initialize({ model });
    store = stores.get(model);
  }
  root.classList.add("nbchat-turn");
  const head = el("div", "nbchat-head");
  const prompt = el("div", "nbchat-prompt");
  const params = el("div", "nbchat-params");
  const images = el("div", "nbchat-images");
  head.append(prompt, params);
  const think = el("details", "nbchat-think");
  const thinkSum = el("summary", null, "Thinking");
  const thinkBody = el("pre", "nbchat-think-body");
  const thinkCits = el("ol", "nbchat-think-cits");
  think.append(thinkSum, thinkBody, thinkCits);
  const plan = el("div", "nbchat-plan");
  const planLabel = el("span", "nbchat-plan-label", "Plan ");
  const planText = el("span", "nbchat-plan-text");
  plan.append(planLabel, planText);
  const calls = el("div", "nbchat-calls");
  const approval = el("div", "nbchat-approval");
  const body = el("div", "nbchat-body");
  const tail = el("div", "nbchat-block nbchat-tail");
  body.append(tail);
  const lpBox = el("details", "nbchat-logprobs");
  lpBox.open = true;
  const lpSum = el("summary", "nbchat-lp-summary");
  const lpTitle = el("span", null, "Token probabilities");
  const legend = el("span", "nbchat-lp-legend");
  legend.title = "Each token is coloured by the probability the model gave it; hover a token for its value.";
  for (const [p, label] of [[0.05, "< 10%"], [0.5, "50%"], [0.97, "> 90%"]]) {
    const sw = el("span", "nbchat-lp", label);
    sw.style.background = lpColor(p);
    legend.append(sw);
  }
  lpSum.append(lpTitle, legend);
  const lpBody = el("div", "nbchat-lp-body");
  lpBox.append(lpSum, lpBody);
  const cut = el("div", "nbchat-cut", "✂ reply cut off here: max_tokens reached");
  cut.title = "finish_reason MAX_TOKENS (max_tokens applies to each model round)";
  const sources = el("ol", "nbchat-sources");
  let sourcesKey = "";
  const error = el("div", "nbchat-error");
  const badge = el("div", "nbchat-badge");
  const foot = el("div", "nbchat-foot");
  const stats = el("span", "nbchat-stats");
  const stop = el("button", "nbchat-stop", "Stop");
  stop.type = "button";
  stop.addEventListener("click", () => {
    model.send({ type: "stop" });
    stop.disabled = true;
    stop.textContent = "Stopping…";
  });
  const followups = followupButtons(model, root);
  foot.append(stats, stop, ...followups.buttons);
  root.replaceChildren(head, images, think, plan, calls, approval, body, cut, sources, badge, lpBox, error, foot);

  const blockEls = [];
  let shownTail = null;
  let lpShown = 0;
  let callsKey = null;
  let approvalKey = null;
  let paramsKey = null;
  let imagesKey = null;

  const draw = () => {
    const S = store.S;
    const meta = S.meta;
    const status = meta.status || "waiting";
    root.dataset.status = status;
    prompt.textContent = model.get("prompt");
    const title = model.get("title");
    const p = model.get("params") || {};
    const pkey = JSON.stringify([title, p]);
    if (pkey !== paramsKey) {
      paramsKey = pkey;
      const chips = Object.entries(p)
        .filter(([k, v]) => !(k === "model" && title && title.includes(String(v))))
        .map(([k, v]) => el("span", "nbchat-chip", `${k}=${v}`));
      params.replaceChildren(...(title ? [el("span", "nbchat-title", title)] : []), ...chips);
    }

    const imgs = model.get("images") || [];
    const ikey = JSON.stringify(imgs);
    if (ikey !== imagesKey) {
      imagesKey = ikey;
      images.hidden = !imgs.length;
      images.replaceChildren(
        ...imgs.map((src) => {
          // only the kernel's own data: URIs become images; anything else is shown as text
          if (!/^data:image\/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]+$/.test(src)) return el("span", "nbchat-thumb-text", src);
          const img = el("img", "nbchat-thumb");
          img.src = src;
          img.alt = "image sent with the prompt";
          return img;
        }),
      );
    }

    think.hidden = !S.think;
    const nThink = (meta.stats || {}).thinking_tokens || meta.think_n;
    thinkSum.textContent = nThink ? `Thinking · ${nThink} token${nThink === 1 ? "" : "s"}` : "Thinking";
    const tc = meta.think_cits || [];
    if (thinkCits.childElementCount !== tc.length) {
      thinkCits.replaceChildren(...tc.map((t) => el("li", null, t)));
    }
    thinkCits.hidden = !tc.length;
    if (thinkBody.textContent !== S.think) thinkBody.textContent = S.think;
    plan.hidden = !S.plan;
    if (planText.textContent !== S.plan) planText.textContent = S.plan;

    const key = JSON.stringify(meta.calls || []);
    if (key !== callsKey) {
      callsKey = key;
      calls.replaceChildren(
        ...(meta.calls || []).map((c) => {
          const d = el("div", "nbchat-call");
          const head = el("div", "nbchat-call-head");
          head.append(el("span", "nbchat-call-label", "tool call"), el("code", "nbchat-call-name", c.name));
          let state = null;
          if (c.approved === false || c.outcome === "denied") state = el("span", "nbchat-call-state nbchat-call-denied", "denied");
          else if (c.outcome === "invalid" || c.outcome === "error") {
            state = el("span", "nbchat-call-state nbchat-call-error", c.outcome);
            state.title = c.outcome === "invalid"
              ? "the arguments do not fit the tool's schema: not run, the error went back to the model"
              : "the tool raised an error (sent back to the model)";
          } else if (c.outcome === "notrun") state = el("span", "nbchat-call-state nbchat-call-notrun", `not run: ${c.why || "no result"}`);
          else if (c.result !== undefined) state = el("span", "nbchat-call-state nbchat-call-ok", "ran");
          if (state) d.dataset.outcome = c.outcome || (c.result !== undefined ? "ran" : "");
          if (state) head.append(state);
          d.append(head, el("pre", "nbchat-call-args", prettyArgs(c.args)));
          if (c.result !== undefined) {
            const bad = c.outcome === "invalid" || c.outcome === "error";
            const r = el("pre", "nbchat-call-result" + (bad ? " nbchat-call-result-error" : ""), c.result);
            r.title = "tool result (sent back to the model)";
            d.append(r);
          }
          return d;
        }),
      );
    }
    const akey = JSON.stringify(meta.approval || null);
    if (akey !== approvalKey) {
      approvalKey = akey;
      approval.replaceChildren();
      if (meta.approval) {
        const names = meta.approval.map((c) => c.name).join(", ");
        const q = el("span", "nbchat-approval-q", `Run ${names} in the kernel?`);
        const answer = el("span", "nbchat-approval-answer");
        approval.append(q);
        for (const [label, ok] of [["Approve", true], ["Deny", false]]) {
          const b = el("button", `nbchat-${label.toLowerCase()}`, label);
          b.type = "button";
          b.title = ok ? "Run the tool call(s) shown above" : "Do not run them; the model is told they were denied";
          b.addEventListener("click", () => {
            model.send({ type: "approve", ok });
            for (const x of approval.querySelectorAll("button")) x.disabled = true;
            answer.textContent = ok ? "approved, running…" : "denied";
          });
          approval.append(b);
        }
        approval.append(answer);
      }
    }
    approval.hidden = !meta.approval;

    // finished blocks: append new ones, replace the ones a citation changed
    while (blockEls.length < S.blocks.length) {
      const i = blockEls.length;
      const b = el("div", "nbchat-block");
      setHTML(b, S.blocks[i]);
      body.insertBefore(b, tail);
      blockEls.push(b);
    }
    while (blockEls.length > S.blocks.length) blockEls.pop().remove();
    if (S.replaced) {
      for (const i of S.replaced) if (blockEls[i]) setHTML(blockEls[i], S.blocks[i]);
      S.replaced = null;
    }
    if (shownTail !== S.tail) {
      setHTML(tail, S.tail);
      shownTail = S.tail;
    }

    lpBox.hidden = S.lp.length === 0;
    if (S.lp.length < lpShown) {
      lpBody.replaceChildren();
      lpShown = 0;
    }
    for (; lpShown < S.lp.length; lpShown++) {
      const [text, prob] = S.lp[lpShown];
      const span = el("span", "nbchat-lp", text);
      span.style.background = lpColor(prob);
      const pct = (100 * prob).toFixed(prob >= 0.995 || prob < 0.01 ? 2 : 1);
      span.title = `${JSON.stringify(text)}  p = ${pct}%  (logprob ${Math.log(Math.max(prob, 1e-12)).toFixed(3)})`;
      lpBody.append(span);
    }

    cut.hidden = (meta.stats || {}).finish !== "MAX_TOKENS";
    const list = sourceList(body);
    const skey = JSON.stringify(list);
    if (skey !== sourcesKey) {
      sourcesKey = skey;
      sources.replaceChildren(...list.map(([n, title]) => {
        const li = el("li", null, title || "source");
        li.value = Number(n);
        return li;
      }));
    }
    sources.hidden = list.length === 0;
    error.hidden = !meta.error;
    error.textContent = meta.error ? `Error: ${meta.error}` : "";
    badge.hidden = status !== "stopped";
    badge.textContent = status === "stopped" ? "■ Stopped — partial reply kept" : "";
    stats.textContent = fmtStats(S, status);
    const fin = (meta.stats || {}).finish;
    stats.title = [
      fin && FINISH_HELP[fin] ? `finish_reason ${fin}: ${FINISH_HELP[fin]}` : "",
      (meta.stats || {}).rounds > 1 ? "max_tokens applies to each model round" : "",
    ].filter(Boolean).join("\n");
    const live = ["queued", "waiting", "streaming", "approval", "stopping"].includes(status);
    followups.draw(meta, live);
    stop.hidden = !live;
    if (live && status !== "stopping") {
      stop.disabled = false;
      stop.textContent = "Stop";
    }
  };
  const onState = () => {
    const st = model.get("state");
    if (st && st.s > store.S.s) store.S = Object.assign(blank(), st);
    draw();
  };
  store.views.add(draw);
  store.roots.add(root);
  if (store.pendingInsert !== undefined) {
    const code = store.pendingInsert;
    delete store.pendingInsert;
    setTimeout(() => insertBelow(root, code), 0); // once the view is in the page
  }
  model.on("change:state", onState);
  model.on("change:prompt", draw);
  const timer = setInterval(() => {
    if (["streaming", "waiting"].includes(store.S.meta.status)) stats.textContent = fmtStats(store.S, store.S.meta.status);
  }, 500);
  draw();
  return () => {
    store.views.delete(draw);
    store.roots.delete(root);
    model.off("change:state", onState);
    model.off("change:prompt", draw);
    clearInterval(timer);
  };
}

export default { initialize, render };
