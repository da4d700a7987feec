// Services: every service with its rate, error rate and p50/p99 over the
// range, each with a sparkline, from span metrics; a service's page lists
// its operations with the same columns. Services are measured by their
// server and consumer spans, the requests they serve; their operations by
// spans of every kind.
import { get } from './api.js';
import { duration, h, s, spanNames } from './format.js';
import { autoRefresh, picker, query, searchLink, step, wholeStep, window } from './range.js';

const columns = [
  ['name', 'Name'], ['rate', 'Rate'], ['errorRate', 'Errors'], ['p50', 'p50'], ['p99', 'p99'],
];

export async function render(main, route) {
  const service = route.args[0];
  const body = h('div', { class: 'metrics-body' }, h('p', { class: 'muted' }, 'Loading…'));
  const title = service
    ? h('h1', {}, h('a', { href: link('services', '', route.params) }, 'Services'), ' › ', service)
    : h('h1', {}, 'Services');
  const actions = service ? h('span', { class: 'actions' },
    h('a', { href: link('map', '', route.params, { focus: service }) }, 'on the map'), ' · ',
    h('a', { href: searchLink(route.params, { service }) }, 'search its traces')) : null;
  main.append(h('div', { class: 'page-head' }, title, actions, picker(route)), body);
  const draw = async () => body.replaceChildren(table(await load(route), route));
  await draw();
  return autoRefresh(route, draw, body);
}

// link is a fragment of the page with the route's range, and extra
// parameters.
export function link(page, arg, params, extra = {}) {
  const q = new URLSearchParams();
  for (const k of ['range', 'start', 'end', 'refresh']) if (params.get(k)) q.set(k, params.get(k));
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  return `#/${page}${arg ? '/' + encodeURIComponent(arg) : ''}?${q}`;
}

// load reads the rows: the metrics over the whole range, and in steps for
// the sparklines.
export async function load(route) {
  const w = window(route.params);
  const service = route.args[0];
  const base = { ...query(w), quantile: [0.5, 0.99] };
  // A service's span names that differ only in their literals (SQL with
  // its values, paths with IDs) are one row, their shape.
  const sel = service ? { service, shape_names: 'true' } : { by: 'service', span_kind: ['server', 'consumer'] };
  const sparkStep = step(w);
  const [fine, whole, names] = await Promise.all([
    get('/api/v1/span-metrics', { ...base, ...sel, step: sparkStep }),
    get('/api/v1/span-metrics', { ...base, ...sel, step: wholeStep(w) }),
    service ? null : get('/api/v1/services'),
  ]);
  const seconds = (w.end - w.start) / 1000;
  const stepMs = parseInt(sparkStep, 10) * 60_000;
  const first = Math.floor(w.start / 60_000) * 60_000;
  const slots = Math.ceil((w.end - first) / stepMs);
  // A service's overflow series, one a kind, and those of any service
  // are rows of their own.
  const key = (se) => se.overflow ? `\u0000overflow\u0000${se.service}\u0000${se.span_kind}` : service ? se.operation + '\u0000' + se.span_kind : se.service;
  const rows = new Map();
  for (const se of whole.series) {
    const p = se.points[0];
    if (!p) continue;
    rows.set(key(se), {
      name: se.overflow ? (se.service ? '(series over the limit)' : '(series over the limit, any service)') : service ? se.operation : se.service,
      kind: se.span_kind, overflow: se.overflow, spanNames: se.span_names || 0, calls: p.calls, errors: p.errors,
      rate: p.calls / seconds, errorRate: p.calls ? p.errors / p.calls : 0,
      p50: quantile(p, 0.5), p99: quantile(p, 0.99), spark: null,
    });
  }
  for (const se of fine.series) {
    const row = rows.get(key(se));
    if (!row) continue;
    const spark = { rate: new Array(slots).fill(0), errorRate: new Array(slots).fill(0), p50: new Array(slots).fill(null), p99: new Array(slots).fill(null) };
    for (const p of se.points) {
      const i = Math.round((Date.parse(p.time) - first) / stepMs);
      if (i < 0 || i >= slots) continue;
      spark.rate[i] = p.calls / (stepMs / 1000);
      spark.errorRate[i] = p.calls ? p.errors / p.calls : 0;
      spark.p50[i] = quantile(p, 0.5);
      spark.p99[i] = quantile(p, 0.99);
    }
    row.spark = spark;
  }
  // Services that served no request in the range are listed too, blank.
  for (const name of names?.services || []) {
    if (!rows.has(name)) rows.set(name, { name, blank: true });
  }
  return { rows: [...rows.values()], service };
}

function quantile(p, q) {
  const found = p.quantiles.find((x) => x.quantile === q);
  return found ? found.duration_ms : null;
}

function table({ rows, service }, route) {
  const p = route.params;
  const sort = p.get('sort') || (service ? 'rate' : 'name');
  const desc = p.get('dir') ? p.get('dir') === 'desc' : sort !== 'name';
  const cmp = sort === 'name'
    ? (a, b) => a.name.localeCompare(b.name) || (a.kind || '').localeCompare(b.kind || '')
    : (a, b) => (a[sort] ?? -1) - (b[sort] ?? -1);
  rows.sort((a, b) => (a.blank ? 1 : 0) - (b.blank ? 1 : 0) || (desc ? -cmp(a, b) : cmp(a, b)));
  const head = columns.map(([k, label]) => {
    const q = new URLSearchParams(p);
    q.set('sort', k);
    q.set('dir', k === sort && desc ? 'asc' : k === sort ? 'desc' : k === 'name' ? 'asc' : 'desc');
    const arrow = k === sort ? (desc ? ' ▾' : ' ▴') : '';
    const th = h('th', { class: k === 'name' ? '' : 'num', 'data-sort': k },
      h('a', { href: '#/' + [route.page, ...route.args].map(encodeURIComponent).join('/') + '?' + q }, (k === 'name' && service ? 'Operation' : k === 'name' ? 'Service' : label) + arrow));
    return k === 'name' && service ? [th, h('th', {}, 'Kind')] : th;
  });
  if (service) head.push(h('th', {}, ''));
  const body = rows.map((r) => {
    const name = service
      ? h('td', { class: 'name', title: r.name }, r.name, spanNames(r.spanNames))
      : h('td', { class: 'name', title: r.name }, r.overflow ? r.name
        // A service that sent no service.name has no page of its own.
        : r.name === '' ? h('span', { class: 'muted' }, '(no service name)')
          : h('a', { href: link('services', r.name, p) }, r.name));
    if (r.blank) {
      return h('tr', { class: 'blank', 'data-name': r.name }, name, h('td', { colspan: 4, class: 'muted' }, 'no server or consumer spans in the range'));
    }
    const cells = [name];
    if (service) cells.push(h('td', { class: 'kind' }, r.kind));
    cells.push(
      metric(`${fixed(r.rate)}/s`, r.spark?.rate, 'rate'),
      metric(`${(r.errorRate * 100).toFixed(r.errorRate && r.errorRate < 0.01 ? 2 : 1)}%`, r.spark?.errorRate, r.errors ? 'err' : ''),
      metric(r.p50 === null ? '–' : duration(r.p50 * 1e6), r.spark?.p50, 'lat'),
      metric(r.p99 === null ? '–' : duration(r.p99 * 1e6), r.spark?.p99, 'lat'));
    // A shape names no one operation to diagnose or search for.
    if (service && !r.overflow && !r.spanNames) {
      const q = { service, operation: r.name };
      cells.push(h('td', { class: 'links' },
        h('a', { href: link('diagnose', '', p, q) }, 'diagnose'), ' · ',
        h('a', { href: searchLink(p, q) }, 'traces')));
    } else if (service) cells.push(h('td'));
    return h('tr', { 'data-name': r.name, 'data-calls': r.calls, 'data-errors': r.errors }, cells);
  });
  if (!rows.length) return h('p', { class: 'muted' }, 'No span metrics in this range.');
  const table = h('table', { class: 'metrics' }, h('thead', {}, h('tr', {}, head.flat())), h('tbody', {}, body));
  if (!rows.every((r) => r.blank)) return table;
  // Spans count once their block is cut, seconds after they arrive.
  return h('div', {}, h('p', { class: 'muted no-metrics' }, 'No server or consumer spans counted in this range. Spans are counted once they are cut into a block, within seconds of their arrival (--flush-interval); the services below sent spans within retention.'), table);
}

function fixed(x) {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

function metric(text, series, cls) {
  return h('td', { class: 'num metric ' + cls }, h('span', { class: 'value' }, text), series ? sparkline(series, cls) : null);
}

// sparkline draws a series in a small box; null values leave a gap.
export function sparkline(values, cls = '') {
  const W = 90, H = 22;
  const max = Math.max(...values.filter((v) => v !== null)) || 1;
  const x = (i) => values.length > 1 ? i / (values.length - 1) * W : W / 2;
  const y = (v) => H - 2 - v / max * (H - 4);
  const parts = [];
  let run = [];
  values.forEach((v, i) => {
    if (v === null) {
      if (run.length) parts.push(run);
      run = [];
    } else run.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  });
  if (run.length) parts.push(run);
  return s('svg', { class: 'spark ' + cls, viewBox: `0 0 ${W} ${H}`, width: W, height: H },
    parts.map((pts) => pts.length === 1
      ? s('circle', { cx: pts[0].split(',')[0], cy: pts[0].split(',')[1], r: 1.5 })
      : s('polyline', { points: pts.join(' ') })));
}
