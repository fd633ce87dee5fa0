// The console's logins: one-time links and the sessions they open. A link is made only
// through the orchestrator's API (over mTLS as the operator: `tenguard console login`), so a
// console session is exactly as authenticated as the API. A link works once, within
// LINK_TTL_MS; the session it opens is a random id in an HttpOnly, SameSite=Strict cookie
// that ends after SESSION_IDLE_MS without a request, SESSION_MAX_MS after login at the
// latest, or on logout. Links and sessions live in memory only (a restarted orchestrator
// forgets them: log in again); both are kept by the SHA-256 of their value, so a lookup
// compares digests of the guess, never the secret itself byte by byte.
import { createHash, randomBytes } from 'node:crypto';

export const LINK_TTL_MS = 5 * 60_000;
export const SESSION_IDLE_MS = 60 * 60_000;
export const SESSION_MAX_MS = 12 * 60 * 60_000;
/** Bounds memory against a caller minting links in a loop. */
const MAX_LINKS = 1000;
const MAX_SESSIONS = 1000;

/** Values are 32 random bytes in base64url: 43 characters. */
export const SECRET_RE = /^[A-Za-z0-9_-]{43}$/;

function digest(v: string): string {
  return createHash('sha256').update(v).digest('hex');
}

interface Session {
  readonly started: number;
  last: number;
}

export class ConsoleSessions {
  private readonly links = new Map<string, number>();
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly now: () => number = Date.now) {}

  /** A new one-time login token and when it expires. */
  issueLink(): { token: string; expiresAt: Date } {
    this.sweep();
    if (this.links.size >= MAX_LINKS) this.links.delete(this.links.keys().next().value as string);
    const token = randomBytes(32).toString('base64url');
    const expires = this.now() + LINK_TTL_MS;
    this.links.set(digest(token), expires);
    return { token, expiresAt: new Date(expires) };
  }

  /** Uses a link up: a new session id, or null when the token is unknown, used or expired. */
  redeem(token: string): string | null {
    if (!SECRET_RE.test(token)) return null;
    const d = digest(token);
    const expires = this.links.get(d);
    this.links.delete(d);
    if (expires === undefined || expires < this.now()) return null;
    this.sweep();
    if (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value as string);
    const id = randomBytes(32).toString('base64url');
    const t = this.now();
    this.sessions.set(digest(id), { started: t, last: t });
    return id;
  }

  /** Whether `id` is a live session (and marks it used). */
  check(id: string | undefined): boolean {
    if (id === undefined || !SECRET_RE.test(id)) return false;
    const d = digest(id);
    const s = this.sessions.get(d);
    if (s === undefined) return false;
    const t = this.now();
    if (t - s.last > SESSION_IDLE_MS || t - s.started > SESSION_MAX_MS) {
      this.sessions.delete(d);
      return false;
    }
    s.last = t;
    return true;
  }

  end(id: string | undefined): void {
    if (id !== undefined && SECRET_RE.test(id)) this.sessions.delete(digest(id));
  }

  get counts(): { links: number; sessions: number } {
    return { links: this.links.size, sessions: this.sessions.size };
  }

  private sweep(): void {
    const t = this.now();
    for (const [k, exp] of this.links) if (exp < t) this.links.delete(k);
    for (const [k, s] of this.sessions)
      if (t - s.last > SESSION_IDLE_MS || t - s.started > SESSION_MAX_MS) this.sessions.delete(k);
  }
}
