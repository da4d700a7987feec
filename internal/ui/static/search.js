// Search: the form, the traces found as a duration-over-time scatter plot
// and a table; each trace links to its view. The form's fields live in the
// URL's fragment, so a search can be shared and gone back to.
import { APIError, get } from './api.js';
import { dateTime, duration, h, niceStep, s } from './format.js';
import { localInput } from './range.js';

const ranges = [['15m', 'last 15 minutes'], ['1h', 'last hour'], ['6h', 'last 6 hours'], ['24h', 'last 24 hours'], ['72h', 'last 3 days'], ['custom', 'custom']];

export async function render(main, route) {
  const p = route.params;
  const form = searchForm(p);
  const results = h('section', { class: 'results' });
  main.append(h('div', { class: 'search' }, form, results));
  await fillServices(form, get('/api/v1/services'), p.get('service') || '', p.get('operation') || '');
  results.append(h('p', { class: 'muted' }, 'Searching…'));
  let found;
  try {
    found = await get('/api/v1/search', apiParams(p));
  } catch (err) {
    // No token, or no cairn: the page as a whole says so.
    if (err instanceof APIError && (err.status === 401 || err.status === 0)) throw err;
    // The form stays, to be corrected.
    results.replaceChildren(h('p', { class: 'error' }, err.message));
    return;
  }
  showResults(results, found.traces, p);
}

// apiParams turns the page's parameters into the search API's.
export function apiParams(p) {
  const q = {
    service: p.get('service') || '',
    operation: p.get('operation') || '',
    attr: p.getAll('attr'),
    min_duration: p.get('min_duration') || '',
    max_duration: p.get('max_duration') || '',
    errors: p.get('errors') === 'true' ? 'true' : '',
    limit: p.get('limit') || '50',
  };
  const range = p.get('range') || '1h';
  if (range === 'custom') {
    for (const k of ['start', 'end']) {
      const t = p.get(k) ? new Date(p.get(k)) : null;
      if (t && isNaN(t)) throw new Error(`The range's ${k}, ${p.get(k)}, is not a time.`);
      q[k] = t ? t.toISOString() : '';
    }
  } else {
    q.since = range;
  }
  return q;
}

// inputTime writes a time of the URL (UTC, or an older link's local
// time) as a datetime-local input's value, to the second; what is not a
// time stays as it is, for the search to say so.
function inputTime(text) {
  const d = new Date(text);
  return !text || isNaN(d) ? text || '' : localInput(d, true);
}

function field(label, input) {
  return h('label', {}, h('span', {}, label), input);
}

function searchForm(p) {
  const range = p.get('range') || '1h';
  const custom = h('div', { class: 'custom-range', hidden: range !== 'custom' },
    field('From', h('input', { type: 'datetime-local', name: 'start', step: 1, value: inputTime(p.get('start')) })),
    field('To', h('input', { type: 'datetime-local', name: 'end', step: 1, value: inputTime(p.get('end')) })));
  const rangeSelect = h('select', {
    name: 'range',
    onchange: (e) => { custom.hidden = e.target.value !== 'custom'; },
  }, ranges.map(([v, label]) => h('option', { value: v, selected: v === range }, label)));
  const form = h('form', { class: 'search-form', onsubmit: submit },
    field('Service', h('select', { name: 'service' }, h('option', { value: '' }, 'all services'))),
    field('Operation', h('select', { name: 'operation' }, h('option', { value: '' }, 'all operations'))),
    field('Attributes', h('textarea', {
      name: 'attr', rows: 3, spellcheck: 'false',
      placeholder: 'key=value, one a line:\nhttp.response.status_code=500\nenduser.id="42"',
    }, p.getAll('attr').join('\n'))),
    h('div', { class: 'pair' },
      field('Min duration', h('input', { name: 'min_duration', placeholder: '250ms', value: p.get('min_duration') || '' })),
      field('Max duration', h('input', { name: 'max_duration', placeholder: '2s', value: p.get('max_duration') || '' }))),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'errors', checked: p.get('errors') === 'true' }), 'errors only'),
    field('Range', rangeSelect),
    custom,
    field('Limit', h('input', { type: 'number', name: 'limit', min: 1, max: 1000, value: p.get('limit') || '50' })),
    h('button', { type: 'submit' }, 'Find traces'));
  form.elements.service.addEventListener('change', () => fillOperations(form, form.elements.service.value, ''));
  return form;
}

function submit(e) {
  e.preventDefault();
  const f = e.target.elements;
  const p = new URLSearchParams();
  for (const name of ['service', 'operation', 'min_duration', 'max_duration', 'range', 'limit']) {
    if (f[name].value.trim()) p.set(name, f[name].value.trim());
  }
  for (const line of f.attr.value.split('\n')) {
    if (line.trim()) p.append('attr', line.trim());
  }
  if (f.errors.checked) p.set('errors', 'true');
  if (f.range.value === 'custom') {
    // In UTC, so that a link means the same range in every time zone.
    for (const name of ['start', 'end']) {
      const t = new Date(f[name].value);
      if (f[name].value) p.set(name, isNaN(t) ? f[name].value : t.toISOString());
    }
  }
  const hash = '#/search?' + p.toString();
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else location.hash = hash;
}

async function fillServices(form, services, service, operation) {
  const list = (await services).services;
  const select = form.elements.service;
  // A service with no name is no choice: its value would be "all".
  select.append(...list.filter(Boolean).map((name) => h('option', { value: name, selected: name === service }, name)));
  // One the store does not list (gone past retention, misspelt) is still
  // what the search filters by, and is shown as such.
  if (service && !list.includes(service)) select.append(h('option', { value: service, selected: true }, `${service} (not stored)`));
  // Not waited for: the search need not wait for the list of operations,
  // and says itself what a failed call to the API was.
  if (service) fillOperations(form, service, operation).catch(() => {});
}

async function fillOperations(form, service, operation) {
  const select = form.elements.operation;
  select.replaceChildren(h('option', { value: '' }, 'all operations'));
  if (!service) return;
  const ops = (await get('/api/v1/operations', { service })).operations;
  const names = [...new Set(ops.map((op) => op.name))].sort();
  select.append(...names.map((name) => h('option', { value: name, selected: name === operation }, name)));
}

function showResults(el, traces, p) {
  const limit = Number(p.get('limit') || 50);
  const note = traces.length === limit ? ` (the limit: there may be more; narrow the search or raise the limit)` : '';
  el.replaceChildren(
    h('p', { class: 'count' }, `${traces.length} trace${traces.length === 1 ? '' : 's'}, the most recent first${note}`));
  if (traces.length === 0) return;
  el.append(scatter(traces), table(traces));
}

// scatter plots each trace's duration against its start time; the size of
// a dot grows with its spans, and traces with errors are red. Where the
// longest trace is more than 100 times the median, durations are on a log
// scale: on a linear one, an hour-long trace put thousands of others on
// one line at 0.
function scatter(traces) {
  const W = 1000, H = 220, left = 64, right = 16, top = 12, bottom = 28;
  const starts = traces.map((t) => Number(BigInt(t.start_unix_nano) / 1000000n));
  let t0 = Math.min(...starts), t1 = Math.max(...starts);
  if (t1 - t0 < 1000) { t0 -= 500; t1 += 500; }
  const pad = (t1 - t0) * 0.03;
  t0 -= pad; t1 += pad;
  const dmax = Math.max(...traces.map((t) => t.duration_ns)) * 1.1 || 1;
  const positive = traces.map((t) => t.duration_ns).filter((d) => d > 0).sort((a, b) => a - b);
  const median = positive[positive.length >> 1] || 0;
  const log = median > 0 && dmax > 100 * median;
  const x = (ms) => left + (ms - t0) / (t1 - t0) * (W - left - right);
  // On the log scale, from a decade under the shortest trace.
  const lo = log ? 10 ** Math.floor(Math.log10(positive[0])) : 0;
  const y = log
    ? (ns) => H - bottom - (Math.log10(Math.max(ns, lo)) - Math.log10(lo)) / (Math.log10(dmax) - Math.log10(lo)) * (H - top - bottom)
    : (ns) => H - bottom - ns / dmax * (H - top - bottom);
  const svg = s('svg', { class: log ? 'scatter log' : 'scatter', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'duration over time' });
  const ticks = [];
  if (log) {
    const every = Math.ceil(Math.log10(dmax / lo) / 5); // at most about five
    for (let d = lo; d <= dmax; d *= 10 ** every) ticks.push(d);
  } else {
    const dstep = niceStep(dmax, 4);
    for (let d = 0; d <= dmax; d += dstep) ticks.push(d);
  }
  for (const d of ticks) {
    svg.append(s('line', { x1: left, x2: W - right, y1: y(d), y2: y(d), class: 'grid' }),
      s('text', { x: left - 6, y: y(d) + 4, 'text-anchor': 'end' }, duration(d)));
  }
  if (log) svg.append(s('text', { x: left + 4, y: top + 4, class: 'scale-note' }, 'log scale'));
  const tstep = niceStep(t1 - t0, 6);
  for (let t = Math.ceil(t0 / tstep) * tstep; t <= t1; t += tstep) {
    const d = new Date(t);
    let label = d.toTimeString().slice(0, tstep >= 60000 ? 5 : 8);
    if (tstep < 1000) label += '.' + String(d.getMilliseconds()).padStart(3, '0');
    svg.append(s('text', { x: x(t), y: H - 8, 'text-anchor': 'middle' }, label));
  }
  traces.forEach((t, i) => {
    const r = 3 + Math.min(7, Math.log2(t.spans));
    svg.append(s('a', { href: '#/trace/' + t.trace_id },
      s('circle', { cx: x(starts[i]), cy: y(t.duration_ns), r, class: t.errors ? 'dot err' : 'dot' },
        s('title', {}, `${t.root_service}: ${t.root_operation}\n${duration(t.duration_ns)}, ${t.spans} spans, ${t.errors} errors`))));
  });
  return svg;
}

function table(traces) {
  const rows = traces.map((t) => h('tr', { class: t.errors ? 'has-err' : '' },
    h('td', {}, dateTime(t.start_unix_nano)),
    h('td', {}, h('a', { href: '#/trace/' + t.trace_id, title: rootName(t) }, rootName(t))),
    h('td', { class: 'num' }, duration(t.duration_ns)),
    h('td', { class: 'num' }, t.spans),
    h('td', { class: 'num' }, t.errors),
    h('td', { class: 'id' }, t.trace_id.slice(0, 16))));
  return h('table', { class: 'traces' },
    h('thead', {}, h('tr', {}, ['Start', 'Root', 'Duration', 'Spans', 'Errors', 'Trace ID'].map((c) => h('th', {}, c)))),
    h('tbody', {}, rows));
}

function rootName(t) {
  return t.root_service || t.root_operation ? `${t.root_service}: ${t.root_operation}` : '(no root span)';
}
