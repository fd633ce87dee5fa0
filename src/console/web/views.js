// The console's views: each a preact component over the orchestrator's API (api.js). They
// show what the API answers and nothing else; no view holds or asks for key material.

import { api, enc } from './api.js';
import { useCallback, useEffect, useState } from './vendor/hooks.mjs';
import htm from './vendor/htm.mjs';
import { h } from './vendor/preact.mjs';

export const html = htm.bind(h);

/** Polls `load` every `ms` (0: once) and returns [data, error, reload]. */
export function usePoll(load, ms, deps = []) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const reload = useCallback(() => {
    load().then(
      (d) => {
        setData(d);
        setError(null);
      },
      (e) => setError(e),
    );
  }, deps);
  useEffect(() => {
    reload();
    if (ms <= 0) return undefined;
    const t = setInterval(reload, ms);
    return () => clearInterval(t);
  }, [reload, ms]);
  return [data, error, reload];
}

function ErrorNote({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${error.code ? `${error.code}: ` : ''}${error.message}</p>`;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return 'never';
  if (seconds < 120) return `${seconds} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function until(iso, secondsLeft) {
  const d =
    secondsLeft < 0
      ? 'expired'
      : secondsLeft < 7200
        ? `in ${Math.round(secondsLeft / 60)} min`
        : `in ${Math.round(secondsLeft / 3600)} h`;
  return `${iso} (${d})`;
}

function labelsText(l) {
  return Object.entries(l ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
}

// ---------------------------------------------------------------------------------------

export function Overview() {
  const [st, error] = usePoll(() => api('GET', '/v1/status'), 5000);
  if (!st) return html`<${ErrorNote} error=${error} /><p>Loading…</p>`;
  const o = st.orchestrator;
  return html`
    <${ErrorNote} error=${error} />
    <section aria-labelledby="ov-h">
      <h2 id="ov-h">Installation</h2>
      <dl class="facts">
        <dt>Orchestrator</dt>
        <dd>ok, revision ${o.revision}, up ${o.uptimeSeconds} s, API ${o.tls ? 'over mTLS' : 'plain HTTP (insecure)'}, ${o.reconcilePasses} reconciliation passes</dd>
        <dt>Hosts</dt>
        <dd>${st.hosts.length} (${st.hosts.filter((h) => h.nic.reachable).length} NICs answering)</dd>
        <dt>Tenants</dt>
        <dd>${st.tenants.count} (${st.tenants.withPolicy} with a policy)</dd>
        <dt>Workloads</dt>
        <dd>${st.workloads.count} ${Object.entries(st.workloads.byState).map(([k, n]) => `· ${n} ${k} `)}</dd>
        <dt>Drops</dt>
        <dd>${st.drops.total}</dd>
      </dl>
    </section>
    <section aria-labelledby="cert-h">
      <h2 id="cert-h">Certificates</h2>
      ${
        st.certificates.length === 0
          ? html`<p>No certificates: the orchestrator runs without mTLS.</p>`
          : html`<table>
              <thead><tr><th scope="col">Holder</th><th scope="col">SPIFFE ID</th><th scope="col">Expires</th></tr></thead>
              <tbody>
                ${st.certificates.map(
                  (c) =>
                    html`<tr key=${c.holder}><td>${c.holder}</td><td>${c.spiffeId ?? '-'}</td><td>${until(c.notAfter, c.secondsLeft)}</td></tr>`,
                )}
              </tbody>
            </table>`
      }
    </section>`;
}

export function Hosts() {
  const [st, error] = usePoll(() => api('GET', '/v1/status'), 5000);
  return html`
    <section aria-labelledby="hosts-h">
      <h2 id="hosts-h">Hosts and NICs</h2>
      <${ErrorNote} error=${error} />
      ${
        st &&
        html`<table>
          <thead>
            <tr>
              <th scope="col">Host</th><th scope="col">NIC</th><th scope="col">Data plane</th><th scope="col">Up</th>
              <th scope="col">Tenants</th><th scope="col">Workloads</th><th scope="col">Fabric peers</th>
              <th scope="col">Keys</th><th scope="col">Drops</th><th scope="col">vSwitch</th>
            </tr>
          </thead>
          <tbody>
            ${st.hosts.map((hst) => {
              const n = hst.nic;
              const v = hst.vswitch.reachable
                ? `ok, ${hst.vswitch.instances} instances`
                : `unreachable: ${hst.vswitch.error}`;
              return n.reachable
                ? html`<tr key=${hst.name}>
                    <th scope="row">${hst.name}</th><td>ok (API ${n.apiVersion})</td><td>${n.dataPlane ? 'running' : 'stopped'}</td>
                    <td>${n.uptimeSeconds} s</td><td>${n.tenants}</td><td>${n.workloads}</td><td>${n.remotePeers}</td>
                    <td>${n.keys}</td><td>${n.drops.total}</td><td>${v}</td>
                  </tr>`
                : html`<tr key=${hst.name}><th scope="row">${hst.name}</th><td colspan="8">unreachable: ${n.error}</td><td>${v}</td></tr>`;
            })}
          </tbody>
        </table>`
      }
    </section>`;
}

function parseLabels(text) {
  const out = {};
  for (const part of text.split(',')) {
    const t = part.trim();
    if (t === '') continue;
    const i = t.indexOf('=');
    if (i <= 0) throw new Error(`label "${t}" is not key=value`);
    out[t.slice(0, i).trim()] = t.slice(i + 1).trim();
  }
  return out;
}

export function Tenants() {
  const [tenants, tErr, reloadTenants] = usePoll(() => api('GET', '/v1/tenants'), 5000);
  const [workloads, wErr, reloadWorkloads] = usePoll(() => api('GET', '/v1/workloads'), 5000);
  const [hosts] = usePoll(() => api('GET', '/v1/hosts'), 0);
  const [note, setNote] = useState(null);
  const [busy, setBusy] = useState(false);

  const createTenant = (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setBusy(true);
    api('POST', '/v1/tenants', { name: f.get('name'), pool: f.get('pool') }).then(
      (t) => {
        setNote({ ok: true, text: `tenant ${t.name} created (pool ${t.pool})` });
        e.target.reset();
        reloadTenants();
        setBusy(false);
      },
      (err) => {
        setNote({ ok: false, text: `${err.code}: ${err.message}` });
        setBusy(false);
      },
    );
  };
  const createWorkload = (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    let labels;
    try {
      labels = parseLabels(String(f.get('labels') ?? ''));
    } catch (err) {
      setNote({ ok: false, text: err.message });
      return;
    }
    setBusy(true);
    setNote({ ok: true, text: `spinning up ${f.get('name')}…` });
    api('POST', '/v1/workloads', {
      name: f.get('name'),
      tenant: f.get('tenant'),
      host: f.get('host'),
      labels,
    }).then(
      (w) => {
        setNote({ ok: true, text: `workload ${w.name} running on ${w.host} at ${w.address}` });
        e.target.reset();
        reloadWorkloads();
        setBusy(false);
      },
      (err) => {
        setNote({ ok: false, text: `${err.code}: ${err.message}` });
        setBusy(false);
      },
    );
  };
  const remove = (name) => {
    setBusy(true);
    api('DELETE', `/v1/workloads/${enc(name)}`).then(
      () => {
        setNote({ ok: true, text: `workload ${name} deleted` });
        reloadWorkloads();
        setBusy(false);
      },
      (err) => {
        setNote({ ok: false, text: `${err.code}: ${err.message}` });
        setBusy(false);
      },
    );
  };
  const tl = tenants?.tenants ?? [];
  const wl = workloads?.workloads ?? [];
  const hl = hosts?.hosts ?? [];
  return html`
    <${ErrorNote} error=${tErr ?? wErr} />
    ${note && html`<p class=${note.ok ? 'note' : 'error'} role="status">${note.text}</p>`}
    <section aria-labelledby="tenants-h">
      <h2 id="tenants-h">Tenants</h2>
      <table id="tenant-table">
        <thead><tr><th scope="col">Tenant</th><th scope="col">Address pool</th><th scope="col">Workloads</th><th scope="col">Created</th></tr></thead>
        <tbody>
          ${tl.map(
            (t) =>
              html`<tr key=${t.name}><th scope="row">${t.name}</th><td>${t.pool}</td><td>${wl.filter((w) => w.tenant === t.name).length}</td><td>${t.createdAt}</td></tr>`,
          )}
        </tbody>
      </table>
      <form class="inline" onSubmit=${createTenant} aria-labelledby="new-tenant-h">
        <h3 id="new-tenant-h">New tenant</h3>
        <label>Name <input name="name" required pattern="[A-Za-z0-9][A-Za-z0-9._-]*" /></label>
        <label>Address pool <input name="pool" required placeholder="100.64.9.0/24" /></label>
        <button type="submit" disabled=${busy}>Create tenant</button>
      </form>
    </section>
    <section aria-labelledby="workloads-h">
      <h2 id="workloads-h">Workloads</h2>
      <table id="workload-table">
        <thead>
          <tr><th scope="col">Workload</th><th scope="col">Tenant</th><th scope="col">Host</th><th scope="col">Address</th><th scope="col">Labels</th><th scope="col">State</th><th scope="col"><span class="sr-only">Actions</span></th></tr>
        </thead>
        <tbody>
          ${wl.map(
            (w) => html`<tr key=${w.name}>
              <th scope="row">${w.name}</th><td>${w.tenant}</td><td>${w.host}${w.migratingTo ? ` → ${w.migratingTo}` : ''}</td>
              <td>${w.address}</td><td>${labelsText(w.labels)}</td><td>${w.state}</td>
              <td><button type="button" class="small" disabled=${busy} onClick=${() => remove(w.name)}>Delete ${w.name}</button></td>
            </tr>`,
          )}
        </tbody>
      </table>
      <form class="inline" onSubmit=${createWorkload} aria-labelledby="new-workload-h">
        <h3 id="new-workload-h">New workload</h3>
        <label>Name <input name="name" required pattern="[A-Za-z0-9][A-Za-z0-9._-]*" /></label>
        <label>Tenant <select name="tenant" required>${tl.map((t) => html`<option key=${t.name} value=${t.name}>${t.name}</option>`)}</select></label>
        <label>Host <select name="host" required>${hl.map((x) => html`<option key=${x.name} value=${x.name}>${x.name}</option>`)}</select></label>
        <label>Labels <input name="labels" placeholder="app=web, tier=front" /></label>
        <button type="submit" disabled=${busy}>Create workload</button>
      </form>
    </section>`;
}

function Box({ title, children, state }) {
  return html`<div class=${`box ${state ?? ''}`}><div class="box-title">${title}</div>${children}</div>`;
}

export function Topology() {
  const [topo, error] = usePoll(() => api('GET', '/v1/topology'), 3000);
  if (!topo) return html`<${ErrorNote} error=${error} /><p>Loading…</p>`;
  const hosts = new Map(topo.hosts.map((x) => [x.name, x]));
  return html`
    <${ErrorNote} error=${error} />
    <section aria-labelledby="topo-h">
      <h2 id="topo-h">Workload, vSwitch, NIC, fabric</h2>
      <p class="hint">Every workload's path: its tg0, the vSwitch instance on its host, the on-host leg to the host's NIC, and the NIC's off-host legs over the fabric for the workload's tenant. Handshake ages and bytes as the NICs count them; drops are the NIC's.</p>
      ${topo.workloads.length === 0 && html`<p>No workloads yet.</p>`}
      <ul class="legs">
        ${topo.workloads.map((w) => {
          const hst = hosts.get(w.host);
          const nic = hst?.nic;
          const fabric = (hst?.fabric ?? []).filter((f) => f.tenant === w.tenant);
          const leg = w.onHost;
          return html`<li key=${w.name} class="leg-row" aria-label=${`path of workload ${w.name}`}>
            <${Box} title=${`workload ${w.name}`} state=${w.state === 'running' ? 'ok' : 'warn'}>
              <div>${w.tenant} · ${w.address}</div><div>${w.state}</div>
            <//>
            <span class="arrow" aria-hidden="true">→</span>
            <${Box} title="vSwitch" state=${w.vswitch?.state === 'configured' ? 'ok' : 'warn'}>
              ${w.vswitch ? html`<div>${w.vswitch.ifname} (${w.vswitch.state})</div><div>pid ${w.vswitch.pid ?? '-'}</div>` : html`<div>no instance</div>`}
            <//>
            <span class="arrow" aria-hidden="true">→</span>
            <${Box} title=${`NIC ${w.host}`} state=${leg?.session ? 'ok' : 'warn'}>
              ${
                leg
                  ? html`<div>handshake ${age(leg.handshakeAgeSeconds)}</div><div>rx ${bytes(leg.rxBytes)} · tx ${bytes(leg.txBytes)}</div>`
                  : html`<div>not registered</div>`
              }
              <div>drops ${nic?.reachable ? nic.drops.total : 'n/a'}</div>
            <//>
            <span class="arrow" aria-hidden="true">→</span>
            <${Box} title="fabric" state=${fabric.some((f) => f.session) ? 'ok' : ''}>
              ${fabric.length === 0 && html`<div>no remote NIC for ${w.tenant}</div>`}
              ${fabric.map(
                (f) =>
                  html`<div key=${f.endpoint}>${f.peerHost ?? f.endpoint}: handshake ${age(f.handshakeAgeSeconds)}, rx ${bytes(f.rxBytes)} · tx ${bytes(f.txBytes)}</div>`,
              )}
            <//>
          </li>`;
        })}
      </ul>
    </section>`;
}

export function Flows() {
  const [tenant, setTenant] = useState('');
  const [workload, setWorkload] = useState('');
  const [verdict, setVerdict] = useState('');
  const [tenants] = usePoll(() => api('GET', '/v1/tenants'), 10000);
  const [data, error] = usePoll(
    () => api('GET', `/v1/flows?limit=500${tenant === '' ? '' : `&tenant=${enc(tenant)}`}`),
    2000,
    [tenant],
  );
  const flows = (data?.flows ?? [])
    .filter((f) => verdict === '' || f.verdict === verdict)
    .filter((f) => workload === '' || f.srcWorkload === workload || f.dstWorkload === workload)
    .slice()
    .reverse();
  return html`
    <section aria-labelledby="flows-h">
      <h2 id="flows-h">Live flow table</h2>
      <form class="inline filters" onSubmit=${(e) => e.preventDefault()}>
        <label>Tenant
          <select name="tenant" value=${tenant} onChange=${(e) => setTenant(e.target.value)}>
            <option value="">all</option>
            ${(tenants?.tenants ?? []).map((t) => html`<option key=${t.name} value=${t.name}>${t.name}</option>`)}
          </select>
        </label>
        <label>Workload <input name="workload" value=${workload} onInput=${(e) => setWorkload(e.target.value.trim())} /></label>
        <label>Verdict
          <select name="verdict" value=${verdict} onChange=${(e) => setVerdict(e.target.value)}>
            <option value="">all</option><option value="allow">allow</option><option value="deny">deny</option>
          </select>
        </label>
      </form>
      <${ErrorNote} error=${error} />
      <p class="hint" aria-live="polite">${flows.length} flows shown, newest first, refreshed every 2 s</p>
      <table id="flow-table">
        <thead>
          <tr>
            <th scope="col">Start</th><th scope="col">Host</th><th scope="col">Tenant</th><th scope="col">From</th><th scope="col">To</th>
            <th scope="col">Protocol</th><th scope="col">Port</th><th scope="col">Verdict</th><th scope="col">Rule</th><th scope="col">Packets</th><th scope="col">Bytes</th>
          </tr>
        </thead>
        <tbody>
          ${flows.map(
            (
              f,
              i,
            ) => html`<tr key=${`${f.host}-${f.startMs}-${f.src}-${f.srcPort}-${f.dst}-${f.dstPort}-${f.icmpId}-${i}`} class=${`verdict-${f.verdict}`}>
              <td>${f.start}</td><td>${f.host}</td><td>${f.tenant}</td>
              <td>${f.srcWorkload ?? f.src}</td><td>${f.dstWorkload ?? f.dst}</td>
              <td>${f.protocol}</td><td>${f.dstPort ?? '-'}</td><td>${f.verdict}</td><td>${f.rule}</td>
              <td>${f.packetsToDst + f.packetsToSrc}</td><td>${bytes(f.bytesToDst + f.bytesToSrc)}</td>
            </tr>`,
          )}
        </tbody>
      </table>
    </section>`;
}

export function Keys() {
  const [hosts] = usePoll(() => api('GET', '/v1/hosts'), 0);
  const [host, setHost] = useState('');
  const chosen = host || hosts?.hosts?.[0]?.name || '';
  const [keys, error] = usePoll(
    () => (chosen === '' ? Promise.resolve(null) : api('GET', `/v1/hosts/${enc(chosen)}/keys`)),
    5000,
    [chosen],
  );
  return html`
    <section aria-labelledby="keys-h">
      <h2 id="keys-h">Key inventory</h2>
      <p class="hint">Metadata only: what each NIC holds, never the keys. A fingerprint names a public key, or a one-way hash of a pre-shared key.</p>
      <form class="inline" onSubmit=${(e) => e.preventDefault()}>
        <label>Host
          <select name="host" value=${chosen} onChange=${(e) => setHost(e.target.value)}>
            ${(hosts?.hosts ?? []).map((x) => html`<option key=${x.name} value=${x.name}>${x.name}</option>`)}
          </select>
        </label>
      </form>
      <${ErrorNote} error=${error} />
      <table id="key-table">
        <thead><tr><th scope="col">Kind</th><th scope="col">Tenant</th><th scope="col">Workload</th><th scope="col">Fingerprint</th><th scope="col">Created</th><th scope="col">Last rotated</th></tr></thead>
        <tbody>
          ${(keys?.keys ?? []).map(
            (k) =>
              html`<tr key=${k.id}><td>${k.kind}</td><td>${k.tenant ?? '-'}</td><td>${k.workload ?? '-'}</td><td><code>${k.fingerprint}</code></td><td>${k.created}</td><td>${k.lastRotated ?? 'never'}</td></tr>`,
          )}
        </tbody>
      </table>
    </section>`;
}

const TEMPLATE = (tenant) => ({
  version: 1,
  tenant,
  rules: [
    { id: 'out', action: 'allow', direction: 'egress', workloads: { labels: {} }, peers: [{ labels: {} }] },
    { id: 'in', action: 'allow', direction: 'ingress', workloads: { labels: {} }, peers: [{ labels: {} }] },
  ],
  tests: [
    {
      id: 'within-tenant',
      src: { labels: {} },
      dst: { labels: {} },
      protocol: 'tcp',
      port: 80,
      expect: 'allow',
    },
  ],
});

export function Policy() {
  const [tenants] = usePoll(() => api('GET', '/v1/tenants'), 0);
  const [tenant, setTenant] = useState('');
  const chosen = tenant || tenants?.tenants?.[0]?.name || '';
  const [text, setText] = useState('');
  // undefined while the tenant's stored document loads: the editor is read-only and the buttons are
  // off until then, so a late answer cannot replace what was typed, nor a run use the old text.
  const [stored, setStored] = useState(undefined);
  const [report, setReport] = useState(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    if (chosen === '') return;
    let current = true;
    setReport(null);
    setStored(undefined);
    api('GET', `/v1/tenants/${enc(chosen)}/policy`).then(
      (p) => {
        if (!current) return;
        setStored(p.updatedAt);
        setText(JSON.stringify(p.document, null, 2));
      },
      (e) => {
        if (!current) return;
        setStored(null);
        setText(JSON.stringify(TEMPLATE(chosen), null, 2));
        if (e.status !== 404) setReport({ saved: false, error: `${e.code}: ${e.message}` });
      },
    );
    // A tenant chosen meanwhile: this answer is stale.
    return () => {
      current = false;
    };
  }, [chosen]);
  const loading = chosen !== '' && stored === undefined;
  const off = busy || loading || chosen === '';

  const run = async (save) => {
    let doc;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      setReport({ saved: false, error: `not JSON: ${e.message}` });
      return;
    }
    setBusy(true);
    try {
      // The document's built-in tests run first; a save happens only when they all hold.
      const r = await api('POST', `/v1/tenants/${enc(chosen)}/policy/test`, doc);
      if (!save || !r.ok) {
        setReport({ saved: false, test: r, blocked: save && !r.ok });
        return;
      }
      const p = await api('PUT', `/v1/tenants/${enc(chosen)}/policy`, doc);
      setStored(p.updatedAt);
      setReport({ saved: true, test: r, pushedTo: p.pushedTo });
    } catch (e) {
      setReport({ saved: false, error: `${e.code}: ${e.message}` });
    } finally {
      setBusy(false);
    }
  };
  const t = report?.test;
  return html`
    <section aria-labelledby="policy-h">
      <h2 id="policy-h">Policy editor</h2>
      <form class="policy" onSubmit=${(e) => {
        e.preventDefault();
        run(true);
      }}>
        <label>Tenant
          <select name="tenant" value=${chosen} onChange=${(e) => setTenant(e.target.value)}>
            ${(tenants?.tenants ?? []).map((x) => html`<option key=${x.name} value=${x.name}>${x.name}</option>`)}
          </select>
        </label>
        <p class="hint">${loading ? 'loading the stored policy…' : stored ? `stored policy of ${stored}` : 'no policy stored: default deny (a template is shown)'}</p>
        <label for="policy-text">Policy document (JSON)</label>
        <textarea id="policy-text" name="document" rows="22" spellcheck="false" readOnly=${loading} value=${text} onInput=${(e) => setText(e.target.value)}></textarea>
        <div class="buttons">
          <button type="button" disabled=${off} onClick=${() => run(false)}>Run tests</button>
          <button type="submit" disabled=${off}>Test and save</button>
        </div>
      </form>
      <div id="policy-result" aria-live="polite">
        ${report?.error && html`<p class="error" role="alert">${report.error}</p>`}
        ${report?.blocked && html`<p class="error" role="alert">Not saved: the document's tests failed.</p>`}
        ${report?.saved && html`<p class="note" role="status">Saved and pushed to ${report.pushedTo.length} NIC(s); all ${t.tests} tests passed.</p>`}
        ${t && !report.saved && t.ok && html`<p class="note" role="status">All ${t.tests} tests passed (not saved).</p>`}
        ${
          t &&
          t.errors.length > 0 &&
          html`<ul class="issues">${t.errors.map((e) => html`<li key=${e.path + e.message}><code>${e.path}</code> ${e.message}</li>`)}</ul>`
        }
        ${
          t &&
          t.warnings.length > 0 &&
          html`<ul class="warnings">${t.warnings.map((e) => html`<li key=${e.path + e.message}>warning: <code>${e.path}</code> ${e.message}</li>`)}</ul>`
        }
      </div>
    </section>`;
}
