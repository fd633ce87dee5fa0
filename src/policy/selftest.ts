// The `tests` section of a policy document, run against the candidate policy before it is
// accepted (as Tailscale's policy file tests are): each case names two ends, a protocol and a
// port, and the expected verdict. A case decides only the sides that belong to the document's
// tenant (a workload of another tenant has its own policy), so a document can always be
// tested on its own. Ends may be registered workloads ({ "workload": "web-1" }), hypothetical
// ones ({ "labels": { "app": "web" } }, useful before the workloads exist) or outside
// addresses ({ "address": "203.0.113.9" }).
import { parseAddressWords } from './address.js';
import { bucketOf, type CompiledPolicy, type RuleNames } from './compile.js';
import { Decision, decide, type PolicySource, SCOPE_EGRESS, SCOPE_INGRESS } from './decide.js';
import type { WorkloadDirectory, WorkloadInfo } from './directory.js';
import type { PolicyDocument, PolicyIssue, TestEndpoint } from './model.js';

const IP_PROTO = { tcp: 6, udp: 17, icmp: 1 } as const;

interface End {
  workload: WorkloadInfo | null;
  family: 4 | 6;
  words: Uint32Array;
  text: string;
}

function resolveEnd(
  e: TestEndpoint,
  tenant: string,
  directory: WorkloadDirectory | null,
  path: string,
  hypothetical: { next: number },
): End | PolicyIssue {
  const zero = new Uint32Array(4);
  if (e.address !== undefined) {
    const a = parseAddressWords(e.address);
    if (a === null)
      return {
        code: 'test-invalid',
        path: `${path}.address`,
        message: `'${e.address}' is not an IP address`,
      };
    return { workload: null, family: a.family, words: a.words, text: e.address };
  }
  const t = e.tenant ?? tenant;
  if (e.workload !== undefined) {
    const w = directory?.get(t, e.workload);
    if (w === undefined)
      return {
        code: 'test-invalid',
        path: `${path}.workload`,
        message: `tenant '${t}' has no workload '${e.workload}' (use "labels" for a workload not registered yet)`,
      };
    return { workload: w, family: 4, words: zero, text: `${t}/${w.name}` };
  }
  const labels = e.labels ?? {};
  const w: WorkloadInfo = { id: -hypothetical.next++, tenant: t, name: '(test)', labels };
  const text = `${t}/{${Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',')}}`;
  return { workload: w, family: 4, words: zero, text };
}

/** Runs every test case; one 'test-failed' or 'test-invalid' issue per case that does not hold. */
export function runPolicyTests(
  doc: PolicyDocument,
  candidate: CompiledPolicy,
  directory: WorkloadDirectory | null,
  names: RuleNames,
): PolicyIssue[] {
  const issues: PolicyIssue[] = [];
  const source: PolicySource = {
    policyOf: (t) => (t === doc.tenant ? candidate : undefined),
    defaultDenyOf: (t) => names.intern(t, 'default-deny'),
  };
  const out = new Decision();
  const hypothetical = { next: 1 };
  for (const [i, tc] of doc.tests.entries()) {
    const path = `tests[${i}]`;
    const name = tc.id !== undefined ? `test '${tc.id}'` : path;
    const src = resolveEnd(tc.src, doc.tenant, directory, `${path}.src`, hypothetical);
    const dst = resolveEnd(tc.dst, doc.tenant, directory, `${path}.dst`, hypothetical);
    if ('code' in src || 'code' in dst) {
      if ('code' in src) issues.push(src);
      if ('code' in dst) issues.push(dst);
      continue;
    }
    let scope = 0;
    if (src.workload?.tenant === doc.tenant) scope |= SCOPE_EGRESS;
    if (dst.workload?.tenant === doc.tenant) scope |= SCOPE_INGRESS;
    if (scope === 0) {
      issues.push({ code: 'test-invalid', path, message: `${name} has no end in tenant '${doc.tenant}'` });
      continue;
    }
    if (tc.protocol !== 'icmp' && (tc.port === undefined || tc.port < 0 || tc.port > 65535)) {
      issues.push({
        code: 'test-invalid',
        path: `${path}.port`,
        message: `${name}: protocol ${tc.protocol} needs a port 0..65535`,
      });
      continue;
    }
    const s = src.words;
    const d = dst.words;
    const family = src.workload === null ? src.family : dst.family;
    decide(
      source,
      src.workload,
      dst.workload,
      family,
      s[0],
      s[1],
      s[2],
      s[3],
      d[0],
      d[1],
      d[2],
      d[3],
      bucketOf(IP_PROTO[tc.protocol]),
      tc.port ?? 0,
      scope,
      out,
      false,
    );
    const got = out.allowed ? 'allow' : 'deny';
    if (got !== tc.expect) {
      const what = `${src.text} -> ${dst.text} ${tc.protocol}${tc.protocol === 'icmp' ? '' : `/${tc.port}`}`;
      issues.push({
        code: 'test-failed',
        path,
        message: `${name} (${what}): expected ${tc.expect}, got ${got} by rule '${names.name(out.rule)}'`,
      });
    }
  }
  return issues;
}
