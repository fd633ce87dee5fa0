// A tenguard device process: one identity, as a wireguard-go interface has. It creates the
// TUN, runs the device pump (pump.ts: TUN and UDP loops, send, rebind, the error policy)
// with its own I/O batches, steps the engine's timers (every 100 ms while they have work,
// else when the earliest peer timer is due, once a second at most) and serves the WireGuard
// UAPI.
import { performance } from 'node:perf_hooks';
import { NativeAead } from '../native/aead.js';
import { setDumpable } from '../native/dumpable.js';
import { loadNative } from '../native/index.js';
import { secretPool } from '../native/secret-pool.js';
import { NativeTunDevice, tunCoalescingDefault } from '../native/tun.js';
import type { PacketSocket, TunDevice } from '../native/types.js';
import { NativeUdpSocket } from '../native/udp.js';
import type { TransportAead } from '../protocol/aead.js';
import { Engine } from '../protocol/engine.js';
import { TIMER_WHEEL_GRANULARITY } from '../protocol/tuning.js';
import { UapiServer } from '../uapi/server.js';
import { runOk } from '../util/exec.js';
import { type Logger, logger } from '../util/log.js';
import { BusyPollPolicy, busyPollDefault, DEFAULT_BUSY_POLL_US, wakePlacementDefault } from './busy-poll.js';
import { EngineUapiBackend } from './engine-backend.js';
import { type BusyPoll, checkTunMtu, DEFAULT_TUN_MTU, DeviceIo, DevicePump } from './pump.js';
import { warmupCounters } from './warmup-state.js';

export { DEFAULT_TUN_MTU, DEVICE_BATCH, DEVICE_SLOT, MAX_PACKET } from './pump.js';

/** Timer granularity (the engine's wheel is 100 ms). */
const TICK_MS = TIMER_WHEEL_GRANULARITY;
/**
 * The longest a device sleeps between timer steps. It ticks every TICK_MS only while the
 * engine has work for the ticks (handshakes queued, sources in its rate limiters) and
 * otherwise sleeps until its earliest peer timer, re-armed after any packet that sets an
 * earlier one: a quiet device wakes once a second instead of ten times (each wake-up of an
 * idle process cost 130-170 µs of CPU here: 17.8 ms of CPU per 10 s for an idle device).
 * The cap bounds how late a timer set through the UAPI alone (no packet) can come up.
 */
const IDLE_TICK_MS = 1000;

export interface DeviceOptions {
  ifname: string;
  mtu?: number;
  /** Tests: replace the TUN and the socket factory with fakes. */
  tun?: TunDevice;
  openSocket?: (port: number) => PacketSocket;
  aead?: TransportAead;
  log?: Logger;
  /** Where the UAPI socket goes (default /var/run/wireguard). */
  uapiSocketDir?: string;
  /**
   * false: no UAPI socket; the owner configures the device through `backend` (the warm-up's
   * devices, warmup.ts). Default true.
   */
  uapi?: boolean;
  /**
   * The largest busy-poll window in us (busy-poll.ts; 0: none). Default: TENGUARD_BUSY_POLL_US,
   * else 1,000. Needs the native TUN and socket.
   */
  busyPollUs?: number;
  /**
   * Wake placement for the first datagrams after a quiet stretch (native/wake.c). Default:
   * TENGUARD_WAKE_PLACEMENT (on unless "off"). Needs the native socket.
   */
  wakePlacement?: boolean;
  /** Tests: the quiet time before wake placement (ms), and a switch in place of the native one. */
  quietWakeMs?: number;
  wakeHere?: (on: boolean) => boolean;
}

export class Device {
  readonly ifname: string;
  readonly engine: Engine;
  readonly backend: EngineUapiBackend;
  readonly pump: DevicePump;
  private readonly log: Logger;
  private readonly tun: TunDevice;
  private ticker: NodeJS.Timeout | null = null;
  /** When the armed timer step fires (engine clock). */
  private tickAt = Number.POSITIVE_INFINITY;
  private uapi: UapiServer | null = null;
  private closed = false;
  private readonly done: Promise<string>;
  private resolveDone!: (why: string) => void;

  private constructor(opts: DeviceOptions, tun: TunDevice) {
    this.ifname = opts.ifname;
    this.log = opts.log ?? logger('device').child({ ifname: opts.ifname });
    this.tun = tun;
    this.engine = new Engine({
      aead: opts.aead ?? new NativeAead(),
      mtu: opts.mtu ?? DEFAULT_TUN_MTU,
      log: this.log,
      secrets: secretPool(),
    });
    this.pump = new DevicePump({
      engine: this.engine,
      tun,
      openSocket: opts.openSocket ?? ((port) => NativeUdpSocket.open({ port })),
      io: new DeviceIo(),
      log: this.log,
      now,
      onFatal: (reason) => void this.close(reason),
      afterIo: () => this.rearm(),
      busyPoll: busyPoll(opts.busyPollUs ?? DEFAULT_BUSY_POLL_US),
      wakeHere:
        opts.wakePlacement !== true
          ? undefined
          : (opts.wakeHere ?? (opts.openSocket === undefined ? wakeHere(this.log) : undefined)),
      quietWakeMs: opts.quietWakeMs,
    });
    this.backend = new EngineUapiBackend(
      this.engine,
      {
        rebind: (port) => this.pump.rebind(port),
        listenPort: () => this.pump.localPort,
        ioCounters: () => ({ ...this.pump.ioCounters(), ...warmupCounters() }),
        keepaliveNow: (peerId) => this.pump.keepaliveNow(peerId),
      },
      now,
    );
    this.pump.identity = this.backend;
    this.done = new Promise((r) => {
      this.resolveDone = r;
    });
  }

  /** Creates the TUN (unless given), binds the socket, starts the UAPI and the loops. */
  static async start(opts: DeviceOptions): Promise<Device> {
    checkTunMtu(opts.mtu ?? DEFAULT_TUN_MTU);
    opts = {
      ...opts,
      busyPollUs: opts.busyPollUs ?? busyPollDefault(),
      wakePlacement: opts.wakePlacement ?? wakePlacementDefault(),
    };
    // Keys live in this process: keep them out of core dumps and ptrace.
    if (opts.tun === undefined) setDumpable(false);
    const tun = opts.tun ?? NativeTunDevice.open(opts.ifname, { vnetHdr: tunCoalescingDefault() });
    let dev: Device | undefined;
    try {
      if (opts.tun === undefined)
        await runOk('ip', ['link', 'set', 'dev', tun.name, 'mtu', String(opts.mtu ?? DEFAULT_TUN_MTU)]);
      // The kernel's name (a pattern may have been given); a packet channel has none.
      dev = new Device({ ...opts, ifname: tun.name || opts.ifname }, tun);
      if (opts.uapi !== false)
        dev.uapi = await UapiServer.start({
          ifname: dev.ifname,
          backend: dev.backend,
          socketDir: opts.uapiSocketDir,
          onSocketRemoved: () => void dev?.close('UAPI socket removed'),
        });
      dev.run();
      return dev;
    } catch (err) {
      if (dev) await dev.close('start failed');
      else tun.close();
      throw err;
    }
  }

  /** Resolves with the reason once the device has shut down. */
  get stopped(): Promise<string> {
    return this.done;
  }

  private run(): void {
    this.pump.start();
    this.arm(now());
  }

  /** The wheel tick after the engine's earliest timer (see stepAt). */
  private nextTimerStep(): number {
    return Math.ceil(this.engine.nextTimerAt / TICK_MS) * TICK_MS + 1;
  }

  /**
   * When the next timer step is needed: on the wheel tick after the engine's earliest timer,
   * at least TICK_MS and at most IDLE_TICK_MS from `t`.
   */
  private stepAt(t: number): number {
    return Math.min(t + IDLE_TICK_MS, Math.max(t + TICK_MS, this.nextTimerStep()));
  }

  private arm(t: number): void {
    if (this.closed) return;
    if (this.ticker) clearTimeout(this.ticker);
    this.tickAt = this.stepAt(t);
    this.ticker = setTimeout(this.step, this.tickAt - t);
  }

  private readonly step = (): void => {
    this.ticker = null;
    this.pump.tick();
    this.arm(now());
  };

  /**
   * After packets: a timer they set earlier than the armed step moves the step forward. The
   * usual case (no timer before the armed step) is decided without reading the clock: the
   * armed step is at most IDLE_TICK_MS from when it was armed, so no later `t` can bring it
   * forward then.
   */
  private rearm(): void {
    if (this.nextTimerStep() >= this.tickAt) return;
    const t = now();
    if (this.stepAt(t) < this.tickAt) this.arm(t);
  }

  /** Stops everything, wipes the keys (by removing the identity) and removes the UAPI socket. */
  async close(why: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.log.info({ why }, 'device shutting down');
    if (this.ticker) clearTimeout(this.ticker);
    this.pump.close();
    try {
      this.engine.removeIdentity(this.backend.identityId);
    } catch {
      // already gone
    }
    await this.uapi?.close();
    this.resolveDone(why);
  }
}

function now(): number {
  return performance.now();
}

/**
 * The process's one wake placement switch: every device calls the same function, so that the
 * pump's call of it, optimised during the warm-up (warmup-io.ts), stays valid for a live device
 * (a closure per device was another call target: "wrong call target", --trace-deopt).
 */
let wakeSwitch: ((on: boolean) => boolean) | null = null;

/** Wake placement's switch (native/wake.c), or undefined when this process may not use it. */
function wakeHere(log: Logger): ((on: boolean) => boolean) | undefined {
  const native = loadNative();
  // Arms only when this thread is the one runnable task in the system (native/wake.c).
  if (native.wakePlacementAllowed()) {
    wakeSwitch ??= (on) => native.setWakeHere(on, 1);
    return wakeSwitch;
  }
  log.info(
    'wake placement off: a thread here cannot return from SCHED_IDLE (needs CAP_SYS_NICE or RLIMIT_NICE 20)',
  );
  return undefined;
}

/**
 * Busy polling's clock (µs): one function for every device, so that the pump's calls of it,
 * optimised during the warm-up, stay valid for a live device (a closure per device was another
 * call target: "wrong call target", --trace-deopt).
 */
function busyClock(): number {
  return performance.now() * 1000;
}

function busyPoll(maxUs: number): BusyPoll | undefined {
  const policy = new BusyPollPolicy(maxUs);
  if (maxUs === 0) return undefined;
  const native = loadNative();
  return { policy, wait: native.busyWait, clock: busyClock };
}
