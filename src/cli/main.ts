// The tenguard command line: one module per command group, loaded on demand so that
// `tenguard lab ...` never pays for the data plane and the reverse.
import { TgError } from '../util/errors.js';

export type CommandRunner = (args: string[]) => Promise<number>;

interface CommandEntry {
  summary: string;
  load: () => Promise<{ run: CommandRunner }>;
}

const COMMANDS: Record<string, CommandEntry> = {
  lab: {
    summary: 'build, show, use and remove the network-namespace lab',
    load: () => import('./lab.js'),
  },
  device: {
    summary: 'run a WireGuard-compatible device on a TUN interface (like wireguard-go)',
    load: () => import('./device.js'),
  },
  bench: {
    summary: 'measure the data plane (io, tunnel) side by side with references',
    load: () => import('./bench.js'),
  },
  nic: {
    summary: 'run the NIC agent: key authority and both encrypted legs (in a NIC namespace)',
    load: () => import('./nic.js'),
  },
  vswitchd: {
    summary: 'run the vSwitch daemon: one tunnel device per workload (in a host namespace)',
    load: () => import('./vswitchd.js'),
  },
  demo: {
    summary: 'build the lab, run real traffic through it, report, tear down',
    load: () => import('./demo.js'),
  },
  ca: {
    summary: 'certificate authority with its signing key in a PKCS#11 token (SPIFFE X.509-SVIDs)',
    load: () => import('./ca.js'),
  },
  orchestrator: {
    summary: 'run the orchestrator: tenants, hosts, workloads, policy; REST API on a Unix socket',
    load: () => import('./orchestrator.js'),
  },
  tenant: {
    summary: 'create, list, show and delete tenants (orchestrator client)',
    load: () => import('./control.js').then((m) => ({ run: (a: string[]) => m.runGroup('tenant', a) })),
  },
  host: {
    summary: 'register, list, show and deregister hosts (orchestrator client)',
    load: () => import('./control.js').then((m) => ({ run: (a: string[]) => m.runGroup('host', a) })),
  },
  workload: {
    summary: 'create, list, show, delete and migrate workloads (orchestrator client)',
    load: () => import('./control.js').then((m) => ({ run: (a: string[]) => m.runGroup('workload', a) })),
  },
  service: {
    summary:
      'create, list, show and delete services: a virtual address and name per service (orchestrator client)',
    load: () => import('./control.js').then((m) => ({ run: (a: string[]) => m.runGroup('service', a) })),
  },
  policy: {
    summary: "set and show a tenant's policy document (orchestrator client)",
    load: () => import('./control.js').then((m) => ({ run: (a: string[]) => m.runGroup('policy', a) })),
  },
  flows: {
    summary: 'flow records merged from the NICs (orchestrator client)',
    load: () => import('./control.js').then((m) => ({ run: (a: string[]) => m.runGroup('flows', a) })),
  },
  cni: {
    summary: 'the CNI plugin (ADD, DEL, CHECK, VERSION, STATUS, GC) and `cni install`',
    load: () => import('./cni.js'),
  },
  status: {
    summary: 'the installation at a glance: hosts, NICs, tenants, workloads, certificates, drops',
    load: () => import('./control.js').then((m) => ({ run: (a: string[]) => m.runGroup('status', a) })),
  },
  console: {
    summary: "a one-time login link to the orchestrator's web console",
    load: () => import('./control.js').then((m) => ({ run: (a: string[]) => m.runGroup('console', a) })),
  },
  keys: {
    summary: "a host NIC's key inventory, metadata only (orchestrator client)",
    load: () => import('./control.js').then((m) => ({ run: (a: string[]) => m.runGroup('keys', a) })),
  },
};

function usage(): string {
  const lines = ['usage: tenguard <command> [options]', '', 'commands:'];
  for (const [name, entry] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(10)} ${entry.summary}`);
  lines.push('', "Run 'tenguard <command> --help' for a command's options.");
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(`${usage()}\n`);
    return name === undefined ? 2 : 0;
  }
  const entry = COMMANDS[name];
  if (entry === undefined) {
    process.stderr.write(`tenguard: unknown command '${name}'\n\n${usage()}\n`);
    return 2;
  }
  try {
    const mod = await entry.load();
    return await mod.run(rest);
  } catch (err) {
    if (err instanceof TgError) {
      process.stderr.write(`tenguard ${name}: ${err.code}: ${err.message}\n`);
      return err.exitCode;
    }
    throw err;
  }
}
