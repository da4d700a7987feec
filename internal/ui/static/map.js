// Service map: the service graph of the range, laid out in layers from
// the callers on the left to the called on the right. Edges are as thick
// as their calls are many and as red as their error rate is high, and
// labelled with both and their p99; peers that send no spans of their own
// (databases, queues, outside APIs) are drawn dashed. A node's click shows
// its metrics, an edge's its figures and a search for its traces.
import { get } from './api.js';
import { duration, h, s } from './format.js';
import { autoRefresh, picker, query, searchLink, wholeStep, window } from './range.js';
import { link } from './services.js';

const nodeW = 150, nodeH = 30, colGap = 190, rowGap = 22, pad = 20;

// Labels places the labels of edges where they hide no node and no other
// label: at the middle of the edge, or a little before or after it. An
// edge with no such place goes unlabelled; its figures show on hover and
// click.
class Labels {
  constructor(at) {
    this.boxes = [...at.values()].map((p) => [p.x - 4, p.y - 2, p.x + nodeW + 4, p.y + nodeH + 2]);
  }

  place(text, along) {
    const w = text.length * 5.4, hgt = 11;
    for (const t of [0.5, 0.38, 0.62, 0.28, 0.72]) {
      const [x, y] = along(t);
      const box = [x - w / 2, y - hgt + 2, x + w / 2, y + 2];
      if (this.boxes.some((o) => box[0] < o[2] && o[0] < box[2] && box[1] < o[3] && o[1] < box[3])) continue;
      this.boxes.push(box);
      return [x, y];
    }
    return null;
  }
}

export async function render(main, route) {
  const panel = h('aside', { class: 'map-panel', hidden: true });
  const area = h('div', { class: 'map-area' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Service map'), picker(route)),
    h('div', { class: 'map-body' }, area, panel));
  const draw = async () => {
    const w = window(route.params);
    const graph = await get('/api/v1/service-graph', { ...query(w), quantile: [0.5, 0.99] });
    const shown = cut(graph.edges, route.params.get('focus'));
    area.replaceChildren(...(shown.note ? [cutNote(shown, graph.edges, route)] : []), drawing(shown.edges, w, route, panel));
  };
  await draw();
  const focus = route.params.get('focus');
  const node = focus && area.querySelector(`g.node[data-name="${CSS.escape(focus)}"]`);
  if (node) node.dispatchEvent(new MouseEvent('click', { bubbles: true }));
  else if (focus) area.prepend(h('p', { class: 'muted focus-missing' }, `${focus} makes or takes no calls in this range.`));
  return autoRefresh(route, draw, area);
}

// A graph of more services than maxNodes is cut down to that many: a
// browser takes seconds a frame to scroll a drawing of thousands of
// services and tens of thousands of calls.
const maxNodes = 150, maxEdges = 600;

// cut returns the edges of a graph to draw, and a note if some were left
// out: those of the busiest services, by the calls they make and take, or
// those of focus, a service, with the busiest it calls or is called by.
export function cut(edges, focus) {
  const names = new Set(edges.flatMap((e) => [e.parent, e.child]));
  if (names.size <= maxNodes) return { edges, note: null };
  const calls = new Map();
  const add = (n, c) => calls.set(n, (calls.get(n) || 0) + c);
  const busiest = (ns) => [...ns].sort((a, b) => calls.get(b) - calls.get(a) || a.localeCompare(b));
  if (focus !== null && names.has(focus)) {
    const mine = edges.filter((e) => e.parent === focus || e.child === focus);
    for (const e of mine) add(e.parent === focus ? e.child : e.parent, e.calls);
    calls.delete(focus);
    const near = busiest(calls.keys());
    const keep = new Set([focus, ...near.slice(0, maxNodes - 1)]);
    return {
      edges: mine.filter((e) => keep.has(e.parent) && keep.has(e.child)),
      note: near.length < maxNodes
        ? `${focus} and the ${near.length === 1 ? 'one service' : `${near.length} services`} it calls or is called by, of ${names.size}.`
        : `${focus} and the ${maxNodes - 1} busiest of the ${near.length} services it calls or is called by, of ${names.size}.`,
      focus, names,
    };
  }
  for (const e of edges) {
    add(e.parent, e.calls);
    if (e.child !== e.parent) add(e.child, e.calls);
  }
  const keep = new Set(busiest(names).slice(0, maxNodes));
  let kept = edges.filter((e) => keep.has(e.parent) && keep.has(e.child));
  let between = 'the calls between them';
  if (kept.length > maxEdges) {
    kept = [...kept].sort((a, b) => b.calls - a.calls).slice(0, maxEdges);
    between = `the ${maxEdges} busiest calls between them`;
  }
  const drawn = new Set(kept.flatMap((e) => [e.parent, e.child])).size;
  return { edges: kept, note: `${drawn} of ${names.size} services, the busiest by the calls they make and take, and ${between}.`, names };
}

// cutNote says what a cut graph leaves out, and offers any service's
// calls, or the busiest services again.
function cutNote(shown, edges, route) {
  const go = (focus) => {
    const q = new URLSearchParams(route.params);
    if (focus) q.set('focus', focus);
    else q.delete('focus');
    location.hash = '#/map?' + q.toString();
  };
  const input = h('input', { name: 'focus', list: 'map-services', placeholder: 'a service', value: shown.focus || '' });
  const form = h('form', {
    class: 'map-focus',
    onsubmit: (e) => {
      e.preventDefault();
      if (shown.names.has(input.value)) go(input.value);
      else input.setCustomValidity(`No service ${input.value} in this range.`), input.reportValidity();
    },
  }, input, h('datalist', { id: 'map-services' }, [...shown.names].sort().map((n) => h('option', { value: n }))),
  h('button', { type: 'submit' }, 'Show its calls'),
  shown.focus ? h('button', { type: 'button', class: 'map-busiest', onclick: () => go('') }, 'Show the busiest') : null);
  input.addEventListener('input', () => input.setCustomValidity(''));
  return h('div', { class: 'map-note' }, h('p', { class: 'muted' }, shown.note), form);
}

// layout places the nodes of a graph in layers: each node one layer right
// of its furthest caller (edges closing a cycle aside), then ordered in
// its layer by the mean position of its neighbours, a few sweeps each way,
// so that edges cross little.
export function layout(names, edges) {
  const out = new Map(names.map((n) => [n, []]));
  const inn = new Map(names.map((n) => [n, []]));
  for (const e of edges) {
    if (e.parent === e.child) continue;
    out.get(e.parent).push(e.child);
    inn.get(e.child).push(e.parent);
  }
  // Depth-first from the nodes nothing calls, then from the rest: an edge
  // to a node on the current path closes a cycle and is left out of the
  // layering.
  const state = new Map();
  const back = new Set();
  const order = [];
  const visit = (start) => {
    const stack = [[start, 0]];
    state.set(start, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const kids = out.get(top[0]);
      if (top[1] < kids.length) {
        const k = kids[top[1]++];
        if (state.get(k) === 1) back.add(top[0] + '\u0000' + k);
        else if (!state.has(k)) {
          state.set(k, 1);
          stack.push([k, 0]);
        }
      } else {
        state.set(top[0], 2);
        order.push(top[0]);
        stack.pop();
      }
    }
  };
  const sorted = [...names].sort();
  for (const n of sorted) if (!inn.get(n).length && !state.has(n)) visit(n);
  for (const n of sorted) if (!state.has(n)) visit(n);
  const layer = new Map();
  const forward = (p, n) => !back.has(p + '\u0000' + n);
  for (const n of order.reverse()) { // callers before callees
    let l = 0;
    for (const p of inn.get(n)) if (forward(p, n)) l = Math.max(l, layer.get(p) + 1);
    layer.set(n, l);
  }
  // A service nothing calls sits right before the first it calls, not
  // with the fleet's entry points far to the left.
  for (const n of [...order].reverse()) {
    const kids = out.get(n).filter((k) => forward(n, k));
    if (kids.length && !inn.get(n).some((p) => forward(p, n))) layer.set(n, Math.min(...kids.map((k) => layer.get(k))) - 1);
  }
  const layers = [];
  for (const n of sorted) (layers[layer.get(n)] ||= []).push(n);
  for (let i = layers.length - 1; i >= 0; i--) if (!layers[i]) layers.splice(i, 1);
  const pos = new Map();
  const index = () => layers.forEach((ns) => ns.forEach((n, i) => pos.set(n, i - ns.length / 2)));
  index();
  const mean = (ns, fallback) => ns.length ? ns.reduce((a, n) => a + pos.get(n), 0) / ns.length : fallback;
  for (let sweep = 0; sweep < 6; sweep++) {
    const down = sweep % 2 === 0;
    const seq = down ? layers.slice(1) : layers.slice(0, -1).reverse();
    for (const ns of seq) {
      const key = new Map(ns.map((n) => [n, mean(down ? inn.get(n) : out.get(n), pos.get(n))]));
      ns.sort((a, b) => key.get(a) - key.get(b) || a.localeCompare(b));
      ns.forEach((n, i) => pos.set(n, i - ns.length / 2));
    }
  }
  const tallest = Math.max(...layers.map((ns) => ns.length));
  const at = new Map();
  layers.forEach((ns, l) => ns.forEach((n, i) => at.set(n, {
    x: pad + l * (nodeW + colGap),
    y: pad + (i + (tallest - ns.length) / 2) * (nodeH + rowGap),
  })));
  return {
    at, back,
    width: pad * 2 + layers.length * (nodeW + colGap) - colGap,
    height: pad * 2 + tallest * (nodeH + rowGap) - rowGap,
  };
}

// errorColor runs from grey, without errors, to red, at 10% and over.
function errorColor(rate) {
  const t = Math.min(rate / 0.1, 1);
  const mix = (a, b) => Math.round(a + (b - a) * t);
  return `rgb(${mix(150, 221)},${mix(160, 51)},${mix(172, 51)})`;
}

function drawing(edges, w, route, panel) {
  if (!edges.length) return h('p', { class: 'muted' }, 'No calls between services in this range.');
  const virtual = new Set(edges.filter((e) => e.virtual).map((e) => e.child));
  const names = [...new Set(edges.flatMap((e) => [e.parent, e.child]))];
  const { at, back, width, height } = layout(names, edges);
  const seconds = (w.end - w.start) / 1000;
  const maxCalls = Math.max(...edges.map((e) => e.calls));
  const errorsIn = new Map();
  for (const e of edges) {
    const c = errorsIn.get(e.child) || { calls: 0, errors: 0 };
    c.calls += e.calls;
    c.errors += e.errors;
    errorsIn.set(e.child, c);
  }
    // The drawing fits the page's width, down to 60% of its size; a larger
  // graph scrolls.
  const labels = new Labels(at);
  const svg = s('svg', { class: 'map', width: '100%', style: `min-width:${Math.round(width * 0.6)}px;max-width:${width}px` });
  let bottom = height; // calls that loop back dip below the nodes
  const edgeLayer = s('g', { class: 'edges' });
  const labelLayer = s('g', { class: 'labels' });
  const nodeLayer = s('g', { class: 'nodes' });
  svg.append(s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerUnits: 'userSpaceOnUse', markerWidth: 9, markerHeight: 9, orient: 'auto' },
    s('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#8a94a0' }))), edgeLayer, labelLayer, nodeLayer);
  const select = (el, fill) => {
    svg.querySelectorAll('.selected').forEach((x) => x.classList.remove('selected'));
    el.classList.add('selected');
    panel.hidden = false;
    fill();
  };
  for (const e of edges) {
    const a = at.get(e.parent), b = at.get(e.child);
    const rate = e.calls ? e.errors / e.calls : 0;
    const p99 = e.quantiles.find((q) => q.quantile === 0.99)?.duration_ms;
    let d, along;
    if (e.parent === e.child || back.has(e.parent + '\u0000' + e.child) || b.x <= a.x) {
      // Calls back to the left, or to itself, loop under the nodes.
      const x1 = a.x + nodeW / 2, x2 = b.x + nodeW / 2, y1 = a.y + nodeH, y2 = b.y + nodeH;
      const dip = Math.max(y1, y2) + 30 + Math.abs(x1 - x2) / 8;
      d = e.parent === e.child
        ? `M${x1 - 20},${y1} C${x1 - 40},${y1 + 40} ${x1 + 40},${y1 + 40} ${x1 + 20},${y1}`
        : `M${x1},${y1} C${x1},${dip} ${x2},${dip} ${x2},${y2}`;
      along = () => [(x1 + x2) / 2, e.parent === e.child ? y1 + 34 : dip - 6];
      bottom = Math.max(bottom, (e.parent === e.child ? y1 + 40 : dip) + pad);
    } else {
      const x1 = a.x + nodeW, y1 = a.y + nodeH / 2, x2 = b.x, y2 = b.y + nodeH / 2;
      const mid = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
      along = (t) => {
        const u = 1 - t;
        return [u * u * u * x1 + 3 * u * t * mid + t * t * t * x2, (u * u * u + 3 * u * u * t) * y1 + (3 * u * t * t + t * t * t) * y2 - 4];
      };
    }
    const text = `${callRate(e.calls, seconds)} · ${(rate * 100).toFixed(1)}%${p99 !== undefined ? ' · p99 ' + duration(p99 * 1e6) : ''}`;
    const g = s('g', { class: 'edge' + (e.errors ? ' has-err' : ''), 'data-parent': e.parent, 'data-child': e.child },
      s('path', { d, class: 'hit' }),
      s('path', { d, class: 'line', stroke: errorColor(rate), 'stroke-width': 1 + 5 * Math.log1p(e.calls) / Math.log1p(maxCalls), 'marker-end': 'url(#arrow)' }),
      s('title', {}, `${e.parent} → ${e.child}: ${e.calls} calls, ${e.errors} errors${p99 !== undefined ? ', p99 ' + duration(p99 * 1e6) : ''}`));
    g.addEventListener('click', () => select(g, () => edgePanel(panel, e, seconds, route)));
    edgeLayer.append(g);
    const spot = labels.place(text, along);
    if (spot) labelLayer.append(s('text', { x: spot[0], y: spot[1], 'text-anchor': 'middle', class: rate ? 'label err' : 'label' }, text));
  }
  for (const [name, p] of at) {
    const inc = errorsIn.get(name);
    const rate = inc && inc.calls ? inc.errors / inc.calls : 0;
    const g = s('g', { class: 'node' + (virtual.has(name) ? ' virtual' : ''), 'data-name': name, transform: `translate(${p.x},${p.y})` },
      s('rect', { width: nodeW, height: nodeH, rx: 5, stroke: virtual.has(name) ? '#8a94a0' : errorColor(rate) }),
      s('text', { x: nodeW / 2, y: nodeH / 2 + 4, 'text-anchor': 'middle', class: name ? '' : 'unnamed' }, name ? clip(name) : noName),
      s('title', {}, virtual.has(name) ? `${name}: a peer that sends no spans of its own` : name));
    g.addEventListener('click', () => select(g, () => nodePanel(panel, name, virtual.has(name), w, route)));
    nodeLayer.append(g);
  }
  svg.setAttribute('viewBox', `0 0 ${width} ${bottom}`);
  return svg;
}

function fixed(x) {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

// rate is calls per second, or for rare calls their number.
function callRate(calls, seconds) {
  return calls / seconds >= 0.01 ? `${fixed(calls / seconds)}/s` : `${calls} call${calls === 1 ? '' : 's'}`;
}

function closeButton(panel) {
  return h('button', { type: 'button', class: 'close', title: 'close', onclick: () => { panel.hidden = true; } }, '×');
}

function dl(pairs) {
  return h('dl', {}, pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function edgePanel(panel, e, seconds, route) {
  const p = route.params;
  // An edge's traces are those with a span of the called service; a peer
  // that sends no spans is found through its callers' spans.
  const service = e.virtual ? e.parent : e.child;
  panel.replaceChildren(closeButton(panel), h('h2', {}, `${e.parent} → ${e.child}`),
    dl([
      ['Calls', `${e.calls} (${fixed(e.calls / seconds)}/s)`],
      ['Errors', h('span', { class: e.errors ? 'err edge-errors' : 'edge-errors' }, `${e.errors} (${(e.calls ? e.errors / e.calls * 100 : 0).toFixed(1)}%)`)],
      ...e.quantiles.map((q) => [`p${q.quantile * 100}`, duration(q.duration_ms * 1e6)]),
      ['Mean', e.calls ? duration(e.duration_sum_ms / e.calls * 1e6) : '–'],
    ]),
    h('p', {}, h('a', { class: 'edge-search', href: searchLink(p, { service }) }, `Search traces of ${service}`),
      e.errors ? [' · ', h('a', { href: searchLink(p, { service, errors: 'true' }) }, 'with errors')] : null));
}

// noName stands for a service whose spans name none.
const noName = '(no service name)';

function clip(name) {
  return name.length > 21 ? name.slice(0, 20) + '…' : name;
}

async function nodePanel(panel, name, isVirtual, w, route) {
  panel.replaceChildren(closeButton(panel), h('h2', {}, name || noName));
  if (isVirtual) {
    panel.append(h('p', { class: 'muted' }, 'A peer that sends no spans of its own: what is known of it is what its callers measured, on the edges into it.'));
    return;
  }
  if (!name) {
    // The API takes an empty service for every service: its figures
    // would be the first service's.
    panel.append(h('p', { class: 'muted' }, 'Spans whose resource has no service.name: they have no figures or operations of their own here; its edges show what is known of its calls.'));
    return;
  }
  const m = await get('/api/v1/span-metrics', { ...query(w), service: name, by: 'service', span_kind: ['server', 'consumer'], step: wholeStep(w), quantile: [0.5, 0.99] });
  const pt = m.series[0]?.points[0];
  const seconds = (w.end - w.start) / 1000;
  const q = (x) => pt.quantiles.find((v) => v.quantile === x)?.duration_ms;
  panel.append(pt ? dl([
    ['Rate', h('span', { class: 'node-rate' }, `${fixed(pt.calls / seconds)}/s`)],
    ['Errors', `${(pt.calls ? pt.errors / pt.calls * 100 : 0).toFixed(1)}%`],
    ['p50', duration(q(0.5) * 1e6)],
    ['p99', duration(q(0.99) * 1e6)],
  ]) : h('p', { class: 'muted' }, 'No server or consumer spans in the range.'),
  h('p', {}, h('a', { class: 'node-operations', href: link('services', name, route.params) }, 'Its operations'), ' · ',
    h('a', { href: link('diagnose', '', route.params, { service: name }) }, 'diagnose')));
}
