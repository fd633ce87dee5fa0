// The demo's web console step: the orchestrator serves its console (--console on a loopback
// port); a one-time login link from its API (as the operator, over the API's own
// authentication) is exchanged for a session, and the console answers the installation's
// status with the lab's hosts. With --keep the demo then prints the address and a fresh link
// and leaves the lab up until Ctrl-C.
import { request } from 'node:http';
import type { DemoControl } from './control.js';
import type { DemoReporter } from './report.js';

function get(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; cookie: string | null; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        method: 'GET',
        headers,
        timeout: 10_000,
      },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => {
          body += d.toString();
        });
        res.on('end', () => {
          const c = res.headers['set-cookie']?.[0];
          resolve({ status: res.statusCode ?? 0, cookie: c === undefined ? null : c.split(';')[0], body });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end();
  });
}

/** Checks the console; returns its address (…/console/), or null when it does not answer. */
export async function consoleStep(control: DemoControl, report: DemoReporter): Promise<string | null> {
  report.step("web console: the orchestrator's view in a browser");
  if (control.consoleLogin === undefined) {
    report.result.notShown.push('web console: this control plane serves none');
    return null;
  }
  const link = await control.consoleLogin();
  const base = link.url.slice(0, link.url.indexOf('login?'));
  const anonymous = await get(`${base.replace(/\/console\/$/, '')}/v1/status`);
  const login = await get(link.url);
  const status =
    login.cookie === null
      ? null
      : await get(`${base.replace(/\/console\/$/, '')}/v1/status`, { cookie: login.cookie });
  const again = await get(link.url);
  let hosts = 0;
  try {
    hosts = (JSON.parse(status?.body ?? '{}') as { hosts?: unknown[] }).hosts?.length ?? 0;
  } catch {
    hosts = 0;
  }
  report.check(
    'the web console serves the installation behind the API login',
    anonymous.status === 401 &&
      login.status === 303 &&
      status?.status === 200 &&
      hosts === 2 &&
      again.status === 401,
    `${base}: without a session ${anonymous.status}; a one-time link from the API -> ${login.status} with a session cookie; status with it ${status?.status ?? 'none'} (${hosts} hosts); the same link again ${again.status}`,
  );
  report.result.console = base;
  return base;
}

/** --keep: the address and a fresh login link, then wait for Ctrl-C (the abort). */
export async function keepUp(control: DemoControl, base: string, report: DemoReporter, signal: AbortSignal) {
  const link = await control.consoleLogin!();
  report.say(
    [
      '',
      `the lab stays up (--keep): web console at ${base}`,
      `      log in with ${link.url}`,
      `      (one use, until ${link.expiresAt}; the session then lasts up to 12 h)`,
      '      Ctrl-C ends the demo and removes everything it started',
    ].join('\n'),
  );
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}
