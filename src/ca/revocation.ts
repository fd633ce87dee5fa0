// Revocation as servers check it: isRevoked(serial) on every handshake or request. The list
// follows the CA store, re-reading only what was appended since the last look, so a
// revocation written by any process on this host (tenguard ca revoke, the CSR server) is
// effective from the next check. A CA in this process also adds its own revocations
// directly.

import { normalizeSerial } from '../identity/certs.js';
import type { IsRevoked } from '../identity/mtls.js';
import type { CaStore, RevocationCursor, RevocationRecord } from './store.js';

export interface RevocationListOptions {
  /** Re-read the store at most this often; 0 (the default) reads on every check. */
  readonly refreshIntervalMs?: number;
  readonly now?: () => number;
}

export class RevocationList {
  private readonly revoked = new Map<string, RevocationRecord>();
  private cursor: RevocationCursor = undefined;
  private lastRefresh = Number.NEGATIVE_INFINITY;
  private readonly intervalMs: number;
  private readonly now: () => number;

  constructor(
    private readonly store?: CaStore,
    opts: RevocationListOptions = {},
  ) {
    this.intervalMs = opts.refreshIntervalMs ?? 0;
    this.now = opts.now ?? Date.now;
    this.refresh();
  }

  /** Reads revocations appended since the last refresh; drops those of expired certificates. */
  refresh(): void {
    const now = this.now();
    this.lastRefresh = now;
    if (this.store === undefined) return;
    const { records, cursor } = this.store.revocationsSince(this.cursor);
    this.cursor = cursor;
    for (const r of records) this.add(r);
    for (const [serial, r] of this.revoked) if (Date.parse(r.notAfter) < now) this.revoked.delete(serial);
  }

  add(record: RevocationRecord): void {
    this.revoked.set(normalizeSerial(record.serial), record);
  }

  /** Bound, so it can be handed around as a plain function. Unreadable serials count as revoked. */
  readonly isRevoked: IsRevoked = (serial: string): boolean => {
    if (this.store !== undefined && this.now() - this.lastRefresh >= this.intervalMs) this.refresh();
    let key: string;
    try {
      key = normalizeSerial(serial);
    } catch {
      return true;
    }
    return this.revoked.has(key);
  };

  list(): RevocationRecord[] {
    return [...this.revoked.values()];
  }
}
