// DNS names in policy (FQDN peers, model.ts): an exact name or a pattern `*.<suffix>` where
// `*` stands for exactly one label (letters, digits, "-", "_"; never a dot), as Cilium's
// matchPattern. Names are compared in lower case without the trailing dot.

/** One label: 1..63 of letters, digits, "-", "_" (underscore for service names such as _dmarc). */
const LABEL_RE = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
/** Longest name in text form (RFC 1035: 255 octets on the wire, 253 characters without the dot). */
export const MAX_NAME_LENGTH = 253;

export interface FqdnMatcher {
  /** Canonical text: the name or the pattern, lower case, no trailing dot. */
  readonly text: string;
  /** For a pattern: ".suffix" the name must end with after one label; null for an exact name. */
  readonly suffix: string | null;
}

/** The canonical form of a DNS name (lower case, no trailing dot), or null when it is not one. */
export function canonicalName(name: string): string | null {
  const n = name.toLowerCase().replace(/\.$/, '');
  if (n.length === 0 || n.length > MAX_NAME_LENGTH) return null;
  for (const l of n.split('.')) if (!LABEL_RE.test(l)) return null;
  return n;
}

/** Parses a policy's name or `*.` pattern; a string with the reason when it is neither. */
export function parseFqdn(text: string): FqdnMatcher | string {
  if (text.startsWith('*.')) {
    const rest = canonicalName(text.slice(2));
    if (rest === null) return `'${text}' is not a DNS name pattern ("*." then a DNS name)`;
    return { text: `*.${rest}`, suffix: `.${rest}` };
  }
  if (text.includes('*')) return `'${text}': "*" is allowed only as the whole first label ("*.example.com")`;
  const n = canonicalName(text);
  if (n === null) return `'${text}' is not a DNS name`;
  return { text: n, suffix: null };
}

/** Whether a canonical name matches. */
export function fqdnMatches(m: FqdnMatcher, name: string): boolean {
  if (m.suffix === null) return name === m.text;
  if (!name.endsWith(m.suffix)) return false;
  const label = name.slice(0, name.length - m.suffix.length);
  return label.length > 0 && !label.includes('.');
}

/** `outer` matches every name `inner` matches. */
export function fqdnCovers(outer: FqdnMatcher, inner: FqdnMatcher): boolean {
  if (outer.text === inner.text) return true;
  return inner.suffix === null && fqdnMatches(outer, inner.text);
}

/** Some name matches both. */
export function fqdnOverlaps(a: FqdnMatcher, b: FqdnMatcher): boolean {
  return fqdnCovers(a, b) || fqdnCovers(b, a);
}
