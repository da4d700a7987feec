// Trace view: the waterfall of a trace's spans, with collapsible subtrees,
// a time ruler, a minimap to move through the trace and zoom into a time
// window, and the details of a span on click. Only the rows in sight are in
// the page, so a trace of 10,000 spans or more scrolls as freely as a small
// one.
import { download, get } from './api.js';
import { attrValue, dateTime, duration, h, nanosSince, niceStep, serviceColors } from './format.js';

const rowHeight = 22;
const overscan = 8;

export async function render(main, route) {
  const id = route.args[0] || '';
  if (!id) throw new Error('This address names no trace: #/trace/ is followed by a trace ID, 32 hex digits.');
  main.append(h('p', { class: 'muted' }, 'Loading trace…'));
  const base = '/api/v1/traces/' + encodeURIComponent(id);
  // The critical path is asked for with the trace; a trace it cannot be
  // found for (too large to analyse, say) is still shown, without it.
  const path = get(base + '/critical-path').catch((err) => ({ error: err.message }));
  const trace = await get(base);
  const view = new Waterfall(trace, criticalPath(await path));
  main.replaceChildren(view.el);
  view.start();
  return () => view.stop();
}

// criticalPath turns the API's critical path into the IDs of the spans on
// it and the self time on it of each span and of each operation.
export function criticalPath(p) {
  const critical = new Set();
  const selfBySpan = new Map();
  const selfByOp = new Map();
  for (const sg of p?.segments || []) {
    critical.add(sg.span_id);
    selfBySpan.set(sg.span_id, (selfBySpan.get(sg.span_id) || 0) + nanosSince(sg.end_unix_nano, sg.start_unix_nano));
  }
  for (const o of p?.operations || []) selfByOp.set(o.service + '\u0000' + o.operation, o);
  return { critical, selfBySpan, selfByOp, found: !!p && !p.error, pathError: p?.error || '' };
}

// model links the spans into trees: roots are spans without a parent, and
// orphans, whose parent is not in the trace (marked so). Spans caught in a
// cycle of parents become orphans too, so that every span is shown once.
export function model(trace) {
  const t0 = trace.start_unix_nano;
  const byId = new Map();
  for (const sp of trace.spans) {
    sp.offset = nanosSince(sp.start_unix_nano, t0);
    sp.children = [];
    if (!byId.has(sp.span_id)) byId.set(sp.span_id, sp);
  }
  const roots = [];
  for (const sp of trace.spans) {
    const parent = sp.parent_span_id ? byId.get(sp.parent_span_id) : undefined;
    if (parent && parent !== sp) {
      parent.children.push(sp);
      sp.parent = parent;
    }
    else {
      sp.orphan = sp.parent_span_id !== '';
      roots.push(sp);
    }
  }
  const byStart = (a, b) => a.offset - b.offset || a.name.localeCompare(b.name);
  const seen = new Set();
  const walk = (from) => {
    const stack = [...from];
    while (stack.length) {
      const sp = stack.pop();
      if (seen.has(sp)) continue;
      seen.add(sp);
      sp.children.sort(byStart);
      stack.push(...sp.children);
    }
  };
  roots.sort(byStart);
  walk(roots);
  for (const sp of trace.spans) {
    if (!seen.has(sp) && byId.get(sp.span_id) === sp) {
      // A span no root reaches hangs from a cycle of parents: climb to it
      // and break it there, so that the spans below keep their parents.
      let top = sp;
      for (const climbed = new Set(); !climbed.has(top); top = top.parent) climbed.add(top);
      // Out of its parent's children too, or the cycle stays in the tree.
      top.parent.children.splice(top.parent.children.indexOf(top), 1);
      top.orphan = true;
      top.parent = undefined;
      roots.push(top);
      walk([top]);
    }
  }
  countDescendants(roots);
  return { roots, total: Math.max(1, nanosSince(trace.end_unix_nano || t0, t0)) };
}

function countDescendants(roots) {
  const order = [];
  const stack = [...roots];
  while (stack.length) {
    const sp = stack.pop();
    order.push(sp);
    stack.push(...sp.children);
  }
  for (let i = order.length - 1; i >= 0; i--) {
    const sp = order[i];
    sp.descendants = sp.children.reduce((n, c) => n + 1 + c.descendants, 0);
    sp.errorsBelow = sp.children.reduce((n, c) => n + (c.status.code === 'error' ? 1 : 0) + c.errorsBelow, 0);
  }
}

class Waterfall {
  constructor(trace, { critical = new Set(), selfBySpan = new Map(), selfByOp = new Map(), pathError = '' } = {}) {
    this.pathError = pathError;
    this.trace = trace;
    this.critical = critical;
    this.selfBySpan = selfBySpan;
    this.selfByOp = selfByOp;
    const { roots, total } = model(trace);
    this.roots = roots;
    this.total = total;
    this.window = [0, total]; // the time window shown, in ns from the start
    this.colors = serviceColors(trace.spans.map((sp) => sp.service));
    this.collapsed = new Set();
    this.matches = []; // spans that the find box's text matches, in tree order
    this.matched = new Set();
    this.matchAt = -1;
    this.selected = null;
    this.rows = [];
    this.build();
    this.layout();
  }

  // layout lists the rows not hidden under a collapsed span, in tree order.
  layout() {
    const rows = [];
    const stack = this.roots.slice().reverse().map((span) => ({ span, depth: 0 }));
    while (stack.length) {
      const row = stack.pop();
      rows.push(row);
      if (this.collapsed.has(row.span)) continue;
      for (let i = row.span.children.length - 1; i >= 0; i--) {
        stack.push({ span: row.span.children[i], depth: row.depth + 1 });
      }
    }
    this.rows = rows;
    this.spacer.style.height = rows.length * rowHeight + 'px';
  }

  build() {
    const t = this.trace;
    const root = this.roots[0];
    const services = new Map();
    let errors = 0;
    for (const sp of t.spans) {
      services.set(sp.service, (services.get(sp.service) || 0) + 1);
      if (sp.status.code === 'error') errors++;
    }
    const orphans = this.roots.filter((r) => r.orphan).length;
    const otlp = `/api/v1/traces/${t.trace_id}/otlp`;
    const head = h('div', { class: 'trace-head' },
      h('h1', { title: root ? `${root.service}: ${root.name}` : '' }, root ? `${root.service}: ${root.name}` : t.trace_id),
      h('div', { class: 'facts' },
        fact('Trace', h('code', { class: 'trace-id' }, t.trace_id)),
        fact('Start', t.span_count ? dateTime(t.start_unix_nano) : '–'),
        fact('Duration', duration(nanosSince(t.end_unix_nano || t.start_unix_nano, t.start_unix_nano))),
        fact('Spans', h('span', { class: 'span-count' }, t.span_count)),
        fact('Services', services.size),
        fact('Errors', h('span', { class: errors ? 'error-count err' : 'error-count' }, errors)),
        this.critical.size ? fact('Critical path', h('span', { class: 'crit-count', title: 'outlined bars' }, `${this.critical.size} spans`))
          : this.pathError ? fact('Critical path', h('span', { class: 'muted crit-error', title: this.pathError }, 'not found: ' + this.pathError)) : null,
        orphans ? fact('Orphans', h('span', { class: 'orphan-count' }, orphans)) : null,
        h('a', {
          class: 'otlp', href: otlp,
          onclick: (e) => { e.preventDefault(); download(otlp, `trace-${t.trace_id}.json`); },
        }, 'OTLP JSON')),
      legend(services, this.colors),
      t.truncated ? h('p', { class: 'error' }, `This trace is too large to show whole: the first ${t.span_count} spans are shown. OTLP JSON has every span.`) : null);

    this.minimap = h('canvas', { class: 'minimap', height: 60 });
    this.mmWindow = h('div', { class: 'mm-window' });
    this.mmSelect = h('div', { class: 'mm-select', hidden: true });
    const mm = h('div', { class: 'mm' }, this.minimap, this.mmWindow, this.mmSelect);
    this.bindMinimap(mm);

    this.ticks = h('div', { class: 'ticks' });
    this.zoomNote = h('span', { class: 'zoom' });
    this.findCount = h('span', { class: 'find-count' });
    const find = h('input', {
      type: 'search', class: 'find', placeholder: 'find spans', title: 'name, service or attribute; Enter goes to the next',
      oninput: (e) => this.find(e.target.value),
      onkeydown: (e) => { if (e.key === 'Enter') this.nextMatch(); },
    });
    const ruler = h('div', { class: 'wf-ruler' },
      h('div', { class: 'names' },
        h('button', { type: 'button', onclick: () => this.setCollapsed(false) }, 'Expand all'),
        h('button', { type: 'button', onclick: () => this.setCollapsed(true) }, 'Collapse all'),
        find, this.findCount, this.zoomNote),
      this.ticks);
    this.grid = h('div', { class: 'grid' });
    this.rowLayer = h('div', { class: 'rows' });
    this.spacer = h('div', { class: 'spacer' }, this.grid, this.rowLayer);
    this.scroller = h('div', { class: 'wf-scroll' }, this.spacer);
    this.scroller.addEventListener('scroll', () => this.schedule());
    this.rowLayer.addEventListener('click', (e) => this.click(e));
    this.detail = h('aside', { class: 'detail', hidden: true });
    this.el = h('div', { class: 'trace' }, head, mm,
      h('div', { class: 'trace-body' }, h('div', { class: 'wf' }, ruler, this.scroller), this.detail));
  }

  start() {
    this.resize = new ResizeObserver(() => this.draw(true));
    this.resize.observe(this.scroller);
  }

  stop() {
    this.resize.disconnect();
  }

  schedule() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      this.draw(false);
    });
  }

  setCollapsed(all) {
    this.collapsed.clear();
    if (all) {
      for (const sp of this.trace.spans) if (sp.children.length) this.collapsed.add(sp);
    }
    this.layout();
    this.draw(true);
  }

  toggle(span) {
    if (this.collapsed.has(span)) this.collapsed.delete(span);
    else this.collapsed.add(span);
    this.layout();
    this.draw(true);
  }

  // x maps a time, in ns from the trace's start, to a percentage of the
  // timeline's width.
  x(ns) {
    const [a, b] = this.window;
    return (ns - a) / (b - a) * 100;
  }

  draw(full) {
    if (full) {
      this.first = -1; // rows or the window changed: redraw every row
      this.drawTicks();
      this.drawMinimap();
    }
    this.drawRows();
    this.drawWindow();
  }

  drawTicks() {
    const [a, b] = this.window;
    const step = niceStep(b - a, 8);
    const ticks = [];
    const lines = [];
    for (let t = Math.ceil(a / step) * step; t <= b; t += step) {
      const left = this.x(t) + '%';
      ticks.push(h('span', { style: `left:${left}` }, duration(t)));
      lines.push(h('i', { style: `left:${left}` }));
    }
    this.ticks.replaceChildren(...ticks);
    this.grid.replaceChildren(...lines);
    this.zoomNote.textContent = a > 0 || b < this.total ? 'zoomed: double-click the minimap for all' : '';
  }

  drawRows() {
    const first = Math.max(0, Math.floor(this.scroller.scrollTop / rowHeight) - overscan);
    const last = Math.min(this.rows.length, Math.ceil((this.scroller.scrollTop + this.scroller.clientHeight) / rowHeight) + overscan);
    if (first === this.first && last === this.last) return;
    this.first = first;
    this.last = last;
    const els = [];
    for (let i = first; i < last; i++) els.push(this.row(this.rows[i], i));
    this.rowLayer.replaceChildren(...els);
  }

  row({ span, depth }, i) {
    const collapsed = this.collapsed.has(span);
    const classes = ['row'];
    if (span.status.code === 'error') classes.push('err');
    if (span === this.selected) classes.push('selected');
    if (this.critical.has(span.span_id)) classes.push('crit');
    if (this.matched.has(span)) classes.push('match');
    const left = this.x(span.offset);
    const width = Math.max(span.duration_ns / (this.window[1] - this.window[0]) * 100, 0.15);
    const color = this.colors.get(span.service);
    const label = duration(span.duration_ns);
    return h('div', { class: classes.join(' '), style: `top:${i * rowHeight}px`, 'data-row': i },
      h('div', { class: 'names', style: `padding-left:min(${6 + Math.min(depth, 40) * 14}px, 20%)`, title: `${span.service}: ${span.name}` },
        span.children.length
          ? h('span', { class: 'toggle', 'data-toggle': '' }, collapsed ? '▸' : '▾')
          : h('span', { class: 'toggle' }),
        h('span', { class: 'svc', style: `border-color:${color}` }, span.service),
        span.name ? h('span', { class: 'op' }, span.name) : h('span', { class: 'op muted' }, '(no name)'),
        collapsed ? h('span', { class: span.errorsBelow ? 'hidden-count err' : 'hidden-count' }, `+${span.descendants}`) : null,
        span.orphan ? h('span', { class: 'orphan', title: `parent ${span.parent_span_id} is not in the trace` }, 'orphan') : null,
        span.status.code === 'error' ? h('span', { class: 'err-mark', title: span.status.message || 'error' }, '!') : null),
      h('div', { class: 'bar-cell' },
        h('div', { class: 'bar', style: `left:${left}%;width:${width}%;background:${color}` }),
        h('span', { class: 'bar-label', style: labelPlace(left, width) }, label)));
  }

  // find marks the spans whose service, name or an attribute's key or value
  // holds the text, ignoring case.
  find(text) {
    const needle = text.trim().toLowerCase();
    const hit = (sp) => sp.name.toLowerCase().includes(needle) || sp.service.toLowerCase().includes(needle) ||
      sp.attributes.some((a) => a.key.toLowerCase().includes(needle) || attrValue(a).toLowerCase().includes(needle));
    this.matches = [];
    if (needle) {
      const stack = this.roots.slice().reverse();
      while (stack.length) {
        const sp = stack.pop();
        if (hit(sp)) this.matches.push(sp);
        for (let i = sp.children.length - 1; i >= 0; i--) stack.push(sp.children[i]);
      }
    }
    this.matched = new Set(this.matches);
    this.matchAt = -1;
    this.findCount.textContent = needle ? `${this.matches.length} found` : '';
    this.first = -1;
    this.drawRows();
  }

  // nextMatch shows the next span found, expanding what hides it.
  nextMatch() {
    if (!this.matches.length) return;
    this.matchAt = (this.matchAt + 1) % this.matches.length;
    const span = this.matches[this.matchAt];
    for (let p = span.parent; p; p = p.parent) this.collapsed.delete(p);
    this.layout();
    this.selected = span;
    this.showDetail(span);
    const i = this.rows.findIndex((r) => r.span === span);
    this.scroller.scrollTop = i * rowHeight - this.scroller.clientHeight / 2;
    this.findCount.textContent = `${this.matchAt + 1} of ${this.matches.length}`;
    this.draw(true);
  }

  click(e) {
    const rowEl = e.target.closest('.row');
    if (!rowEl) return;
    const { span } = this.rows[Number(rowEl.dataset.row)];
    if (e.target.closest('[data-toggle]')) {
      this.toggle(span);
      return;
    }
    this.selected = span;
    this.first = -1;
    this.drawRows();
    this.showDetail(span);
  }

  drawMinimap() {
    const c = this.minimap;
    const w = c.clientWidth;
    const dpr = window.devicePixelRatio || 1;
    c.width = w * dpr;
    c.height = 60 * dpr;
    const ctx = c.getContext('2d');
    ctx.scale(dpr, dpr);
    ctx.clearRect(0, 0, w, 60);
    const n = this.rows.length;
    const hgt = Math.max(60 / n, 0.5);
    for (let i = 0; i < n; i++) {
      const sp = this.rows[i].span;
      ctx.fillStyle = sp.status.code === 'error' ? '#d33' : this.colors.get(sp.service);
      ctx.fillRect(sp.offset / this.total * w, i / n * 60, Math.max(sp.duration_ns / this.total * w, 1), hgt);
    }
  }

  // drawWindow outlines, on the minimap, the rows in sight and the time
  // window shown.
  drawWindow() {
    const n = this.rows.length * rowHeight || 1;
    const top = this.scroller.scrollTop / n * 60;
    const height = Math.min(60, this.scroller.clientHeight / n * 60);
    const [a, b] = this.window;
    Object.assign(this.mmWindow.style, {
      top: top + 'px', height: Math.max(height, 2) + 'px',
      left: a / this.total * 100 + '%', width: (b - a) / this.total * 100 + '%',
    });
  }

  // bindMinimap: a click scrolls the waterfall there, a drag across zooms
  // into the time window dragged over, a double click shows the whole trace.
  bindMinimap(mm) {
    let from = null;
    const pos = (e) => {
      const r = mm.getBoundingClientRect();
      return { x: Math.min(Math.max((e.clientX - r.left) / r.width, 0), 1), y: (e.clientY - r.top) / r.height };
    };
    mm.addEventListener('mousedown', (e) => {
      from = pos(e);
      e.preventDefault();
    });
    mm.addEventListener('mousemove', (e) => {
      if (!from) return;
      const p = pos(e);
      Object.assign(this.mmSelect.style, { left: Math.min(from.x, p.x) * 100 + '%', width: Math.abs(p.x - from.x) * 100 + '%' });
      this.mmSelect.hidden = Math.abs(p.x - from.x) < 0.005;
    });
    const end = (e) => {
      if (!from) return;
      const p = pos(e);
      this.mmSelect.hidden = true;
      if (Math.abs(p.x - from.x) >= 0.005) {
        this.window = [Math.min(from.x, p.x) * this.total, Math.max(from.x, p.x) * this.total];
        this.draw(true);
      } else {
        this.scroller.scrollTop = p.y * this.rows.length * rowHeight - this.scroller.clientHeight / 2;
      }
      from = null;
    };
    mm.addEventListener('mouseup', end);
    mm.addEventListener('mouseleave', (e) => { if (from) end(e); });
    mm.addEventListener('dblclick', () => {
      this.window = [0, this.total];
      this.draw(true);
    });
  }

  showDetail(span) {
    const t = this.trace;
    const res = t.resources[span.resource];
    const scope = t.scopes[span.scope];
    const since = (ns) => duration(nanosSince(ns, t.start_unix_nano));
    this.detail.hidden = false;
    this.detail.replaceChildren(
      h('button', { type: 'button', class: 'close', title: 'close', onclick: () => { this.detail.hidden = true; } }, '×'),
      h('h2', {}, span.name),
      h('dl', {},
        dd('Service', span.service),
        dd('Kind', span.kind || 'unspecified'),
        dd('Span ID', h('code', {}, span.span_id)),
        dd('Parent', span.parent_span_id ? h('code', {}, span.parent_span_id + (span.orphan ? ' (not in the trace)' : '')) : 'none: a root'),
        dd('Start', `${since(span.start_unix_nano)} after the trace's start`),
        dd('Duration', duration(span.duration_ns)),
        this.critical.has(span.span_id) ? dd('Critical path', this.pathNote(span)) : null,
        dd('Status', h('span', { class: span.status.code === 'error' ? 'err' : '' }, span.status.code + (span.status.message ? `: ${span.status.message}` : ''))),
        span.trace_state ? dd('Trace state', span.trace_state) : null,
        span.dropped ? dd('Dropped', `${span.dropped.attributes} attributes, ${span.dropped.events} events, ${span.dropped.links} links`) : null),
      section('Attributes', attrTable(span.attributes)),
      section(`Events (${span.events.length})`, span.events.length ? span.events.map((ev) =>
        h('div', { class: 'event' }, h('div', {}, h('b', {}, ev.name), Number(ev.time_unix_nano) ? ` at ${since(ev.time_unix_nano)}` : ' (no time given)'), attrTable(ev.attributes))) : null),
      section(`Links (${span.links.length})`, span.links.length ? span.links.map((l) =>
        h('div', { class: 'link' }, h('a', { href: '#/trace/' + l.trace_id }, h('code', {}, `${l.trace_id} / ${l.span_id}`)), attrTable(l.attributes))) : null),
      section('Resource', attrTable(res.attributes)),
      section('Scope', h('p', {}, scope.name ? `${scope.name} ${scope.version || ''}` : '(none)'), scope.attributes.length ? attrTable(scope.attributes) : null));
  }

  // pathNote says how long the span holds the critical path up, and how
  // long its operation does in all.
  pathNote(span) {
    const own = duration(this.selfBySpan.get(span.span_id) || 0);
    const op = this.selfByOp.get(span.service + '\u0000' + span.name);
    const note = op ? `; ${span.name} in all: ${duration(op.self_ms * 1e6)}, ${(op.share * 100).toFixed(1)}% of the path` : '';
    return h('span', { class: 'crit-note' }, `this span: ${own} of self time on it${note}`);
  }
}

// labelPlace puts a bar's label after it, or before it if there is no room
// after, or inside it if there is room on neither side.
function labelPlace(left, width) {
  if (left + width < 85) return `left:${left + width}%`;
  if (left > 15) return `right:${100 - left}%`;
  return `left:${Math.max(left, 0)}%;color:#fff`;
}

function fact(label, value) {
  return h('span', { class: 'fact' }, h('span', { class: 'label' }, label), value);
}

function dd(label, value) {
  return [h('dt', {}, label), h('dd', {}, value)];
}

function section(title, ...body) {
  return h('section', {}, h('h3', {}, title), ...body);
}

function attrTable(attrs) {
  if (!attrs.length) return h('p', { class: 'muted' }, 'none');
  return h('table', { class: 'attrs' }, attrs.map((a) =>
    h('tr', {}, h('td', { class: 'key' }, clip(a.key, 200)), h('td', { title: a.type }, clip(attrValue(a), 2000)))));
}

// clip shows the first n characters of a long text and a button that
// shows the rest: a megabyte drawn whole pushed the rest of the span out
// of reach.
function clip(text, n) {
  if (text.length <= n) return text;
  const el = h('span', { class: 'clipped' }, text.slice(0, n) + '… ');
  el.append(h('button', {
    type: 'button', class: 'more',
    onclick: () => el.replaceChildren(text),
  }, `show all ${text.length.toLocaleString('en')} characters`));
  return el;
}

// legend names the services of a trace with their colours, those with the
// most spans first; a trace across a thousand services lists the first
// legendMax and says how many more there are.
const legendMax = 30;
function legend(services, colors) {
  const byCount = [...services].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const more = byCount.length - legendMax;
  return h('div', { class: 'legend' }, byCount.slice(0, legendMax).map(([name, n]) =>
    h('span', { title: name }, h('i', { style: `background:${colors.get(name)}` }), `${name} (${n})`)),
  more > 0 ? h('span', { class: 'muted' }, `and ${more} more services`) : null);
}
