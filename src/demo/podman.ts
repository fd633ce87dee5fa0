// podman with all of its state in one temporary directory (storage, runroot, tmpdir, config)
// and its CNI backend pointed at a plugin and conflist directory there, run with the options
// this kind of machine needs (runc: crun refuses the hybrid cgroups; cgroupfs; ulimits within
// the machine's). Images come from `podman import` of a busybox-static rootfs: no registry.
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../util/exec.js';

export const BUSYBOX = '/bin/busybox';
const APPLETS = ['sh', 'sleep', 'ping', 'nc', 'ip', 'cat', 'echo'];

export class Podman {
  readonly binDir: string;
  readonly confDir: string;
  private readonly env: NodeJS.ProcessEnv;

  constructor(readonly dir: string) {
    this.binDir = join(dir, 'cni-bin');
    this.confDir = join(dir, 'net.d');
    for (const d of ['storage', 'run', 'tmp', this.binDir, this.confDir])
      mkdirSync(join(dir, d), { recursive: true });
    const conf = join(dir, 'containers.conf');
    writeFileSync(
      conf,
      [
        '[network]',
        'network_backend = "cni"',
        `cni_plugin_dirs = ["${this.binDir}"]`,
        `network_config_dir = "${this.confDir}"`,
        '[engine]',
        'events_logger = "none"',
        `tmp_dir = "${join(dir, 'tmp')}"`,
        '',
      ].join('\n'),
    );
    const storage = join(dir, 'storage.conf');
    writeFileSync(
      storage,
      `[storage]\ndriver = "vfs"\ngraphroot = "${join(dir, 'storage')}"\nrunroot = "${join(dir, 'run')}"\n`,
    );
    this.env = {
      ...process.env,
      CONTAINERS_CONF: conf,
      CONTAINERS_STORAGE_CONF: storage,
      TMPDIR: join(dir, 'tmp'),
    };
  }

  async cmd(
    args: string[],
    timeoutMs = 120_000,
  ): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
    const t0 = performance.now();
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        'podman',
        [
          '--root',
          join(this.dir, 'storage'),
          '--runroot',
          join(this.dir, 'run'),
          '--tmpdir',
          join(this.dir, 'tmp'),
          '--storage-driver',
          'vfs',
          '--cgroup-manager',
          'cgroupfs',
          '--runtime',
          'runc',
          '--events-backend',
          'none',
          ...args,
        ],
        { timeout: timeoutMs, env: this.env, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 },
        (err, stdout, stderr) => {
          const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
          resolve({ code, stdout, stderr });
        },
      );
    });
    return { ...r, ms: performance.now() - t0 };
  }

  /** Imports a busybox-static rootfs as `name`. */
  async importBusybox(name: string): Promise<void> {
    const root = join(this.dir, 'rootfs');
    mkdirSync(join(root, 'bin'), { recursive: true });
    for (const d of ['tmp', 'proc', 'sys', 'dev', 'etc']) mkdirSync(join(root, d), { recursive: true });
    await run('cp', [BUSYBOX, join(root, 'bin/busybox')]);
    chmodSync(join(root, 'bin/busybox'), 0o755);
    for (const a of APPLETS) symlinkSync('busybox', join(root, 'bin', a));
    const tar = join(this.dir, 'rootfs.tar');
    const t = await run('tar', ['-C', root, '-cf', tar, '.']);
    if (t.code !== 0) throw new Error(`tar: ${t.stderr}`);
    const r = await this.cmd(['import', tar, name]);
    if (r.code !== 0) throw new Error(`podman import: ${r.stderr}`);
  }

  /** `podman run -d` with the machine's options. */
  runArgs(name: string, network: string, image: string, cmd: string[]): string[] {
    return [
      'run',
      '-d',
      '--name',
      name,
      '--network',
      network,
      '--ulimit',
      'nofile=20000:20000',
      '--ulimit',
      'nproc=1000:1000',
      '--cap-add',
      'NET_RAW',
      image,
      ...cmd,
    ];
  }
}

/** libcni's cache directory (podman's CNI backend has no option to move it). */
export const CNI_CACHE = '/var/lib/cni';

/**
 * Removes the cached results of the networks named `<prefix>-...` (DEL removes them; a failure
 * may not) and the cache directory itself when it did not exist before (`existed`) and is empty.
 */
export function cleanCniCache(prefix: string, existed: boolean): void {
  const results = join(CNI_CACHE, 'results');
  if (existsSync(results))
    for (const f of readdirSync(results))
      if (f.startsWith(`${prefix}-`)) rmSync(join(results, f), { force: true });
  if (!existed && existsSync(results) && readdirSync(results).length === 0)
    rmSync(CNI_CACHE, { recursive: true, force: true });
}
