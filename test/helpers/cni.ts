// Calling the CNI plugin executable exactly as a runtime does: CNI_* variables in the
// environment, the network configuration on stdin, the result or error object on stdout.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export function cniPrefix(): string {
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return `tgcn${[...randomBytes(3)].map((b) => chars[b % chars.length]).join('')}`;
}

export interface CniCall {
  code: number | null;
  out: Record<string, unknown> | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the plugin with `env` (CNI_PATH added) and `stdin`; bounded to 120 s. */
export function callPlugin(
  plugin: string,
  env: Record<string, string>,
  stdin: string | Buffer,
): Promise<CniCall> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const p = spawn(plugin, [], {
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_PATH: '/opt/cni/bin', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const t = setTimeout(() => p.kill('SIGKILL'), 120_000);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(t);
      let out: Record<string, unknown> | null = null;
      try {
        out = stdout.trim() === '' ? null : (JSON.parse(stdout) as Record<string, unknown>);
      } catch {
        out = null;
      }
      resolve({ code, out, stdout, stderr, ms: performance.now() - t0 });
    });
    p.stdin.end(stdin);
  });
}
