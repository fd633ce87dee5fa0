// The console's one way to the orchestrator: fetch on the console's own origin, the session
// cookie sent by the browser (HttpOnly: this code never sees it), and the header every change
// needs. Errors come back as Error with the API's code and message.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
  const init = { method, headers: {}, credentials: 'same-origin' };
  if (method !== 'GET') init.headers['x-tenguard-console'] = '1';
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let json = null;
  try {
    json = text === '' ? null : JSON.parse(text);
  } catch {
    json = null;
  }
  if (!r.ok) {
    throw new ApiError(r.status, json?.code ?? `HTTP ${r.status}`, json?.message ?? text.slice(0, 200));
  }
  return json;
}

export function enc(s) {
  return encodeURIComponent(s);
}
