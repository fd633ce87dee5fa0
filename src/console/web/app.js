// The tenguard web console: one page, a view per part of the installation chosen by the
// URL's hash (#/hosts, #/flows, ...). The pages load only from the console's own origin
// (preact, htm and these files); the session cookie is HttpOnly and never seen here.

import { api } from './api.js';
import { useEffect, useState } from './vendor/hooks.mjs';
import { render } from './vendor/preact.mjs';
import { Flows, Hosts, html, Keys, Overview, Policy, Tenants, Topology } from './views.js';

const VIEWS = [
  { id: 'overview', title: 'Overview', view: Overview },
  { id: 'hosts', title: 'Hosts and NICs', view: Hosts },
  { id: 'tenants', title: 'Tenants and workloads', view: Tenants },
  { id: 'topology', title: 'Topology', view: Topology },
  { id: 'flows', title: 'Flows', view: Flows },
  { id: 'keys', title: 'Keys', view: Keys },
  { id: 'policy', title: 'Policy', view: Policy },
];

function current() {
  const id = location.hash.replace(/^#\/?/, '');
  return VIEWS.find((v) => v.id === id) ?? VIEWS[0];
}

function App() {
  const [view, setView] = useState(current());
  const [session, setSession] = useState('checking');
  useEffect(() => {
    const onHash = () => setView(current());
    addEventListener('hashchange', onHash);
    api('GET', '/console/session').then(
      () => setSession('ok'),
      () => setSession('none'),
    );
    return () => removeEventListener('hashchange', onHash);
  }, []);
  useEffect(() => {
    document.title = `${view.title} · tenguard console`;
  }, [view]);
  const logout = () => api('POST', '/console/logout').then(() => setSession('none'));
  if (session === 'checking') return html`<main><p>Loading…</p></main>`;
  if (session === 'none')
    return html`<main class="login">
      <h1>tenguard console</h1>
      <p>Not logged in. Run <code>tenguard console login</code> on a machine with the operator's credentials and open the link it prints (it works once, for 5 minutes).</p>
    </main>`;
  const View = view.view;
  return html`
    <header>
      <p class="brand">tenguard</p>
      <nav aria-label="Console sections">
        <ul>
          ${VIEWS.map(
            (v) =>
              html`<li key=${v.id}><a href=${`#/${v.id}`} aria-current=${v.id === view.id ? 'page' : undefined}>${v.title}</a></li>`,
          )}
        </ul>
      </nav>
      <button type="button" class="small logout" onClick=${logout}>Log out</button>
    </header>
    <main>
      <h1>${view.title}</h1>
      <${View} />
    </main>`;
}

render(html`<${App} />`, document.getElementById('app'));
