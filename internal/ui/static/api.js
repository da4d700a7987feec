// The HTTP query API (see the README, "The HTTP API"). Calls carry the
// query token the user gave, if any; the server asks for one with 401.

const tokenKey = 'cairn.token';

export class APIError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(tokenKey) || '';
}

// validToken says whether t can be sent in a header: printable ASCII.
export function validToken(t) {
  return /^[\x21-\x7e]*$/.test(t);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(tokenKey, t);
  else sessionStorage.removeItem(tokenKey);
}

function headers() {
  const t = token();
  return t ? { Authorization: 'Bearer ' + t } : {};
}

// url builds an API URL; a parameter whose value is an array is repeated.
export function url(path, params = {}) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) {
    for (const one of [].concat(v)) {
      if (one !== '' && one !== undefined && one !== null) u.searchParams.append(k, one);
    }
  }
  return u;
}

// unreachable is the error of a call that cairn did not answer at all.
function unreachable(err) {
  return new APIError(0, `cairn did not answer (${err.message}): it may be stopped or restarting.`, 'Unavailable');
}

export async function get(path, params) {
  let resp;
  try {
    resp = await fetch(url(path, params), { headers: headers() });
  } catch (err) {
    throw unreachable(err);
  }
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // not JSON: a proxy's page, or a server too old for this API
  }
  if (!resp.ok) {
    const msg = body?.error || (resp.status === 401 ? 'this server needs a query token' : `HTTP ${resp.status}`);
    throw new APIError(resp.status, msg, body?.code);
  }
  return body;
}

// download saves an API answer as a file, through fetch so that the token
// goes with it.
export async function download(path, filename) {
  const resp = await fetch(url(path), { headers: headers() });
  if (!resp.ok) throw new APIError(resp.status, `HTTP ${resp.status}`);
  const blob = await resp.blob();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
