// The policy document parser and everything behind it: JSON, schema, normalisation, references
// against a directory of workloads, rule order checks, the built-in tests, compilation; an
// accepted document is then put to the policy engine with a fixed set of packets (so compiled
// tables built from fuzzed documents are used, not only built).
// Findings: an exception other than a policy refusal; a refusal without issues; a document
// accepted whose tenant is not the one it names.

import { PolicyRejectedError } from '../../../src/policy/store.js';
import { type Pkt, send, type World, world } from '../../helpers/policy-harness.js';
import { mutateJson, type Rng } from '../mutate.js';
import { FuzzFinding, type FuzzTarget } from '../target.js';

const PROBES: Pkt[] = [
  { from: 'web-1', to: 'db-1', proto: 'tcp', dport: 5432, flags: 0x02 },
  { from: 'db-1', to: 'web-1', proto: 'tcp', dport: 5432, flags: 0x02 },
  { from: 'api-1', to: 'web-2', proto: 'udp', dport: 53 },
  { from: 'web-1', to: 'api-1', proto: 'icmp', icmpType: 8, icmpId: 7 },
  { from: 'web-1', to: 'db-1', proto: 'tcp', dport: 443, flags: 0x02, v6: true },
  { from: 'web-1', to: 'outside', proto: 'tcp', dport: 80, flags: 0x02, dst: '8.8.8.8' },
  { from: 'outside', to: 'db-1', proto: 'udp', dport: 5432, src: '100.64.9.9' },
  { from: 'svc-1', to: 'cli-1', proto: 'tcp', dport: 8080, flags: 0x02 },
];

export class PolicyTarget implements FuzzTarget {
  readonly name = 'policy';
  readonly description = 'policy documents: parse, validate, self-tests, compile, then checked packets';
  readonly maxLength = 16_384;
  readonly dictionary = [
    '"version":1',
    '"tenant":"acme"',
    '"rules":[',
    '"tests":[',
    '"direction":"egress"',
    '"direction":"ingress"',
    '"workloads":',
    '"peers":[',
    '"labels":{',
    '"workload":"web-1"',
    '"cidr":"0.0.0.0/0"',
    '"cidr":"::/0"',
    '"protocol":"any"',
    '"ports":[',
    '"1-65535"',
    '"expect":"allow"',
    '"action":"deny"',
    '"id":"r"',
    '"tenant":"blue"',
  ];
  readonly resetEvery = 2000;
  private w!: World;

  setup(): void {
    this.w = world();
  }

  reset(): void {
    this.w = world();
  }

  mutate(input: Buffer, rng: Rng): Buffer | null {
    return mutateJson(input, rng);
  }

  run(input: Buffer): string {
    let tenant: string;
    try {
      tenant = this.w.store.replace(input.toString('utf8')).tenant;
    } catch (err) {
      if (!(err instanceof PolicyRejectedError)) throw err;
      if (err.issues.length === 0) throw new FuzzFinding('a refusal without issues');
      return `refused:${[...new Set(err.issues.map((i) => i.code))].sort().join('+')}`;
    }
    const doc = this.w.store.document(tenant);
    if (doc === undefined || doc.tenant !== tenant) throw new FuzzFinding('accepted under another tenant');
    let verdicts = '';
    for (const p of PROBES) {
      this.w.clock.ms += 10;
      verdicts += send(this.w, p).allowed ? 'A' : 'd';
    }
    return `accepted:${tenant === 'acme' || tenant === 'blue' ? tenant : 'other'}:${verdicts}`;
  }

  teardown(): void {}
}
