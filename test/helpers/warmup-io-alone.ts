// Run as a child process (see device-warmup-io.test.ts): the warm-up's device phase alone,
// twice, printing the second run's result and the process's open fds before and after it as
// one JSON line (the first run may open what a process keeps: wake placement's /proc/loadavg).
import { readdirSync } from 'node:fs';
import { warmDeviceIo } from '../../src/device/warmup-io.js';
import { logger } from '../../src/util/log.js';

const fds = (): number => readdirSync('/proc/self/fd').length;
const log = logger('warmup-io-alone');
const n = Number(process.argv[2] ?? 50);
await warmDeviceIo(log, n);
const before = fds();
const r = await warmDeviceIo(log, n);
process.stdout.write(`${JSON.stringify({ ...r, fdsBefore: before, fdsAfter: fds() })}\n`);
