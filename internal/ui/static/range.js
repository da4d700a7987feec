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
  const r = params.get('range') || '1h';
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

// step is a whole number of minutes that cuts a window into about n
// points, as span metrics are kept by the minute.
export function step(w, n = 60) {
  return Math.max(1, Math.round((w.end - w.start) / 60_000 / n)) + 'm';
}

// wholeStep is a step that makes the window one point.
export function wholeStep(w) {
  return Math.ceil((w.end - w.start) / 60_000) + 1 + 'm';
}

// localInput writes a Date as a datetime-local input's value.
function localInput(d) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// picker returns the range picker of a page whose route is route, with
// the auto-refresh box if the page refreshes; a change goes through the
// URL.
export function picker(route, { refresh = true } = {}) {
  const p = route.params;
  const r = p.get('range') || '1h';
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
  const custom = h('span', { class: 'custom-range', hidden: r !== 'custom' }, start, '–', end,
    h('button', { type: 'button', onclick: () => go({ range: 'custom', start: new Date(start.value).toISOString(), end: new Date(end.value).toISOString() }) }, 'Show'));
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
// returns what stops it.
export function autoRefresh(route, fn) {
  if (route.params.get('refresh') !== 'on' || route.params.get('range') === 'custom') return () => {};
  const timer = setInterval(fn, refreshEvery);
  return () => clearInterval(timer);
}

// query is the API parameters of a window.
export function query(w) {
  return { start: w.start.toISOString(), end: w.end.toISOString() };
}
