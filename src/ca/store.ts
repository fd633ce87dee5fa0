// What the CA remembers, none of it secret: its generations (CA certificates and the token
// labels of their keys), the certificates it issued, and the revocations.
//
// FileCaStore layout under the state directory (0700):
//   ca.json                    metadata, replaced atomically (write, fsync, rename)
//   issued/<YYYY-MM-DD>.jsonl  one IssuedRecord per line, appended (O_APPEND) on issue
//   revoked/<YYYY-MM-DD>.jsonl one RevocationRecord per line, appended on revoke
// Records are appended to the segment of the UTC day they are written, so several processes
// (the CLI and a running CSR server) can append at once without a lock, and pruning only
// ever deletes whole past segments whose certificates have all expired. A torn last line
// (crash during a write) is skipped and counted.
import {
  appendFileSync,
  closeSync,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { TgError } from '../util/errors.js';

export const GENERATION_STATES = ['pending', 'next', 'active', 'previous', 'retired'] as const;
export type GenerationState = (typeof GENERATION_STATES)[number];

const GenerationSchema = z.strictObject({
  id: z.number().int().min(1),
  keyLabel: z.string().min(1),
  mode: z.enum(['root', 'intermediate']),
  state: z.enum(GENERATION_STATES),
  createdAt: z.string(),
  /** PEM of the CA certificate of the token key (absent while an intermediate is pending). */
  certificate: z.string().optional(),
  /** PEM certificates between the CA certificate and the anchor (intermediate mode). */
  chain: z.array(z.string()),
  /** PEM of the trust anchor: the CA certificate itself, or the external root. */
  anchor: z.string().optional(),
  /** PEM PKCS#10 request while an intermediate is pending. */
  request: z.string().optional(),
  /** subjectKeyIdentifier of the CA certificate, hex: links issued records to it. */
  keyId: z.string().optional(),
});

const MetadataSchema = z.strictObject({
  version: z.literal(1),
  trustDomain: z.string(),
  generations: z.array(GenerationSchema),
});

export type GenerationRecord = z.infer<typeof GenerationSchema>;
export type CaMetadata = z.infer<typeof MetadataSchema>;

const IssuedSchema = z.strictObject({
  serial: z.string(),
  spiffeId: z.string(),
  notBefore: z.string(),
  notAfter: z.string(),
  issuedAt: z.string(),
  /** keyId of the issuing generation. */
  issuerKeyId: z.string(),
  /** Who asked: 'admin', or the SPIFFE ID of the requesting NIC. */
  requester: z.string(),
  publicKeySha256: z.string(),
});
export type IssuedRecord = z.infer<typeof IssuedSchema>;

const RevocationSchema = z.strictObject({
  serial: z.string(),
  revokedAt: z.string(),
  reason: z.string(),
  /** notAfter of the revoked certificate: the revocation matters until then. */
  notAfter: z.string(),
});
export type RevocationRecord = z.infer<typeof RevocationSchema>;

/** Opaque position in the revocation log, for incremental reads. */
export type RevocationCursor = unknown;

export interface CaStore {
  loadMetadata(): CaMetadata | undefined;
  saveMetadata(m: CaMetadata): void;
  appendIssued(r: IssuedRecord): void;
  listIssued(): IssuedRecord[];
  appendRevocation(r: RevocationRecord): void;
  /** Revocations written since `cursor` (undefined: from the start) and the new cursor. */
  revocationsSince(cursor: RevocationCursor): { records: RevocationRecord[]; cursor: RevocationCursor };
  /** Removes records of certificates that expired before `now`. Returns how many went. */
  prune(now: Date): number;
  /** Lines that could not be parsed (torn writes, corruption) seen so far. */
  readonly badLines: number;
}

function dayOf(d: Date): string {
  return d.toISOString().slice(0, 10);
}

const SEGMENT_RE = /^\d{4}-\d{2}-\d{2}\.jsonl$/;

export class FileCaStore implements CaStore {
  private bad = 0;
  readonly metadataPath: string;
  readonly issuedDir: string;
  readonly revokedDir: string;

  constructor(
    readonly dir: string,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.metadataPath = join(dir, 'ca.json');
    this.issuedDir = join(dir, 'issued');
    this.revokedDir = join(dir, 'revoked');
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      mkdirSync(this.issuedDir, { recursive: true, mode: 0o700 });
      mkdirSync(this.revokedDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new TgError('TG_ERR_CONFIG', `cannot create the CA state directory ${dir}`, { cause: err });
    }
  }

  get badLines(): number {
    return this.bad;
  }

  loadMetadata(): CaMetadata | undefined {
    let text: string;
    try {
      text = readFileSync(this.metadataPath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new TgError('TG_ERR_CONFIG', `cannot read ${this.metadataPath}`, { cause: err });
    }
    try {
      return MetadataSchema.parse(JSON.parse(text));
    } catch (err) {
      throw new TgError('TG_ERR_CONFIG', `${this.metadataPath} is damaged`, { cause: err });
    }
  }

  saveMetadata(m: CaMetadata): void {
    const tmp = `${this.metadataPath}.${process.pid}.tmp`;
    const fd = openSync(tmp, 'w', 0o644);
    try {
      writeSync(fd, `${JSON.stringify(MetadataSchema.parse(m), null, 2)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.metadataPath);
  }

  appendIssued(r: IssuedRecord): void {
    appendFileSync(
      join(this.issuedDir, `${dayOf(this.now())}.jsonl`),
      `${JSON.stringify(IssuedSchema.parse(r))}\n`,
      {
        mode: 0o600,
      },
    );
  }

  listIssued(): IssuedRecord[] {
    const out: IssuedRecord[] = [];
    for (const f of this.segments(this.issuedDir)) {
      this.parseLines(readFileSync(join(this.issuedDir, f), 'utf8'), IssuedSchema, out);
    }
    return out;
  }

  appendRevocation(r: RevocationRecord): void {
    appendFileSync(
      join(this.revokedDir, `${dayOf(this.now())}.jsonl`),
      `${JSON.stringify(RevocationSchema.parse(r))}\n`,
      { mode: 0o600 },
    );
  }

  revocationsSince(cursor: RevocationCursor): { records: RevocationRecord[]; cursor: RevocationCursor } {
    const prev = cursor instanceof Map ? (cursor as Map<string, number>) : new Map<string, number>();
    const next = new Map<string, number>();
    const records: RevocationRecord[] = [];
    for (const f of this.segments(this.revokedDir)) {
      const path = join(this.revokedDir, f);
      let fd: number;
      try {
        fd = openSync(path, 'r');
      } catch {
        continue; // pruned between readdir and open
      }
      try {
        const size = fstatSync(fd).size;
        const from = prev.get(f) ?? 0;
        if (size <= from) {
          next.set(f, from);
          continue;
        }
        const buf = Buffer.alloc(size - from);
        let n = 0;
        while (n < buf.length) {
          const r = readSync(fd, buf, n, buf.length - n, from + n);
          if (r === 0) break;
          n += r;
        }
        // Only whole lines: a line still being written is read next time.
        const end = buf.lastIndexOf(0x0a, n - 1) + 1;
        this.parseLines(buf.toString('utf8', 0, end), RevocationSchema, records);
        next.set(f, from + end);
      } finally {
        closeSync(fd);
      }
    }
    return { records, cursor: next };
  }

  prune(now: Date): number {
    const today = dayOf(now);
    let removed = 0;
    for (const dir of [this.issuedDir, this.revokedDir]) {
      for (const f of this.segments(dir)) {
        if (f.slice(0, 10) >= today) continue;
        const path = join(dir, f);
        const recs: { notAfter: string }[] = [];
        this.parseLines(readFileSync(path, 'utf8'), z.object({ notAfter: z.string() }), recs);
        if (recs.every((r) => new Date(r.notAfter) < now)) {
          unlinkSync(path);
          removed += recs.length;
        }
      }
    }
    return removed;
  }

  private segments(dir: string): string[] {
    return readdirSync(dir)
      .filter((f) => SEGMENT_RE.test(f))
      .sort();
  }

  private parseLines<T>(text: string, schema: z.ZodType<T>, out: T[]): void {
    for (const line of text.split('\n')) {
      if (line.length === 0) continue;
      try {
        out.push(schema.parse(JSON.parse(line)));
      } catch {
        this.bad++;
      }
    }
  }
}

/** The same contract in memory, for tests and for a CA that must not touch disk. */
export class MemoryCaStore implements CaStore {
  private meta: CaMetadata | undefined;
  private readonly issued: IssuedRecord[] = [];
  private revoked: RevocationRecord[] = [];
  readonly badLines = 0;

  loadMetadata(): CaMetadata | undefined {
    return this.meta === undefined ? undefined : structuredClone(this.meta);
  }

  saveMetadata(m: CaMetadata): void {
    this.meta = structuredClone(MetadataSchema.parse(m));
  }

  appendIssued(r: IssuedRecord): void {
    this.issued.push({ ...IssuedSchema.parse(r) });
  }

  listIssued(): IssuedRecord[] {
    return this.issued.map((r) => ({ ...r }));
  }

  appendRevocation(r: RevocationRecord): void {
    this.revoked.push({ ...RevocationSchema.parse(r) });
  }

  revocationsSince(cursor: RevocationCursor): { records: RevocationRecord[]; cursor: RevocationCursor } {
    const from = typeof cursor === 'number' ? cursor : 0;
    return { records: this.revoked.slice(from), cursor: this.revoked.length };
  }

  prune(now: Date): number {
    const before = this.issued.length;
    const keep = this.issued.filter((r) => new Date(r.notAfter) >= now);
    this.issued.splice(0, this.issued.length, ...keep);
    return before - keep.length;
  }
}
