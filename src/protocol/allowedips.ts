// Cryptokey routing table: a path-compressed binary trie per address family (the structure of
// wireguard-go's allowedips.go and the kernel's allowedips.c), mapping prefixes to peers with
// longest-prefix match. Used on send (destination -> peer) and on receive (the inner source
// address must map back to the peer the packet came from).
//
// Addresses are handled as big-endian 32-bit words (1 for IPv4, 4 for IPv6); each node keeps its
// masked key and mask words so the match test on the hot path is a few XOR/AND operations with
// no allocation.

import { TgError } from '../util/errors.js';

/** An IP prefix: address of 4 (IPv4) or 16 (IPv6) bytes and a prefix length. */
export interface IpPrefix {
  address: Uint8Array;
  bits: number;
}

class TrieNode<P> {
  k0 = 0;
  k1 = 0;
  k2 = 0;
  k3 = 0;
  m0 = 0;
  m1 = 0;
  m2 = 0;
  m3 = 0;
  peer: P | null = null;
  c0: TrieNode<P> | null = null;
  c1: TrieNode<P> | null = null;
  parent: TrieNode<P> | null = null;

  constructor(
    words: readonly number[],
    readonly cidr: number,
    readonly v6: boolean,
  ) {
    this.m0 = maskWord(cidr, 0);
    this.m1 = maskWord(cidr, 1);
    this.m2 = maskWord(cidr, 2);
    this.m3 = maskWord(cidr, 3);
    this.k0 = (words[0] & this.m0) >>> 0;
    this.k1 = (words[1] & this.m1) >>> 0;
    this.k2 = (words[2] & this.m2) >>> 0;
    this.k3 = (words[3] & this.m3) >>> 0;
  }

  words(): number[] {
    return [this.k0, this.k1, this.k2, this.k3];
  }
}

function maskWord(cidr: number, word: number): number {
  const bits = Math.max(0, Math.min(32, cidr - 32 * word));
  if (bits === 0) return 0;
  return bits === 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
}

function commonBits<P>(node: TrieNode<P>, w: readonly number[], maxBits: number): number {
  let x = (node.k0 ^ w[0]) >>> 0;
  if (x !== 0) return Math.clz32(x);
  x = (node.k1 ^ w[1]) >>> 0;
  if (x !== 0) return 32 + Math.clz32(x);
  x = (node.k2 ^ w[2]) >>> 0;
  if (x !== 0) return 64 + Math.clz32(x);
  x = (node.k3 ^ w[3]) >>> 0;
  if (x !== 0) return 96 + Math.clz32(x);
  return maxBits;
}

function bitAt(w: readonly number[], pos: number): number {
  return (w[pos >>> 5] >>> (31 - (pos & 31))) & 1;
}

function toWords(address: Uint8Array): number[] {
  const w = [0, 0, 0, 0];
  for (let i = 0; i < address.length; i++) w[i >>> 2] |= address[i] << (24 - 8 * (i & 3));
  for (let i = 0; i < 4; i++) w[i] >>>= 0;
  return w;
}

function fromWords<P>(node: TrieNode<P>, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  const w = node.words();
  for (let i = 0; i < bytes; i++) out[i] = (w[i >>> 2] >>> (24 - 8 * (i & 3))) & 0xff;
  return out;
}

/** Checks a prefix; throws TG_ERR_INVALID_ARGUMENT for a wrong address size or length. */
export function validatePrefix(prefix: IpPrefix): void {
  const len = prefix.address?.length;
  if (len !== 4 && len !== 16) {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'an allowed IP address is 4 (IPv4) or 16 (IPv6) bytes');
  }
  if (!Number.isInteger(prefix.bits) || prefix.bits < 0 || prefix.bits > len * 8) {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `an allowed IP prefix length is 0..${len * 8}`);
  }
}

export class AllowedIps<P> {
  private root4: TrieNode<P> | null = null;
  private root6: TrieNode<P> | null = null;
  private readonly byPeer = new Map<P, Set<TrieNode<P>>>();
  private readonly scratch = [0, 0, 0, 0];

  /** Maps the prefix to peer, replacing any peer it had. Host bits are cleared. */
  insert(prefix: IpPrefix, peer: P): void {
    validatePrefix(prefix);
    const v6 = prefix.address.length === 16;
    const maxBits = v6 ? 128 : 32;
    const cidr = prefix.bits;
    const probe = new TrieNode<P>(toWords(prefix.address), cidr, v6);
    const w = probe.words();
    let parent: TrieNode<P> | null = null;
    let parentBit = 0;
    let node = v6 ? this.root6 : this.root4;
    while (node !== null && node.cidr <= cidr && commonBits(node, w, maxBits) >= node.cidr) {
      if (node.cidr === cidr) {
        this.setPeer(node, peer);
        return;
      }
      parent = node;
      parentBit = bitAt(w, node.cidr);
      node = parentBit === 0 ? node.c0 : node.c1;
    }
    this.setPeer(probe, peer);
    if (node === null) {
      this.attach(parent, parentBit, probe);
      return;
    }
    const common = Math.min(commonBits(node, w, maxBits), cidr);
    if (common === cidr) {
      // The new prefix contains the subtree at node: it goes above it.
      this.setChild(probe, bitAt(node.words(), cidr), node);
      this.attach(parent, parentBit, probe);
      return;
    }
    // Split: a peerless branch node at the first differing bit.
    const branch = new TrieNode<P>(w, common, v6);
    this.setChild(branch, bitAt(node.words(), common), node);
    this.setChild(branch, bitAt(w, common), probe);
    this.attach(parent, parentBit, branch);
  }

  /** Removes the exact prefix if it maps to peer. */
  remove(prefix: IpPrefix, peer: P): void {
    validatePrefix(prefix);
    const v6 = prefix.address.length === 16;
    const maxBits = v6 ? 128 : 32;
    const w = new TrieNode<P>(toWords(prefix.address), prefix.bits, v6).words();
    let node = v6 ? this.root6 : this.root4;
    while (node !== null && node.cidr <= prefix.bits && commonBits(node, w, maxBits) >= node.cidr) {
      if (node.cidr === prefix.bits) {
        if (node.peer === peer) this.removeNode(node);
        return;
      }
      node = bitAt(w, node.cidr) === 0 ? node.c0 : node.c1;
    }
  }

  /** Removes every prefix of peer. */
  removeByPeer(peer: P): void {
    const nodes = this.byPeer.get(peer);
    if (nodes === undefined) return;
    for (const node of [...nodes]) this.removeNode(node);
    this.byPeer.delete(peer);
  }

  /** The prefixes of peer (addresses masked). */
  entriesForPeer(peer: P): IpPrefix[] {
    const nodes = this.byPeer.get(peer);
    if (nodes === undefined) return [];
    const out: IpPrefix[] = [];
    for (const node of nodes) {
      out.push({ address: fromWords(node, node.v6 ? 16 : 4), bits: node.cidr });
    }
    return out;
  }

  /** Longest-prefix match of an IPv4 address given as a u32 (network order value). */
  lookup4(addr: number): P | null {
    let found: P | null = null;
    let node = this.root4;
    while (node !== null && ((node.k0 ^ addr) & node.m0) === 0) {
      if (node.peer !== null) found = node.peer;
      if (node.cidr === 32) break;
      node = ((addr >>> (31 - node.cidr)) & 1) === 0 ? node.c0 : node.c1;
    }
    return found;
  }

  /** Longest-prefix match of an IPv6 address given as four big-endian u32 words. */
  lookup6(a0: number, a1: number, a2: number, a3: number): P | null {
    let found: P | null = null;
    let node = this.root6;
    while (
      node !== null &&
      (((node.k0 ^ a0) & node.m0) |
        ((node.k1 ^ a1) & node.m1) |
        ((node.k2 ^ a2) & node.m2) |
        ((node.k3 ^ a3) & node.m3)) ===
        0
    ) {
      if (node.peer !== null) found = node.peer;
      const cidr = node.cidr;
      if (cidr === 128) break;
      const word = cidr < 64 ? (cidr < 32 ? a0 : a1) : cidr < 96 ? a2 : a3;
      node = ((word >>> (31 - (cidr & 31))) & 1) === 0 ? node.c0 : node.c1;
    }
    return found;
  }

  /** Longest-prefix match of an IPv6 address read from buf at off (16 bytes). */
  lookup6At(buf: Buffer, off: number): P | null {
    return this.lookup6(
      buf.readUInt32BE(off),
      buf.readUInt32BE(off + 4),
      buf.readUInt32BE(off + 8),
      buf.readUInt32BE(off + 12),
    );
  }

  /** Longest-prefix match of a 4- or 16-byte address; null for other sizes. */
  lookup(address: Uint8Array): P | null {
    if (address.length === 4) {
      return this.lookup4(((address[0] << 24) | (address[1] << 16) | (address[2] << 8) | address[3]) >>> 0);
    }
    if (address.length !== 16) return null;
    const w = this.scratch;
    const t = toWords(address);
    for (let i = 0; i < 4; i++) w[i] = t[i];
    return this.lookup6(w[0], w[1], w[2], w[3]);
  }

  private setPeer(node: TrieNode<P>, peer: P): void {
    if (node.peer !== null) this.byPeer.get(node.peer)?.delete(node);
    node.peer = peer;
    let set = this.byPeer.get(peer);
    if (set === undefined) {
      set = new Set();
      this.byPeer.set(peer, set);
    }
    set.add(node);
  }

  private setChild(parent: TrieNode<P>, bit: number, child: TrieNode<P>): void {
    if (bit === 0) parent.c0 = child;
    else parent.c1 = child;
    child.parent = parent;
  }

  private attach(parent: TrieNode<P> | null, bit: number, child: TrieNode<P>): void {
    if (parent === null) {
      child.parent = null;
      if (child.v6) this.root6 = child;
      else this.root4 = child;
    } else {
      this.setChild(parent, bit, child);
    }
  }

  private replace(node: TrieNode<P>, by: TrieNode<P> | null): void {
    const parent = node.parent;
    if (parent === null) {
      if (node.v6) this.root6 = by;
      else this.root4 = by;
    } else if (parent.c0 === node) {
      parent.c0 = by;
    } else {
      parent.c1 = by;
    }
    if (by !== null) by.parent = parent;
  }

  private removeNode(node: TrieNode<P>): void {
    if (node.peer !== null) {
      const set = this.byPeer.get(node.peer);
      set?.delete(node);
      if (set !== undefined && set.size === 0) this.byPeer.delete(node.peer);
    }
    node.peer = null;
    if (node.c0 !== null && node.c1 !== null) return; // still a branch
    const child = node.c0 ?? node.c1;
    const parent = node.parent;
    this.replace(node, child);
    node.parent = null;
    if (child !== null || parent === null || parent.peer !== null) return;
    // A peerless branch left with a single child is collapsed.
    const other = parent.c0 ?? parent.c1;
    this.replace(parent, other);
    parent.parent = null;
  }
}
