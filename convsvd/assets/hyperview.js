// convsvd.hyperview: a layer's hypergraph (equivalence classes collapsed, drawn as a matrix: a row per equivalence
// class, a column per class, each class's dots joined) beside its semantic hierarchy (the Hasse diagram of eq. 18,
// laid out in Python). Pan by dragging, zoom with the wheel or the buttons; labels keep their size at any zoom and
// are thinned where they would overlap. Hover an equivalence class for its vectors, classes and exemplary images;
// click it to select it (the `selected` trait). No dependency, no network: the module works offline.
const NS = 'http://www.w3.org/2000/svg';
const PITCH = 22;            // matrix: the largest pixels per row / column when everything is shown
const DX = 96, DY = 58;      // hierarchy: pixels per grid unit at zoom 1 (convsvd.hyperview uses the same)
const BOX_W = 86, BOX_H = 30, DOT_R = 5;
const LABEL_GAP = 12;        // the least distance in pixels between two drawn labels

function svg(tag, attrs = {}, parent = null) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
function div(cls, parent = null, tag = 'div') {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}
const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));
const short = (s, n = 28) => (String(s).length > n ? String(s).slice(0, n - 1) + '\u2026' : String(s));
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
function list(items, n) {
  const shown = items.slice(0, n).join(', ');
  return items.length > n ? `${shown}, ... (+${items.length - n} more)` : shown;
}

// Pan and zoom of one panel: screen = world * s + t. Calls `changed` (once per frame) after every change.
class Zoom {
  constructor(el, changed) {
    Object.assign(this, { el, changed, s: 1, tx: 0, ty: 0, user: false, frame: 0, drag: null, moved: false });
    this.onWheel = (ev) => {
      ev.preventDefault();
      const r = el.getBoundingClientRect();
      this.zoomAt(Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0015)), ev.clientX - r.left, ev.clientY - r.top);
    };
    this.onDown = (ev) => {
      if (ev.button !== 0) return;
      this.drag = { x: ev.clientX, y: ev.clientY, tx: this.tx, ty: this.ty, id: ev.pointerId };
      this.moved = false;
    };
    this.onMove = (ev) => {
      const d = this.drag;
      if (!d || ev.pointerId !== d.id) return;
      const dx = ev.clientX - d.x, dy = ev.clientY - d.y;
      if (!this.moved && Math.hypot(dx, dy) < 4) return;
      if (!this.moved) { this.moved = true; el.setPointerCapture(ev.pointerId); el.classList.add('hv-dragging'); }
      this.tx = d.tx + dx; this.ty = d.ty + dy; this.user = true; this.request();
    };
    this.onUp = (ev) => {
      if (this.drag && this.moved) { try { el.releasePointerCapture(ev.pointerId); } catch (e) { /* released */ } }
      this.drag = null; el.classList.remove('hv-dragging');
      setTimeout(() => { this.moved = false; }, 0);     // the click that ends a drag selects nothing
    };
    el.addEventListener('wheel', this.onWheel, { passive: false });
    el.addEventListener('pointerdown', this.onDown);
    el.addEventListener('pointermove', this.onMove);
    el.addEventListener('pointerup', this.onUp);
    el.addEventListener('pointercancel', this.onUp);
  }
  zoomAt(f, x, y) {
    const s = clamp(this.s * f, this.min || 0.02, 40);
    this.tx = x - (x - this.tx) * (s / this.s); this.ty = y - (y - this.ty) * (s / this.s);
    this.s = s; this.user = true; this.request();
  }
  fit(w, h, x0, y0, x1, y1, smax, centre) {   // the world box [x0, x1] x [y0, y1] in a w x h area, at the top
    const s = Math.min(w / Math.max(x1 - x0, 1e-9), h / Math.max(y1 - y0, 1e-9), smax);
    this.s = s; this.min = s / 4; this.user = false;
    this.tx = (centre ? (w - (x1 - x0) * s) / 2 : 0) - x0 * s; this.ty = -y0 * s;
    this.request();
  }
  request() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.changed(); });
  }
  destroy() {
    cancelAnimationFrame(this.frame);
    this.el.removeEventListener('wheel', this.onWheel);
    this.el.removeEventListener('pointerdown', this.onDown);
    this.el.removeEventListener('pointermove', this.onMove);
    this.el.removeEventListener('pointerup', this.onUp);
    this.el.removeEventListener('pointercancel', this.onUp);
  }
}

// The hypergraph as a matrix (a parallel aggregated ordered hypergraph drawing): rows = equivalence classes in the
// hierarchy's order, columns = classes (hyperedges), a dot per incidence, each column's dots joined by a line.
class MatrixPanel {
  constructor(box, view) {
    this.view = view;
    this.svg = svg('svg', { class: 'hv-svg hv-matrix-svg' }, box);
    const defs = svg('defs', {}, this.svg);
    this.clipId = 'hvclip' + Math.random().toString(36).slice(2);
    this.clipRect = svg('rect', {}, svg('clipPath', { id: this.clipId }, defs));
    this.plot = svg('g', { 'clip-path': `url(#${this.clipId})` }, this.svg);
    this.geom = svg('g', {}, this.plot);
    this.band = svg('rect', { class: 'hv-band', visibility: 'hidden' }, this.geom);
    this.hoverBand = svg('rect', { class: 'hv-hoverband', visibility: 'hidden' }, this.geom);
    this.colBand = svg('rect', { class: 'hv-colband', visibility: 'hidden' }, this.geom);
    this.lines = svg('path', { class: 'hv-lines' }, this.geom);
    this.dots = svg('path', { class: 'hv-dots' }, this.geom);
    this.selDots = svg('path', { class: 'hv-dots hv-seldots' }, this.geom);
    this.rowLabels = svg('g', { class: 'hv-rowlabels' }, this.svg);
    this.colLabels = svg('g', { class: 'hv-collabels' }, this.svg);
    this.hint = svg('text', { class: 'hv-hint' }, this.svg);
    this.zoom = new Zoom(this.svg, () => this.place());
    this.svg.addEventListener('pointermove', (ev) => this.hover(ev));
    this.svg.addEventListener('pointerleave', () => this.view.hover(null));
    this.svg.addEventListener('click', (ev) => { if (!this.zoom.moved) this.click(ev); });
  }
  setData(d) {
    this.d = d;
    const n = d.nodes.length, m = d.columns.length;
    this.colOf = new Map(d.columns.map((c, j) => [c, j]));
    this.rows = d.nodes.map((node) => node.edges.map((c) => this.colOf.get(c)).filter((j) => j !== undefined));
    const lo = new Array(m).fill(Infinity), hi = new Array(m).fill(-Infinity);
    let dots = '';
    this.cells = new Set();
    this.rows.forEach((cols, i) => cols.forEach((j) => {
      lo[j] = Math.min(lo[j], i); hi[j] = Math.max(hi[j], i);
      dots += `M${j} ${i}h0.001`; this.cells.add(i * m + j);
    }));
    this.lines.setAttribute('d', d.columns.map((c, j) => (lo[j] < hi[j] ? `M${j} ${lo[j]}V${hi[j]}` : '')).join(''));
    this.dots.setAttribute('d', dots);
    this.rowLabels.textContent = ''; this.colLabels.textContent = '';
    this.rowText = d.nodes.map((node) => {
      const t = svg('text', { class: 'hv-rowlabel', 'data-id': node.id, 'text-anchor': 'end' }, this.rowLabels);
      t.textContent = node.id; return t;
    });
    this.colText = d.columns.map((c) => {
      const t = svg('text', { class: 'hv-collabel', 'text-anchor': 'start' }, this.colLabels);
      t.textContent = short(d.classes[c]); return t;
    });
    const longest = (arr) => arr.reduce((a, s) => Math.max(a, String(s).length), 0);
    this.ml = clamp(longest(d.nodes.map((x) => x.id)) * 6.6 + 12, 40, 130);
    this.mt = clamp(longest(d.columns.map((c) => short(d.classes[c]))) * 5.2 + 14, 30, 130);
    this.n = n; this.m = m;
    this.fit();
  }
  size() {   // read once per resize: reading the layout on every frame would force a reflow
    if (!this._size || !this._size[0]) this._size = [this.svg.clientWidth || 0, this.svg.clientHeight || 0];
    return [this._size[0] || 400, this._size[1] || 300];
  }
  fit() {
    const [w, h] = this.size();
    const pw = Math.max(w - this.ml - 10, 20), ph = Math.max(h - this.mt - 10, 20);
    this.zoom.fit(pw, ph, -0.5, -0.5, Math.max(this.m, 1) - 0.5, Math.max(this.n, 1) - 0.5, PITCH, false);
    this.zoom.tx += this.ml + 4; this.zoom.ty += this.mt + 4;
  }
  place() {
    const t0 = performance.now();
    const { s, tx, ty } = this.zoom, [w, h] = this.size();
    this.svg.dataset.scale = s.toFixed(4); this.svg.dataset.tx = this.zoom.tx.toFixed(1); this.svg.dataset.ty = this.zoom.ty.toFixed(1);
    this.clipRect.setAttribute('x', this.ml); this.clipRect.setAttribute('y', this.mt);
    this.clipRect.setAttribute('width', Math.max(w - this.ml, 0)); this.clipRect.setAttribute('height', Math.max(h - this.mt, 0));
    this.geom.setAttribute('transform', `translate(${tx} ${ty}) scale(${s})`);
    const dot = clamp(s * 0.62, 2.5, 9);
    this.dots.style.strokeWidth = dot + 'px'; this.selDots.style.strokeWidth = (dot + 2) + 'px';
    const step = (pitch) => Math.max(1, Math.ceil(LABEL_GAP / pitch));
    const rs = step(s), keep = new Set([this.view.selected, this.view.hovered]);
    this.rowText.forEach((t, i) => {
      const y = i * s + ty, show = y > this.mt - 2 && y < h + 6 && (i % rs === 0 || keep.has(this.d.nodes[i].id));
      t.setAttribute('display', show ? 'inline' : 'none');
      if (show) { t.setAttribute('x', this.ml - 6); t.setAttribute('y', y + 4); }
      t.classList.toggle('hv-sel', this.d.nodes[i].id === this.view.selected);
    });
    const cs = step(s);
    this.colText.forEach((t, j) => {
      const x = j * s + tx, show = x > this.ml - 2 && x < w + 6 && j % cs === 0;
      t.setAttribute('display', show ? 'inline' : 'none');
      if (show) t.setAttribute('transform', `translate(${x + 3} ${this.mt - 6}) rotate(-55)`);
    });
    const thin = rs > 1 || cs > 1;
    this.hint.textContent = thin ? 'zoom in to read every label' : '';
    this.hint.setAttribute('x', w - 8); this.hint.setAttribute('y', h - 8);
    this.svg.dataset.placeMs = (performance.now() - t0).toFixed(2);
  }
  world(ev) {
    const r = this.svg.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
    return { x, y, wx: (x - this.zoom.tx) / this.zoom.s, wy: (y - this.zoom.ty) / this.zoom.s };
  }
  at(ev) {   // the row (equivalence class) and the column (class) under the pointer
    const p = this.world(ev);
    let i = Math.round(p.wy), j = Math.round(p.wx);
    if (p.x < this.ml && p.y > this.mt) {       // over the row labels
      const t = ev.target.closest && ev.target.closest('.hv-rowlabel');
      if (t) i = this.d.nodes.findIndex((nd) => nd.id === t.dataset.id);
      j = -1;
    } else if (p.y < this.mt || p.x < this.ml) return null;
    if (i < 0 || i >= this.n) return null;
    return { i, j: j >= 0 && j < this.m && Math.abs(p.wx - j) < 0.5 ? j : -1 };
  }
  hover(ev) {
    if (this.zoom.drag && this.zoom.moved) return;
    const a = this.at(ev);
    if (!a) { this.view.hover(null); return; }
    const cls = a.j >= 0 ? this.d.classes[this.d.columns[a.j]] : null;
    this.view.hover(this.d.nodes[a.i].id, ev, cls && this.cells.has(a.i * this.m + a.j) ? cls : null);
    this.showColumn(a.j);
  }
  showColumn(j) {
    this.colBand.setAttribute('visibility', j >= 0 ? 'visible' : 'hidden');
    if (j >= 0) { this.colBand.setAttribute('x', j - 0.5); this.colBand.setAttribute('y', -0.5);
                  this.colBand.setAttribute('width', 1); this.colBand.setAttribute('height', Math.max(this.n, 1)); }
    this.colText.forEach((t, k) => t.classList.toggle('hv-hot', k === j));
  }
  click(ev) { const a = this.at(ev); if (a) this.view.select(this.d.nodes[a.i].id); }
  mark(selected, hovered) {
    const rowOf = (id) => this.d.nodes.findIndex((nd) => nd.id === id);
    const band = (rect, i) => {
      rect.setAttribute('visibility', i >= 0 ? 'visible' : 'hidden');
      if (i >= 0) { rect.setAttribute('x', -0.5); rect.setAttribute('y', i - 0.5);
                    rect.setAttribute('width', Math.max(this.m, 1)); rect.setAttribute('height', 1); }
    };
    const si = rowOf(selected), hi = rowOf(hovered);
    band(this.band, si); band(this.hoverBand, hi === si ? -1 : hi);
    this.selDots.setAttribute('d', si >= 0 ? this.rows[si].map((j) => `M${j} ${si}h0.001`).join('') : '');
    if (!hovered) this.showColumn(-1);
    this.zoom.request();
  }
}

// The semantic hierarchy: boxes of constant size at scaled grid positions, arrows from the more general class down
// to the more specific one; when zoomed out so far that boxes would overlap, classes become dots (labels on hover).
class HierarchyPanel {
  constructor(box, view) {
    this.view = view;
    this.svg = svg('svg', { class: 'hv-svg hv-hierarchy-svg' }, box);
    this.links = svg('path', { class: 'hv-links' }, this.svg);
    this.heads = svg('path', { class: 'hv-heads' }, this.svg);
    this.selLinks = svg('path', { class: 'hv-links hv-sellinks' }, this.svg);
    this.selHeads = svg('path', { class: 'hv-heads hv-selheads' }, this.svg);
    this.nodesG = svg('g', { class: 'hv-nodes' }, this.svg);
    this.levels = svg('g', { class: 'hv-levels' }, this.svg);        // above the boxes, on a halo
    this.hint = svg('text', { class: 'hv-hint' }, this.svg);
    this.zoom = new Zoom(this.svg, () => this.place());
  }
  setData(d) {
    this.d = d;
    this.nodesG.textContent = ''; this.levels.textContent = '';
    const nAll = d.columns.length;
    this.els = d.nodes.map((node) => {
      const g = svg('g', { class: 'hv-node', 'data-id': node.id }, this.nodesG);
      svg('circle', { r: DOT_R }, g);
      svg('rect', { x: -BOX_W / 2, y: -BOX_H / 2, width: BOX_W, height: BOX_H, rx: 6 }, g);
      const t = svg('text', { y: -2, 'text-anchor': 'middle' }, g); t.textContent = node.id;
      const sub = svg('text', { y: 10, 'text-anchor': 'middle', class: 'hv-sub' }, g);
      const k = node.edges.length;
      sub.textContent = k === nAll && nAll > 1 ? `all ${k} classes` : k === 1 ? `{${short(d.classes[node.edges[0]], 14)}}` : `${k} classes`;
      g.addEventListener('pointerenter', (ev) => this.view.hover(node.id, ev));
      g.addEventListener('pointermove', (ev) => this.view.moveTip(ev));
      g.addEventListener('pointerleave', () => this.view.hover(null));
      g.addEventListener('click', (ev) => { ev.stopPropagation(); if (!this.zoom.moved) this.view.select(node.id); });
      return g;
    });
    this.index = new Map(d.nodes.map((nd, i) => [nd.id, i]));
    const first = new Map();   // the first grid row of each level, for its label
    d.nodes.forEach((nd) => { if (!first.has(nd.level) || nd.y < first.get(nd.level)) first.set(nd.level, nd.y); });
    this.levelRows = [...first.entries()].sort((a, b) => a[0] - b[0]);
    this.levelText = this.levelRows.map(([lev]) => {
      const t = svg('text', { class: 'hv-level' }, this.levels); t.textContent = `level ${lev}`; return t;
    });
    const xs = d.nodes.map((nd) => nd.x), ys = d.nodes.map((nd) => nd.y);
    this.bounds = xs.length ? [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)] : [0, 0, 0, 0];
    this.fit();
  }
  size() {   // read once per resize: reading the layout on every frame would force a reflow
    if (!this._size || !this._size[0]) this._size = [this.svg.clientWidth || 0, this.svg.clientHeight || 0];
    return [this._size[0] || 400, this._size[1] || 300];
  }
  fit() {
    const [w, h] = this.size(), [x0, y0, x1, y1] = this.bounds;
    this.zoom.fit(w - 70, h - 24, x0 * DX - BOX_W / 2, y0 * DY - BOX_H / 2, x1 * DX + BOX_W / 2, y1 * DY + BOX_H / 2, 1.5, true);
    this.zoom.tx += 60; this.zoom.ty += 12;
  }
  pos(i) {
    const nd = this.d.nodes[i], { s, tx, ty } = this.zoom;
    return [nd.x * DX * s + tx, nd.y * DY * s + ty];
  }
  place() {
    const t0 = performance.now();
    const { s } = this.zoom, [w, h] = this.size();
    this.svg.dataset.scale = s.toFixed(4); this.svg.dataset.tx = this.zoom.tx.toFixed(1); this.svg.dataset.ty = this.zoom.ty.toFixed(1);
    const compact = DX * s < BOX_W + 8 || DY * s < BOX_H + 14;
    this.svg.classList.toggle('hv-compact', compact);
    const hw = compact ? DOT_R : BOX_W / 2, hh = compact ? DOT_R : BOX_H / 2;
    const P = this.d.nodes.map((_, i) => this.pos(i));
    this.els.forEach((g, i) => {
      const [x, y] = P[i], show = x > -BOX_W && x < w + BOX_W && y > -BOX_H && y < h + BOX_H;
      g.setAttribute('display', show ? 'inline' : 'none');
      if (show) g.setAttribute('transform', `translate(${x.toFixed(1)} ${y.toFixed(1)})`);
    });
    const sel = this.index.get(this.view.selected);
    let lines = '', heads = '', sl = '', sh = '';
    for (const [a, b] of this.d.links) {
      const [x0, y0] = P[a], [x1, y1] = P[b];
      const ya = y0 + hh, yb = y1 - hh - 1;
      if (yb <= ya) continue;
      const seg = `M${x0.toFixed(1)} ${ya.toFixed(1)}L${x1.toFixed(1)} ${yb.toFixed(1)}`;
      const ang = Math.atan2(yb - ya, x1 - x0), L = 7, W = 3.5;
      const hx = x1 - L * Math.cos(ang), hy = yb - L * Math.sin(ang);
      const head = `M${x1.toFixed(1)} ${yb.toFixed(1)}L${(hx + W * Math.sin(ang)).toFixed(1)} ${(hy - W * Math.cos(ang)).toFixed(1)}` +
                   `L${(hx - W * Math.sin(ang)).toFixed(1)} ${(hy + W * Math.cos(ang)).toFixed(1)}Z`;
      if (a === sel || b === sel) { sl += seg; sh += head; } else { lines += seg; heads += head; }
    }
    this.links.setAttribute('d', lines); this.heads.setAttribute('d', heads);
    this.selLinks.setAttribute('d', sl); this.selHeads.setAttribute('d', sh);
    let last = -Infinity;
    this.levelRows.forEach(([, row], k) => {
      const y = row * DY * this.zoom.s + this.zoom.ty, t = this.levelText[k];
      const show = y > 8 && y < h - 4 && y - last >= LABEL_GAP;
      t.setAttribute('display', show ? 'inline' : 'none');
      if (show) { t.setAttribute('x', 6); t.setAttribute('y', y + 4); last = y; }
    });
    this.hint.textContent = compact ? 'zoom in to read the classes' : '';
    this.hint.setAttribute('x', w - 8); this.hint.setAttribute('y', h - 8);
    this.svg.dataset.placeMs = (performance.now() - t0).toFixed(2);
  }
  mark(selected, hovered) {
    this.els.forEach((g) => {
      g.classList.toggle('hv-sel', g.dataset.id === selected);
      g.classList.toggle('hv-hot', g.dataset.id === hovered);
    });
    const i = this.index.get(hovered);
    if (i !== undefined) this.nodesG.appendChild(this.els[i]);    // the hovered class drawn on top
    this.zoom.request();
  }
}

function render({ model, el }) {
  const t0 = performance.now();
  const root = div('convsvd-hyperview', el);
  const head = div('hv-head', root);
  const title = div('hv-title', head, 'span');
  const info = div('hv-info', head, 'span');
  const buttons = div('hv-buttons', head, 'span');
  const button = (label, tip, cls) => { const b = div('hv-button ' + cls, buttons, 'button'); b.textContent = label; b.title = tip; return b; };
  const bIn = button('+', 'zoom in', 'hv-zoom-in'), bOut = button('\u2212', 'zoom out', 'hv-zoom-out');
  const bFit = button('fit', 'show everything', 'hv-fit');
  const panels = div('hv-panels', root);
  const left = div('hv-panel hv-hypergraph', panels), right = div('hv-panel hv-hierarchy', panels);
  div('hv-caption', left).textContent = 'hypergraph: equivalence classes (rows) x classes (columns)';
  div('hv-caption', right).textContent = 'semantic hierarchy (eq. 18): general above specific';
  const tip = div('hv-tip', root);
  const empty = div('hv-empty', root);
  empty.textContent = 'empty hypergraph: no singular vector is significant for any class (lower q or p)';
  const images = {}, asked = new Set();
  const view = {
    selected: model.get('selected'), hovered: null, tipFor: null,
    hover(id, ev, cls) {
      if (id !== view.hovered) { view.hovered = id; matrix.mark(view.selected, id); hier.mark(view.selected, id); }
      if (!id) { tip.style.display = 'none'; view.tipFor = null; return; }
      const key = id + '|' + (cls || '');
      if (view.tipFor !== key) { view.tipFor = key; fillTip(id, cls); }
      view.moveTip(ev);
    },
    moveTip(ev) {
      if (!ev || tip.style.display === 'none') return;
      const r = root.getBoundingClientRect(), w = tip.offsetWidth, h = tip.offsetHeight;
      let x = ev.clientX - r.left + 14, y = ev.clientY - r.top + 14;
      if (x + w > r.width - 4) x = Math.max(4, ev.clientX - r.left - w - 14);
      if (y + h > r.height - 4) y = Math.max(4, ev.clientY - r.top - h - 14);
      tip.style.left = x + 'px'; tip.style.top = y + 'px';
    },
    select(id) {
      model.set('selected', id === view.selected ? null : id);
      model.save_changes();
    },
  };
  let data = null;
  const node = (id) => data && data.nodes.find((nd) => nd.id === id);
  function fillTip(id, cls) {
    const nd = node(id);
    if (!nd) return;
    const names = nd.edges.map((c) => data.classes[c]);
    let h = `<div class="hv-tip-title">${esc(nd.id)}</div>` +
      `<div><b>vectors</b> (${nd.vectors.length}): ${esc(list(nd.vectors.map((v) => 'v' + v), 24))}</div>` +
      `<div><b>classes</b> (${names.length}): ${esc(list(names, 30))}</div>`;
    if (cls) h += `<div class="hv-tip-col">column: <b>${esc(cls)}</b></div>`;
    if (model.get('has_images')) {
      const im = images[nd.key];
      if (im) {
        h += '<div class="hv-tip-images">' + im.images.map((x) =>
          `<figure><img src="${x.src}" alt="${esc(x.caption)}"><figcaption>${esc(x.caption)}</figcaption></figure>`).join('') + '</div>';
        if (im.maps && im.maps.length) h += '<div class="hv-tip-images">' + im.maps.map((src) => `<figure><img src="${src}" alt="signal map"></figure>`).join('') + '</div>';
      } else {
        h += '<div class="hv-tip-wait">exemplary images: loading...</div>';
        if (!asked.has(nd.key)) { asked.add(nd.key); model.send({ type: 'images', keys: [nd.key] }); }
      }
    }
    tip.innerHTML = h;
    tip.style.display = 'block';
  }
  const matrix = new MatrixPanel(left, view), hier = new HierarchyPanel(right, view);
  function read() {
    return { classes: model.get('classes') || [], columns: model.get('columns') || [], nodes: model.get('nodes') || [],
             links: model.get('links') || [] };
  }
  function redraw() {
    const t = performance.now();
    data = read();
    title.textContent = model.get('title') || '';
    root.style.setProperty('--hv-height', (model.get('height') || 520) + 'px');
    matrix.setData(data); hier.setData(data);
    empty.style.display = data.nodes.length ? 'none' : 'block';
    view.selected = model.get('selected');
    mark();
    root.dataset.nodes = data.nodes.length; root.dataset.columns = data.columns.length;
    requestAnimationFrame(() => { root.dataset.renderMs = (performance.now() - t).toFixed(1); });
  }
  function mark() {
    view.selected = model.get('selected');
    const nd = node(view.selected);
    info.textContent = nd ? `selected ${nd.id}: ${list(nd.vectors.map((v) => 'v' + v), 8)}` : 'click a class to select it';
    root.dataset.selected = view.selected || '';
    matrix.mark(view.selected, view.hovered); hier.mark(view.selected, view.hovered);
  }
  let pending = 0;
  const schedule = () => { if (!pending) pending = requestAnimationFrame(() => { pending = 0; redraw(); }); };
  const onMsg = (msg) => {
    if (!msg || msg.type !== 'images') return;
    Object.assign(images, msg.images || {});
    if (view.hovered) { view.tipFor = null; fillTip(view.hovered, null); }
  };
  const keys = ['classes', 'columns', 'nodes', 'links', 'title', 'height'];
  keys.forEach((k) => model.on('change:' + k, schedule));
  model.on('change:selected', mark);
  model.on('msg:custom', onMsg);
  const zoomBoth = (f) => [matrix, hier].forEach((p) => { const [w, h] = p.size(); p.zoom.zoomAt(f, w / 2, h / 2); });
  bIn.addEventListener('click', () => zoomBoth(1.5));
  bOut.addEventListener('click', () => zoomBoth(1 / 1.5));
  bFit.addEventListener('click', () => { matrix.fit(); hier.fit(); });
  const resize = new ResizeObserver(() => {
    [matrix, hier].forEach((p) => { p._size = null; if (!p.zoom.user) p.fit(); else p.zoom.request(); });
  });
  resize.observe(root);
  redraw();
  requestAnimationFrame(() => { root.dataset.firstRenderMs = (performance.now() - t0).toFixed(1); });
  return () => {
    keys.forEach((k) => model.off('change:' + k, schedule));
    model.off('change:selected', mark);
    model.off('msg:custom', onMsg);
    resize.disconnect(); matrix.zoom.destroy(); hier.zoom.destroy();
  };
}

export default { render };
