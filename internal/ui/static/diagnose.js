// Diagnose: an operation's latency and error rate over the range (not
// refreshed: a diagnosis reads much, and is of a window picked); drag
// across either chart to pick the regression window (the baseline is the
// window as long right before it, unless the URL names another), and the
// diagnosis shows: the sentence naming the likely cause, the two windows,
// the operation's latencies in both overlaid, the operations and the
// attributes ranked with their evidence, and exemplar traces to open.
import { APIError, get } from './api.js';
import { duration, h, niceStep, s, spanNames } from './format.js';
import { picker, query, step, window } from './range.js';

export async function render(main, route) {
  const p = route.params;
  const service = p.get('service') || '';
  const operation = p.get('operation') || '';
  const errors = p.get('errors') === 'true';
  const sample = p.get('sample') || defaultSample;
  const form = h('form', { class: 'diagnose-form', onsubmit: (e) => e.preventDefault() });
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Diagnose'), form, picker(route, { refresh: false })));
  const [names, ops] = await Promise.all([
    get('/api/v1/services'),
    service ? get('/api/v1/operations', { service }) : { operations: [] },
  ]);
  fillForm(form, route, names.services, ops.operations, errors);
  if (!service || !operation) {
    main.append(h('p', { class: 'muted' }, 'Pick a service and an operation.'));
    return;
  }
  const w = window(p);
  const sel = selection(p);
  const charts = h('div', { class: 'charts' }, h('p', { class: 'muted' }, 'Loading…'));
  const result = h('div', { class: 'diagnosis' });
  main.append(charts, result);
  const metrics = await get('/api/v1/span-metrics', { ...query(w), service, operation, step: step(w, 120), quantile: [0.5, 0.99] });
  const series = metrics.series.filter((x) => !x.overflow).sort((a, b) => total(b) - total(a))[0];
  charts.replaceChildren(...drawCharts(series, w, sel, route));
  // Past the span metrics' series limit, some of the operation's spans
  // count in its service's overflow series, which no operation owns.
  // (The answer holds the overflow of no service too, whoever's it is.)
  if (metrics.series.some((x) => x.overflow && x.service === service && total(x) > 0)) {
    charts.append(h('p', { class: 'muted overflow-note' }, `${service} has spans past the span metrics' series limit (--span-metrics-max-series), counted apart from any operation: the charts may leave some of this operation's calls and errors out. The diagnosis below reads its traces and is not affected.`));
  }
  if (!sel) {
    result.append(h('p', { class: 'hint' }, 'Drag across a chart over the time the operation went wrong: that is the window, and as long a time right before it the baseline.'));
    if (series) {
      try {
        result.append(await whereTimeGoes(service, operation, w, sample));
      } catch (err) {
        if (!(err instanceof APIError) || err.status === 401 || err.status === 0) throw err;
        result.append(h('p', { class: 'error' }, err.message));
      }
    }
    return;
  }
  result.append(h('p', { class: 'muted' }, 'Diagnosing…'));
  let d;
  try {
    d = await get('/api/v1/diagnose', {
      service, operation, errors: errors ? 'true' : '',
      start: sel.start.toISOString(), end: sel.end.toISOString(),
      baseline_start: p.get('baseline_start') || '', baseline_end: p.get('baseline_end') || '', sample,
    });
  } catch (err) {
    // A window the API refuses is said under the charts, which stay to
    // pick another.
    if (!(err instanceof APIError) || err.status === 401 || err.status === 0) throw err;
    result.replaceChildren(h('p', { class: 'error' }, err.message));
    return;
  }
  result.replaceChildren(...showDiagnosis(d, errors, route).filter(Boolean));
}

// defaultSample is how many traces of each window a diagnosis reads
// unless the page is asked for more: 100 answer within 100 ms on the bench
// store, 1,000 (cairn diagnose's default) take about a second but rank
// causes more surely.
const defaultSample = '100';

function total(series) {
  return series.points.reduce((n, pt) => n + pt.calls, 0);
}

// selection is the regression window the URL names, if any; one whose
// ends are not times throws an error that says so.
function selection(p) {
  const ws = p.get('window_start'), we = p.get('window_end');
  if (!ws || !we) return null;
  const sel = { start: new Date(ws), end: new Date(we) };
  if (isNaN(sel.start) || isNaN(sel.end)) throw new Error(`The window ${ws} – ${we} is not two times.`);
  return sel;
}

function go(route, changes) {
  const q = new URLSearchParams(route.params);
  for (const [k, v] of Object.entries(changes)) {
    if (v) q.set(k, v);
    else q.delete(k);
  }
  location.hash = '#/diagnose?' + q;
}

function fillForm(form, route, services, ops, errors) {
  const p = route.params;
  const service = h('select', { name: 'service', onchange: (e) => go(route, { service: e.target.value, operation: '' }) },
    h('option', { value: '' }, 'service…'),
    services.map((n) => h('option', { value: n, selected: n === p.get('service') }, n)));
  const names = [...new Set(ops.map((o) => o.name))].sort();
  const operation = h('select', { name: 'operation', onchange: (e) => go(route, { operation: e.target.value }) },
    h('option', { value: '' }, 'operation…'),
    names.map((n) => h('option', { value: n, selected: n === p.get('operation') }, n)));
  const mode = h('select', { name: 'mode', onchange: (e) => go(route, { errors: e.target.value === 'errors' ? 'true' : '' }) },
    h('option', { value: 'latency', selected: !errors }, 'slower'),
    h('option', { value: 'errors', selected: errors }, 'failing more'));
  const sample = h('select', { name: 'sample', title: 'traces read of each window', onchange: (e) => go(route, { sample: e.target.value === defaultSample ? '' : e.target.value }) },
    // A sample the address asks for that is not offered is shown too.
    [...new Set(['100', '1000', '10000', p.get('sample') || defaultSample])].map((n) => h('option', { value: n, selected: n === (p.get('sample') || defaultSample) }, `${Number(n).toLocaleString('en')} traces`)));
  form.replaceChildren(service, operation, h('span', { class: 'muted' }, 'got'), mode, h('span', { class: 'muted' }, 'from'), sample);
}

// drawCharts draws the latency (p50, p99) and the error rate of the
// operation over the range, each taking a drag to pick the window.
function drawCharts(series, w, sel, route) {
  if (!series) return [h('p', { class: 'muted' }, 'No spans of this operation in the range.')];
  const pts = series.points.map((pt) => ({
    t: Date.parse(pt.time), p50: q(pt, 0.5), p99: q(pt, 0.99), err: pt.calls ? pt.errors / pt.calls : 0,
  }));
  const base = sel && baseline(route.params, sel);
  return [
    chart('Latency', pts, [['p99', '#d9822b'], ['p50', '#3b82c4']], (v) => duration(v * 1e6), w, sel, base, route, 'latency'),
    chart('Error rate', pts, [['err', '#d33']], (v) => (v * 100).toFixed(v < 0.1 ? 1 : 0) + '%', w, sel, base, route, 'errors'),
  ];
}

// timeStep is a round step of clock time, in ms, that cuts span into
// about n parts.
function timeStep(span, n) {
  const minutes = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440];
  return (minutes.find((m) => m * 60_000 >= span / n) || 1440) * 60_000;
}

function q(pt, x) {
  return pt.quantiles.find((v) => v.quantile === x)?.duration_ms ?? null;
}

function baseline(p, sel) {
  const be = p.get('baseline_end') ? new Date(p.get('baseline_end')) : sel.start;
  const bs = p.get('baseline_start') ? new Date(p.get('baseline_start')) : new Date(be - (sel.end - sel.start));
  if (isNaN(bs) || isNaN(be)) throw new Error(`The baseline ${p.get('baseline_start')} – ${p.get('baseline_end')} is not two times.`);
  return { start: bs, end: be };
}

function chart(title, pts, lines, fmt, w, sel, base, route, name) {
  const W = 1000, H = 150, left = 64, right = 12, top = 10, bottom = 22;
  const t0 = +w.start, t1 = +w.end;
  const x = (t) => left + (t - t0) / (t1 - t0) * (W - left - right);
  const max = Math.max(...pts.flatMap((pt) => lines.map(([k]) => pt[k] ?? 0))) * 1.1 || 1;
  const y = (v) => H - bottom - v / max * (H - top - bottom);
  const svg = s('svg', { class: 'chart ' + name, viewBox: `0 0 ${W} ${H}` });
  const vstep = niceStep(max, 3);
  for (let v = 0; v <= max; v += vstep) {
    svg.append(s('line', { x1: left, x2: W - right, y1: y(v), y2: y(v), class: 'grid' }),
      s('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmt(v)));
  }
  const tstep = timeStep(t1 - t0, 8);
  for (let t = Math.ceil(t0 / tstep) * tstep; t <= t1; t += tstep) {
    svg.append(s('text', { x: x(t), y: H - 6, 'text-anchor': 'middle' }, new Date(t).toTimeString().slice(0, 5)));
  }
  const band = (r, cls) => r && s('rect', { class: cls, x: x(Math.max(+r.start, t0)), y: top, width: Math.max(0, x(Math.min(+r.end, t1)) - x(Math.max(+r.start, t0))), height: H - top - bottom });
  if (base) svg.append(band(base, 'band baseline'));
  if (sel) svg.append(band(sel, 'band window'));
  for (const [k, color] of lines) {
    const d = pts.filter((pt) => pt[k] !== null).map((pt, i) => `${i ? 'L' : 'M'}${x(pt.t).toFixed(1)},${y(pt[k]).toFixed(1)}`).join('');
    svg.append(s('path', { d, stroke: color, class: 'series' }));
  }
  const drag = s('rect', { class: 'band dragging', y: top, height: H - top - bottom, x: 0, width: 0, visibility: 'hidden' });
  svg.append(drag);
  bindDrag(svg, W, left, right, (fx) => t0 + (fx * W - left) / (W - left - right) * (t1 - t0), drag, x, (a, b) => {
    go(route, { window_start: new Date(a).toISOString(), window_end: new Date(b).toISOString(), baseline_start: '', baseline_end: '' });
  });
  const legend = lines.map(([k, color]) => h('span', {}, h('i', { style: `background:${color}` }), k === 'err' ? 'errors' : k));
  return h('section', { class: 'chart-box' }, h('h3', {}, title, h('span', { class: 'legend' }, legend),
    base ? h('span', { class: 'bands' }, h('i', { class: 'baseline' }), 'baseline', h('i', { class: 'window' }), 'window') : null), svg);
}

// bindDrag calls done with the times dragged across, from and to.
function bindDrag(svg, W, left, right, timeAt, drag, x, done) {
  let from = null;
  const frac = (e) => {
    const r = svg.getBoundingClientRect();
    return Math.min(Math.max((e.clientX - r.left) / r.width, left / W), (W - right) / W);
  };
  svg.addEventListener('mousedown', (e) => { from = frac(e); e.preventDefault(); });
  svg.addEventListener('mousemove', (e) => {
    if (from === null) return;
    const a = timeAt(from), b = timeAt(frac(e));
    drag.setAttribute('x', x(Math.min(a, b)));
    drag.setAttribute('width', Math.abs(x(b) - x(a)));
    drag.setAttribute('visibility', 'visible');
  });
  const end = (e) => {
    if (from === null) return;
    const a = timeAt(from), b = timeAt(frac(e));
    from = null;
    drag.setAttribute('visibility', 'hidden');
    if (Math.abs(b - a) >= 30_000) done(Math.min(a, b), Math.max(a, b));
  };
  svg.addEventListener('mouseup', end);
  svg.addEventListener('mouseleave', end);
}

function pct(x) {
  return (x * 100).toFixed(1) + '%';
}

function showDiagnosis(d, errors, route) {
  const time = (iso) => new Date(iso).toTimeString().slice(0, 8);
  const windows = h('table', { class: 'windows' },
    h('thead', {}, h('tr', {}, ['', 'from – to', 'traces', 'p50', 'p99', 'errors'].map((c) => h('th', {}, c)))),
    h('tbody', {}, [['baseline', d.baseline], ['window', d.window]].map(([name, x]) => h('tr', { class: name },
      h('td', {}, name), h('td', {}, `${time(x.start)} – ${time(x.end)}`), h('td', { class: 'num traces' }, x.traces, leftOut(x.left_out)),
      h('td', { class: 'num' }, duration(x.p50_ms * 1e6)), h('td', { class: 'num' }, duration(x.p99_ms * 1e6)), h('td', { class: 'num' }, pct(x.error_rate))))));
  const ops = d.operations.slice(0, 15).map((c) => h('tr', {},
    h('td', { class: 'num' }, c.score.toFixed(3)),
    h('td', {}, `${c.service}: ${c.operation}`,
      spanNames(c.span_names),
      // The callers' wait on it outside its spans: the network, or a queue.
      c.call ? h('span', { class: 'muted', title: 'its callers waited for it outside its own spans: on the network, or in a queue' }, ' (calls to it)') : null),
    h('td', { class: 'num' }, errors ? pct(c.baseline_origin_rate) : duration(c.baseline_ms * 1e6)),
    h('td', { class: 'num' }, errors ? pct(c.window_origin_rate) : duration(c.window_ms * 1e6)),
    h('td', { class: 'exemplars' }, c.exemplars.map((id) => h('a', { href: '#/trace/' + id, title: id }, id.slice(0, 8))))));
  const text = (v) => (typeof v === 'string' ? v : JSON.stringify(v));
  const attrs = (list) => list.slice(0, 15).map((a) => h('tr', {},
    h('td', { class: 'num' }, a.score.toFixed(3)),
    h('td', { class: 'num' }, pct(a.window_share)), h('td', { class: 'num' }, pct(a.baseline_share)),
    h('td', {}, `${a.key}=${text(a.value)}`, h('span', { class: 'muted' }, ` on ${a.service}`),
      // Values on exactly the same traces: the same finding, named once.
      a.aliases.length ? aliases(a.aliases.map((x) => `${x.key}=${text(x.value)}`).join(', ')) : null)));
  // One line, cut to the column; all of it in its tooltip.
  const aliases = (list) => h('div', { class: 'muted aliases', title: list }, 'alias ' + list);
  const what = errors ? 'failures originating in it, share of traces' : 'self time on the critical path per trace';
  const selection = errors ? 'failed traces' : 'slow traces';
  return [
    h('p', { class: 'cause' }, d.cause),
    h('div', { class: 'diag-grid' }, windows, histogram(d.latency)),
    d.operations.length ? section(`Operations, the most likely cause first (${what})`, h('table', { class: 'ranked ops' },
      h('thead', {}, h('tr', {}, ['score', 'operation', 'baseline', 'window', 'exemplar traces'].map((c) => h('th', {}, c)))), h('tbody', {}, ops))) : null,
    d.attributes.length ? section(`Attributes of ${selection}, the most likely cause first`, h('table', { class: 'ranked attrs' },
      h('thead', {}, h('tr', {}, ['score', 'window', 'baseline', 'attribute'].map((c) => h('th', {}, c)))), h('tbody', {}, attrs(d.attributes)))) : null,
    d.symptoms.length ? section('Symptoms, which restate the failure and are not ranked as causes', h('table', { class: 'ranked symptoms' },
      h('thead', {}, h('tr', {}, ['score', 'window', 'baseline', 'attribute'].map((c) => h('th', {}, c)))), h('tbody', {}, attrs(d.symptoms)))) : null,
  ];
}

// whereTimeGoes sums up the critical paths of the operation's spans over
// the range: each operation's self time on them, the most first, as a
// share of the time the traces took. Many span names that differ in their
// literals alone are one operation, their shape.
async function whereTimeGoes(service, operation, w, sample) {
  const cp = await get('/api/v1/critical-paths', { ...query(w), service, operation, sample });
  const rows = cp.operations.slice(0, 15).map((o) => h('tr', {},
    h('td', {}, `${o.service}: ${o.operation}`,
      spanNames(o.span_names)),
    h('td', { class: 'share' }, h('span', { class: 'share-bar', style: `width:${(o.share * 100).toFixed(1)}%` })),
    h('td', { class: 'num' }, pct(o.share)),
    h('td', { class: 'num' }, duration(o.mean_ms * 1e6)),
    h('td', { class: 'num' }, duration(o.p95_ms * 1e6)),
    h('td', { class: 'num' }, pct(o.traces / Math.max(cp.traces, 1)))));
  return section([`Where its time goes: the critical paths of ${cp.traces.toLocaleString('en')} traces over the range, ${duration(cp.mean_ms * 1e6)} on average`, leftOut(cp.left_out)],
    h('table', { class: 'ranked paths' },
      h('thead', {}, h('tr', {}, ['operation', '', 'share', 'mean', 'p95', 'on path'].map((c) => h('th', {}, c)))), h('tbody', {}, rows)));
}

// leftOut notes the traces a sample found but could not use.
function leftOut(n) {
  return n ? h('span', { class: 'muted left-out', title: 'held by a damaged file, or over the 64 MiB of spans an analysis reads' }, ` (${n.toLocaleString('en')} left out)`) : null;
}

function section(title, body) {
  return h('section', {}, h('h3', {}, title), body);
}

// histogram overlays the operation's latencies in the baseline and the
// window, each as a share of its sample, on a log scale of time.
function histogram(lat) {
  const W = 560, H = 150, left = 40, right = 10, top = 10, bottom = 24;
  const svg = s('svg', { class: 'histogram', viewBox: `0 0 ${W} ${H}` });
  const n = lat.window.length;
  if (!n) return h('p', { class: 'muted' }, 'No spans of the operation in either sample.');
  const sum = (xs) => xs.reduce((a, b) => a + b, 0) || 1;
  const share = { baseline: lat.baseline.map((c) => c / sum(lat.baseline)), window: lat.window.map((c) => c / sum(lat.window)) };
  const max = Math.max(...share.baseline, ...share.window) * 1.1 || 1;
  const bw = (W - left - right) / n;
  const y = (v) => H - bottom - v / max * (H - top - bottom);
  for (const name of ['baseline', 'window']) {
    share[name].forEach((v, i) => {
      if (v > 0) svg.append(s('rect', { class: name, x: left + i * bw, y: y(v), width: bw, height: H - bottom - y(v) }, s('title', {}, `${name}: ${lat[name][i]} spans of ${duration(lat.bounds_ms[i] * 1e6)} to ${duration(lat.bounds_ms[i + 1] * 1e6)}`)));
    });
  }
  for (let i = 0; i <= n; i += Math.max(1, Math.round(n / 6))) {
    svg.append(s('text', { x: left + i * bw, y: H - 6, 'text-anchor': i + Math.round(n / 6) > n ? 'end' : 'middle' }, duration(lat.bounds_ms[i] * 1e6)));
  }
  svg.append(s('text', { x: left - 4, y: top + 8, 'text-anchor': 'end' }, Math.round(max * 100) + '%'));
  return h('figure', { class: 'histogram-box' }, svg,
    h('figcaption', {}, h('i', { class: 'baseline' }), 'baseline ', h('i', { class: 'window' }), 'window: latency of the operation, share of its spans'));
}
