// The shell: a page per route of the URL's fragment (#/services,
// #/search?…, #/trace/ID…). A page is a module whose render(main, route)
// draws into main and may return a function that undoes what it set up
// outside main.
import { APIError, setToken, token, validToken } from './api.js';
import { h } from './format.js';
import * as diagnose from './diagnose.js';
import * as map from './map.js';
import * as search from './search.js';
import * as services from './services.js';
import * as trace from './trace.js';

// routes map a fragment's first path segment to its page; nav lists those
// in the header. A new page is a module here and, if it is a place to start
// from, an entry of nav.
const routes = { services, map, search, trace, diagnose };
const nav = [['services', 'Services'], ['map', 'Service map'], ['search', 'Search'], ['diagnose', 'Diagnose']];

let cleanup = null;
let shown = 0; // how many routes have been shown: the current one's number

// parseRoute splits a fragment into its page, the page's arguments and its
// parameters. A fragment that does not decode (a lone %) throws URIError.
export function parseRoute(hash) {
  const [path, query = ''] = hash.replace(/^#\/?/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || 'services', args: parts.slice(1), params: new URLSearchParams(query) };
}

// show draws the route of the URL's fragment. Each page draws into a view
// of its own: one left while it waited for the API (a large trace, then a
// click on Services) finishes into a view no longer on the page, and what
// it set up outside it is undone at once.
async function show() {
  const n = ++shown;
  if (cleanup) cleanup();
  cleanup = null;
  const view = h('div', { class: 'view' });
  document.getElementById('main').replaceChildren(view);
  let route;
  try {
    route = parseRoute(location.hash);
  } catch (err) {
    showError(view, new Error(`This address does not decode (${err.message}): ${location.hash}`));
    return;
  }
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.page === route.page);
  }
  const page = Object.hasOwn(routes, route.page) ? routes[route.page] : services;
  try {
    const undo = (await page.render(view, route)) || null;
    if (n === shown) cleanup = undo;
    else if (undo) undo();
  } catch (err) {
    showError(view, err);
    // cairn stopped or restarting: the page is drawn again once it
    // answers, as long as it is still the page shown.
    if (err instanceof APIError && err.status === 0) {
      view.append(h('p', { class: 'muted retrying' }, `Trying again every ${retryEvery / 1000} s.`));
      setTimeout(() => { if (n === shown) show(); }, retryEvery);
    }
  }
}

// retryEvery is how often a page that found cairn not answering asks again.
const retryEvery = 5000;

// showError says why a page has no data; for a missing or wrong token, it
// asks for one.
export function showError(el, err) {
  if (err instanceof APIError && err.status === 401) {
    const input = h('input', { type: 'password', name: 'token', placeholder: 'query token', value: token() });
    const problem = h('p', { class: 'token-problem', hidden: true });
    el.replaceChildren(h('form', {
      class: 'token',
      onsubmit: (e) => {
        e.preventDefault();
        // A header cannot carry other characters: fetch would throw, as
        // if cairn did not answer.
        if (!validToken(input.value.trim())) {
          problem.textContent = 'A token is letters, digits and ASCII symbols, without spaces.';
          problem.className = 'error token-problem';
          problem.hidden = false;
          return;
        }
        setToken(input.value.trim());
        show();
      },
    }, h('p', {}, 'This cairn wants a query token (--query-token-file).'),
    token() ? h('p', { class: 'error' }, 'The token given was refused.') : null, problem, input, h('button', {}, 'Use token')));
    return;
  }
  el.replaceChildren(h('p', { class: 'error' }, err.message || String(err)));
}

function init() {
  document.getElementById('nav').replaceChildren(...nav.map(([page, label]) =>
    h('a', { href: '#/' + page, 'data-page': page }, label)));
  window.addEventListener('hashchange', show);
  show();
}

init();
