// Human-readable views of a lab for the CLI and the demo.
import type { DestroyReport } from './build.js';
import { hostNics } from './plan.js';
import type { LabState } from './state.js';
import type { InterfaceStatus, LabStatus, NamespaceStatus } from './status.js';

function sizeLine(s: LabState): string {
  const { hosts, tenants, workloads } = s.size;
  return `${hosts} host${hosts === 1 ? '' : 's'}, ${tenants} tenant${tenants === 1 ? '' : 's'}, ${workloads} workload${workloads === 1 ? '' : 's'} per tenant per host`;
}

function nsMark(n: NamespaceStatus | undefined): string {
  if (n === undefined || !n.exists) return 'MISSING';
  return n.loUp ? 'ok' : 'lo down';
}

function ifMark(i: InterfaceStatus | undefined): string {
  if (i === undefined || !i.exists) return 'MISSING';
  if (!i.up) return 'DOWN';
  if (!i.carrier) return 'NO-CARRIER';
  return i.ok ? 'up' : 'bad addresses';
}

/** The lab as a short table: fabric, hosts and NICs with addresses, tenants, workloads, leftovers. */
export function renderLabStatus(st: LabStatus): string {
  const out: string[] = [];
  const ns = new Map(st.namespaces.map((n) => [n.name, n]));
  const ifs = new Map(st.interfaces.map((i) => [`${i.ns}/${i.name}`, i]));
  const ifLine = (indent: string, nsName: string, name: string, addrs: string[], note: string): string =>
    `${indent}${name.padEnd(16)}${ifMark(ifs.get(`${nsName}/${name}`)).padEnd(9)}${addrs.join('  ').padEnd(40)}${note}`;
  const s = st.state;
  if (s === null) {
    out.push(`lab ${st.prefix}: ${st.condition} (no state file; leftovers of a crashed or foreign run)`);
    for (const n of st.namespaces)
      out.push(`  namespace ${n.name}  interfaces: ${n.interfaces.map((i) => i.name).join(', ')}`);
    for (const l of st.extra.links) out.push(`  root-namespace link ${l}`);
    out.push(`remove with: tenguard lab down --prefix ${st.prefix}`);
    return out.join('\n');
  }
  let head = `lab ${st.prefix}: ${st.condition} - ${sizeLine(s)}`;
  if (s.buildMs !== undefined) head += `; built in ${s.buildMs} ms`;
  if (st.condition === 'crashed' || st.condition === 'building') {
    head += ` (steps done ${s.steps.done.length}/${s.steps.total}, builder pid ${s.builder.pid}${st.builderAlive ? ' running' : ' gone'})`;
  }
  out.push(head);
  const f = s.fabric;
  out.push(`fabric     ${f.ns.padEnd(22)}${nsMark(ns.get(f.ns))}`);
  out.push(ifLine('             ', f.ns, f.bridge, [`${f.bridgeV4}/24`, `${f.bridgeV6}/64`], 'bridge'));
  for (const h of s.hosts) {
    out.push(`host ${h.name.padEnd(6)}${h.hostNs.padEnd(22)}${nsMark(ns.get(h.hostNs))}`);
    const nics = hostNics(h);
    for (const n of nics)
      out.push(
        ifLine(
          '             ',
          h.hostNs,
          n.pcie.hostIf,
          [`${n.pcie.hostV4}/30`, `${n.pcie.hostV6}/64`],
          nics.length > 1 ? `PCIe link to ${n.name}, host end` : 'PCIe link, host end',
        ),
      );
    for (const n of nics) {
      out.push(
        `  ${(nics.length > 1 ? n.name.toUpperCase() : 'NIC').padEnd(9)}${n.ns.padEnd(22)}${nsMark(ns.get(n.ns))}`,
      );
      out.push(
        ifLine(
          '             ',
          n.ns,
          n.pcie.nicIf,
          [`${n.pcie.nicV4}/30`, `${n.pcie.nicV6}/64`],
          'PCIe link, NIC end',
        ),
      );
      out.push(
        ifLine(
          '             ',
          n.ns,
          n.fabric.nicIf,
          [`${n.fabric.nicV4}/24`, `${n.fabric.nicV6}/64`],
          `fabric port (bridge port ${n.fabric.bridgeIf}: ${ifMark(ifs.get(`${f.ns}/${n.fabric.bridgeIf}`))})`,
        ),
      );
    }
  }
  out.push(`tenants    ${s.tenants.map((t) => `${t.name} ${t.overlayV4} ${t.overlayV6}`).join('; ')}`);
  out.push('workloads  (overlay addresses planned only: no overlay is wired until the tunnel exists)');
  for (const w of s.workloads) {
    out.push(
      `  ${w.name.padEnd(11)}${w.ns.padEnd(22)}${nsMark(ns.get(w.ns)).padEnd(9)}tenant ${w.tenant.padEnd(4)}${w.overlayV4.padEnd(14)}${w.overlayV6}`,
    );
  }
  const extras = [
    ...st.extra.namespaces.map((n) => `namespace ${n}`),
    ...st.extra.links.map((l) => `link ${l}`),
  ];
  out.push(`leftovers  ${extras.length === 0 ? 'none' : extras.join(', ')}`);
  if (st.condition === 'crashed' || st.condition === 'degraded') {
    out.push(`remove with: tenguard lab down --prefix ${st.prefix}`);
  }
  return out.join('\n');
}

/** One line per build: what was built and how long it took. */
export function renderBuilt(s: LabState): string {
  const namespaces = 1 + s.hosts.reduce((sum, h) => sum + 1 + hostNics(h).length, 0) + s.workloads.length;
  return `lab ${s.prefix} is up: ${sizeLine(s)} (${namespaces} namespaces) in ${s.buildMs ?? '?'} ms`;
}

export function renderDestroyed(r: DestroyReport): string {
  if (r.namespaces.length === 0 && r.links.length === 0 && !r.stateFile) {
    return `lab ${r.prefix}: nothing to remove`;
  }
  const parts = [
    `${r.namespaces.length} namespace${r.namespaces.length === 1 ? '' : 's'}`,
    `${r.links.length} root-namespace link${r.links.length === 1 ? '' : 's'}`,
    `${r.killed.length} process${r.killed.length === 1 ? '' : 'es'}${r.killed.length > 0 ? ` (${r.killed.join(', ')})` : ''}`,
  ];
  if (r.stateFile) parts.push('the state file');
  return `lab ${r.prefix} removed: ${parts.join(', ')} in ${r.ms} ms`;
}
