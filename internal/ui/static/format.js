// Formatting and small DOM helpers shared by the pages.

// h creates an element: h('a', {href: '#'}, 'text', child…).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// spanNames marks an operation that is the shape of n span names, such as
// SQL with its values; nothing for one name (n 0 or absent).
export function spanNames(n) {
  return n ? h('span', { class: 'muted', title: 'span names that differ only in their literals, each written ?' }, ` (${n} span names)`) : null;
}

const svgNS = 'http://www.w3.org/2000/svg';

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) el.append(c instanceof Node ? c : String(c));
  return el;
}

// duration formats nanoseconds with three significant digits.
export function duration(ns) {
  // A span that ends before it starts, as a sender's clock can make one.
  if (ns < 0) return '−' + duration(-ns);
  const units = [[3600e9, 'h'], [60e9, 'min'], [1e9, 's'], [1e6, 'ms'], [1e3, 'µs']];
  for (const [size, unit] of units) {
    if (ns >= size) return `${+(ns / size).toPrecision(3)} ${unit}`;
  }
  return ns === 0 ? '0' : `${+ns.toPrecision(3)} ns`;
}

// niceStep is a round step (1, 2 or 5 times a power of ten) that cuts span
// into about n parts.
export function niceStep(span, n) {
  const raw = span / n;
  const pow = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) {
    if (m * pow >= raw) return m * pow;
  }
  return 10 * pow;
}

// nanosSince is t − t0 for decimal strings of unix nanoseconds, exact up to
// 2^53 ns (104 days).
export function nanosSince(t, t0) {
  return Number(BigInt(t) - BigInt(t0));
}

export function dateTime(unixNanoString) {
  const d = new Date(Number(BigInt(unixNanoString) / 1000000n));
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

// palette holds colours far apart from one another, for the services of a
// trace.
const palette = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#edc948', '#9c755f', '#ff9da7', '#86bcb6', '#8cd17d', '#a0cbe8', '#d37295'];

// serviceColors gives each of the services a colour of its own, in the
// order of their names, so that a trace's few services never share one
// (up to 12; past that they repeat).
export function serviceColors(names) {
  const colors = new Map();
  [...new Set(names)].sort().forEach((name, i) => colors.set(name, palette[i % palette.length]));
  return colors;
}

// attrValue renders a typed attribute value of the API as text.
export function attrValue(v) {
  switch (v.type) {
    case 'string': return v.value;
    case 'array': return '[' + v.value.map(attrValue).join(', ') + ']';
    case 'kvlist': return '{' + v.value.map((kv) => `${kv.key}: ${attrValue(kv)}`).join(', ') + '}';
    case 'empty': return '';
    default: return String(v.value);
  }
}
