// The time range the services, map and diagnose pages share: a range
// picker (the last 15m, 1h, 6h or 24h, or custom) and auto-refresh, both
// kept in the URL's fragment so that a view can be shared and gone back to.
import { h } from './format.js';

export const ranges = [['15m', 'last 15 minutes', 15], ['1h', 'last hour', 60], ['6h', 'last 6 hours', 360], ['24h', 'last 24 hours', 1440], ['custom', 'custom']];

// refreshEvery is how often auto-refresh asks again.
export const refreshEvery = 30_000;

// window is the range a route's parameters name, as Dates. A custom range
// whose ends are not times, or end before they start, throws an error
// that says so.
export function window(params, now = new Date()) {
  const r = rangeOf(params);
  if (r === 'custom' && params.get('start') && params.get('end')) {
    const w = { start: new Date(params.get('start')), end: new Date(params.get('end')) };
    if (isNaN(w.start) || isNaN(w.end) || w.start >= w.end) {
      throw new Error(`The custom range ${params.get('start')} – ${params.get('end')} is not a start time and a later end time.`);
    }
    return w;
  }
  const minutes = (ranges.find(([v]) => v === r) || ranges[1])[2];
  return { start: new Date(now - minutes * 60_000), end: now };
}

// rangeOf is the range a route's parameters name, the last hour if they
// name none that is offered.
function rangeOf(params) {
  const r = params.get('range') || '1h';
  return ranges.some(([v]) => v === r) ? r : '1h';
}

// searchLink is a link to Search within a page's range, a custom one
// included, with extra parameters.
export function searchLink(params, extra = {}) {
  const q = new URLSearchParams(extra);
  const r = rangeOf(params);
  q.set('range', r);
  if (r === 'custom') {
    for (const k of ['start', 'end']) if (params.get(k)) q.set(k, params.get(k));
  }
  return '#/search?' + q;
}

// step is a whole number of minutes that cuts a window into about n
// points, as span metrics are kept by the minute.
export function step(w, n = 60) {
  return Math.max(1, Math.round((w.end - w.start) / 60_000 / n)) + 'm';
}

// wholeStep is a step that makes the window one point.
export function wholeStep(w) {
  return Math.ceil((w.end - w.start) / 60_000) + 1 + 'm';
}

// localInput writes a Date as a datetime-local input's value, to the
// minute or, with seconds, to the second.
export function localInput(d, seconds = false) {
  const pad = (n) => String(n).padStart(2, '0');
  const minute = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return seconds ? `${minute}:${pad(d.getSeconds())}` : minute;
}

// picker returns the range picker of a page whose route is route, with
// the auto-refresh box if the page refreshes; a change goes through the
// URL.
export function picker(route, { refresh = true } = {}) {
  const p = route.params;
  const r = rangeOf(p);
  const w = window(p);
  const go = (changes) => {
    const q = new URLSearchParams(p);
    for (const [k, v] of Object.entries(changes)) {
      if (v) q.set(k, v);
      else q.delete(k);
    }
    location.hash = '#/' + [route.page, ...route.args].map(encodeURIComponent).join('/') + '?' + q.toString();
  };
  const start = h('input', { type: 'datetime-local', name: 'start', value: localInput(w.start) });
  const end = h('input', { type: 'datetime-local', name: 'end', value: localInput(w.end) });
  const problem = h('span', { class: 'error', hidden: true });
  const show = () => {
    const from = new Date(start.value), to = new Date(end.value);
    if (isNaN(from) || isNaN(to) || from >= to) {
      problem.textContent = 'Pick a start and a later end.';
      problem.hidden = false;
      return;
    }
    go({ range: 'custom', start: from.toISOString(), end: to.toISOString() });
  };
  const custom = h('span', { class: 'custom-range', hidden: r !== 'custom' }, start, '–', end,
    h('button', { type: 'button', onclick: show }, 'Show'), problem);
  const select = h('select', {
    name: 'range',
    onchange: (e) => {
      if (e.target.value === 'custom') custom.hidden = false;
      else go({ range: e.target.value, start: '', end: '' });
    },
  }, ranges.map(([v, label]) => h('option', { value: v, selected: v === r }, label)));
  const auto = h('label', { class: 'check' }, h('input', {
    type: 'checkbox', name: 'refresh', checked: p.get('refresh') === 'on',
    onchange: (e) => go({ refresh: e.target.checked ? 'on' : '' }),
  }), 'auto-refresh');
  return h('div', { class: 'range-picker' }, select, custom, r === 'custom' || !refresh ? null : auto);
}

// autoRefresh calls fn every refreshEvery if the route asks for it; it
// returns what stops it. A refresh that fails leaves the figures shown,
// with a note at the top of el that they are older, until one succeeds.
export function autoRefresh(route, fn, el) {
  if (route.params.get('refresh') !== 'on' || route.params.get('range') === 'custom') return () => {};
  let stale = null;
  const timer = setInterval(async () => {
    try {
      await fn();
      stale?.remove();
      stale = null;
    } catch (err) {
      stale ??= h('p', { class: 'error stale' });
      stale.textContent = `Not refreshed at ${new Date().toTimeString().slice(0, 8)} (${err.message}): these figures are older. Trying again every ${refreshEvery / 1000} s.`;
      el.prepend(stale);
    }
  }, refreshEvery);
  return () => clearInterval(timer);
}

// query is the API parameters of a window.
export function query(w) {
  return { start: w.start.toISOString(), end: w.end.toISOString() };
}
