/* TUN with a virtio_net_hdr in front of every packet (IFF_VNET_HDR): reads that take TCP
 * super-packets (segmentation offload: the kernel's TCP hands over up to 64 KiB at once)
 * and cut them into segments, and writes that coalesce the TCP segments of one flow into
 * one large packet.
 *
 * Reads: with TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6 set, the kernel skips per-packet work on
 * the sending side: packets may come with their checksum left to complete (NEEDS_CSUM)
 * and TCP streams as super-packets with a segment size. Each is read whole into the
 * device's buffer and cut into MTU-sized segments, each with its own length, sequence
 * number, IPv4 ID and checksums, exactly what the kernel would have sent one by one. A
 * super-packet larger than the slots left in a batch continues in the next batch.
 *
 * A batch of decrypted packets usually holds long in-order runs of one TCP stream. Written
 * one by one, each costs a write() and a trip through the kernel's receive path; coalesced,
 * up to 64 segments (64 KiB) leave as one writev() carrying GSO metadata (TCPV4/TCPV6,
 * segment size, checksum to complete), which the kernel takes as one packet, as its own
 * GRO would have made it. A segment joins its flow's group when it is the next in sequence,
 * has the group's segment size (a shorter one ends the group), the same addresses, ports,
 * TOS/traffic class, TTL/hop limit, ACK number, window and TCP options, no IPv4 options
 * or fragmentation, no IPv6 extension headers, and ACK (or ACK|PSH, which ends the group)
 * as its only flags; its TCP checksum must be right, so a coalesced packet never hides a
 * segment the kernel would have refused. Everything else is written on its own with an
 * empty header, and no group grows past it. Groups are written in the order of their first
 * segment, so the order of each flow is kept. */
#include <errno.h>
#include <linux/virtio_net.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tg.h"

#define GRO_MAX_SEGMENTS 64
#define GRO_MAX_LENGTH 65535
#define GRO_OPEN_GROUPS 16
#define GRO_CHUNK 256

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

/* One's-complement sum of big-endian 16-bit words (a last odd byte as the high byte of a
 * word), not folded. Summed 4 bytes at a time in the machine's byte order into a 64-bit
 * accumulator (no carry is lost below 2^32 words) and folded to 16 bits; the one's-complement
 * sum commutes with swapping the bytes of every word (RFC 1071 section 2), so a
 * little-endian sum is the big-endian one with its two bytes swapped. Several times faster
 * than word by word: every TCP segment the TUN hands over or takes is summed once. */
static uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t len) {
  uint64_t acc = 0;
  while (len >= 16) {
    uint32_t w[4];
    memcpy(w, p, 16);
    acc += (uint64_t)w[0] + w[1] + w[2] + w[3];
    p += 16;
    len -= 16;
  }
  while (len >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    acc += w;
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    acc += w;
    p += 2;
    len -= 2;
  }
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffu) + (acc >> 16);
  acc = (acc & 0xffffu) + (acc >> 16);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  acc = ((acc & 0xffu) << 8) | (acc >> 8);
#endif
  sum += acc;
  if (len) sum += (uint64_t)p[0] << 8;
  return sum;
}

static uint16_t csum_fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)sum;
}

/* Sum of the TCP pseudo-header for a TCP segment of tcp_len bytes. */
static uint64_t pseudo_sum(const uint8_t *ip, bool v6, uint32_t tcp_len) {
  uint64_t sum = 0;
  if (v6) {
    sum = csum_add(sum, ip + 8, 32);
    sum += tcp_len >> 16;
    sum += tcp_len & 0xffff;
  } else {
    sum = csum_add(sum, ip + 12, 8);
    sum += tcp_len;
  }
  return sum + 6; /* IPPROTO_TCP */
}

typedef struct seg {
  uint8_t *pkt;
  uint32_t len;
  uint16_t ip_len;  /* IP header bytes */
  uint16_t hdr_len; /* IP + TCP header bytes */
  uint32_t seq;
  bool v6;
  bool eligible;
  int32_t next; /* next segment of the same group, -1 at the end */
} seg;

typedef struct group {
  int32_t first, last;
  uint32_t count;
  uint32_t next_seq;
  uint32_t seg_payload; /* payload bytes of every segment but the last */
  uint32_t total;       /* header + all payloads */
  bool open;
} group;

/* Parses packet i: eligible when it is a TCP segment that may join a group. */
static void parse(seg *s, uint8_t *pkt, uint32_t len) {
  s->pkt = pkt;
  s->len = len;
  s->eligible = false;
  s->next = -1;
  if (len < 20) return;
  uint8_t version = pkt[0] >> 4;
  uint32_t ip_len, tcp_at;
  if (version == 4) {
    ip_len = (uint32_t)(pkt[0] & 0x0f) * 4;
    if (ip_len != 20 || pkt[9] != 6 || rd16(pkt + 2) != len) return;
    if ((rd16(pkt + 6) & 0x3fff) != 0) return; /* MF or a fragment offset */
    s->v6 = false;
  } else if (version == 6) {
    ip_len = 40;
    if (len < 60 || pkt[6] != 6 || (uint32_t)rd16(pkt + 4) + 40 != len) return;
    s->v6 = true;
  } else {
    return;
  }
  tcp_at = ip_len;
  if (len < tcp_at + 20) return;
  const uint8_t *th = pkt + tcp_at;
  uint32_t tcp_hl = (uint32_t)(th[12] >> 4) * 4;
  if (tcp_hl < 20 || len < tcp_at + tcp_hl) return;
  uint8_t flags = th[13];
  if ((flags & ~TCP_PSH) != TCP_ACK || (th[12] & 0x0f) != 0) return; /* only ACK (+PSH), no CWR/ECE/NS */
  if (len == tcp_at + tcp_hl) return;                                 /* pure ACKs stay apart */
  uint32_t tcp_len = len - tcp_at;
  if (csum_fold(csum_add(pseudo_sum(pkt, s->v6, tcp_len), th, tcp_len)) != 0xffff) return;
  s->ip_len = (uint16_t)ip_len;
  s->hdr_len = (uint16_t)(ip_len + tcp_hl);
  s->seq = rd32(th + 4);
  s->eligible = true;
}

/* Whether b may follow a in one group: same flow and the same fixed header fields. */
static bool same_flow(const seg *a, const seg *b) {
  if (a->v6 != b->v6 || a->hdr_len != b->hdr_len) return false;
  const uint8_t *x = a->pkt, *y = b->pkt;
  if (a->v6) {
    if (memcmp(x, y, 4) != 0 || x[7] != y[7] || memcmp(x + 8, y + 8, 32) != 0) return false;
  } else {
    if (x[1] != y[1] || x[8] != y[8] || (x[6] & 0x40) != (y[6] & 0x40) || memcmp(x + 12, y + 12, 8) != 0)
      return false;
  }
  const uint8_t *tx = x + a->ip_len, *ty = y + b->ip_len;
  /* ports, then ACK number, data offset, window; then the options */
  return memcmp(tx, ty, 4) == 0 && memcmp(tx + 8, ty + 8, 5) == 0 && memcmp(tx + 14, ty + 14, 2) == 0 &&
         memcmp(tx + 20, ty + 20, a->hdr_len - a->ip_len - 20) == 0;
}

/* Writes iov; counts a refusal as a drop of `packets`. Returns false on a fatal error. */
static bool write_out(tg_io *io, struct iovec *iov, int iovcnt, uint32_t packets, uint32_t *written, int *fatal) {
  ssize_t r;
  do r = writev(io->fd, iov, iovcnt);
  while (r < 0 && errno == EINTR);
  if (r >= 0) {
    *written += packets;
    return true;
  }
  int err = errno;
  if (err == EAGAIN || err == ENOBUFS) {
    tg_io_count_drop(&io->stats, &io->stats.tx_dropped, err);
    io->stats.tx_dropped += packets - 1;
  } else if (err == EINVAL || err == EMSGSIZE) {
    tg_io_count_drop(&io->stats, &io->stats.tx_rejected, err);
    io->stats.tx_rejected += packets - 1;
  } else {
    *fatal = err;
    return false;
  }
  return true;
}

static bool write_group(tg_io *io, seg *segs, const group *g, uint32_t *written, int *fatal) {
  const seg *f = &segs[g->first];
  struct virtio_net_hdr vh;
  memset(&vh, 0, sizeof vh);
  struct iovec iov[GRO_MAX_SEGMENTS + 2];
  iov[0].iov_base = &vh;
  iov[0].iov_len = sizeof vh;
  if (g->count == 1) {
    iov[1].iov_base = f->pkt;
    iov[1].iov_len = f->len;
    return write_out(io, iov, 2, 1, written, fatal);
  }
  /* The first segment's headers, with the group's length, the last segment's PSH and the
   * pseudo-header sum for the kernel to complete the checksum. */
  uint8_t hdr[40 + 60];
  memcpy(hdr, f->pkt, f->hdr_len);
  uint8_t *th = hdr + f->ip_len;
  uint32_t tcp_len = g->total - f->ip_len;
  if (f->v6) {
    wr16(hdr + 4, (uint16_t)tcp_len);
  } else {
    wr16(hdr + 2, (uint16_t)g->total);
    wr16(hdr + 10, 0);
    wr16(hdr + 10, (uint16_t)~csum_fold(csum_add(0, hdr, 20)));
  }
  th[13] |= segs[g->last].pkt[segs[g->last].ip_len + 13] & TCP_PSH;
  wr16(th + 16, csum_fold(pseudo_sum(hdr, f->v6, tcp_len)));
  vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  vh.gso_type = f->v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4;
  vh.hdr_len = f->hdr_len;
  vh.gso_size = (uint16_t)g->seg_payload;
  vh.csum_start = f->ip_len;
  vh.csum_offset = 16;
  iov[1].iov_base = hdr;
  iov[1].iov_len = f->hdr_len;
  int n = 2;
  for (int32_t i = g->first; i >= 0; i = segs[i].next) {
    iov[n].iov_base = segs[i].pkt + segs[i].hdr_len;
    iov[n].iov_len = segs[i].len - segs[i].hdr_len;
    n++;
  }
  uint32_t before = *written;
  bool ok = write_out(io, iov, n, g->count, written, fatal);
  if (*written != before) {
    io->stats.tx_merged_packets += g->count;
    io->stats.tx_merged_writes++;
  }
  return ok;
}

uint32_t tg_tun_write_vnet(tg_io *io, uint8_t *slab, const uint32_t *offsets, const uint32_t *lengths,
                           uint32_t count, bool coalesce, int *fatal) {
  /* Per thread: a worker thread may drive a TUN of its own. */
  static _Thread_local seg segs[GRO_CHUNK];
  static _Thread_local group groups[GRO_CHUNK];
  static _Thread_local int32_t group_of[GRO_CHUNK]; /* group of a group's first segment, else -1 */
  uint32_t written = 0;
  *fatal = 0;
  for (uint32_t base = 0; base < count; base += GRO_CHUNK) {
    uint32_t n = count - base < GRO_CHUNK ? count - base : GRO_CHUNK;
    uint32_t ng = 0;
    int32_t open[GRO_OPEN_GROUPS];
    uint32_t nopen = 0;
    for (uint32_t i = 0; i < n; i++) {
      seg *s = &segs[i];
      group_of[i] = -1;
      if (coalesce) {
        parse(s, slab + offsets[base + i], lengths[base + i]);
      } else {
        s->pkt = slab + offsets[base + i];
        s->len = lengths[base + i];
        s->eligible = false;
        s->next = -1;
      }
      if (s->eligible) {
        uint32_t payload = s->len - s->hdr_len;
        int32_t join = -1;
        uint32_t k;
        for (k = 0; k < nopen; k++) {
          group *g = &groups[open[k]];
          if (same_flow(&segs[g->first], s)) {
            join = open[k];
            break;
          }
        }
        if (join >= 0) {
          group *g = &groups[join];
          if (g->open && s->seq == g->next_seq && payload <= g->seg_payload && g->count < GRO_MAX_SEGMENTS &&
              g->total + payload <= GRO_MAX_LENGTH) {
            segs[g->last].next = (int32_t)i;
            g->last = (int32_t)i;
            g->count++;
            g->next_seq += payload;
            g->total += payload;
            if (payload < g->seg_payload || (s->pkt[s->ip_len + 13] & TCP_PSH)) g->open = false;
            continue;
          }
          open[k] = open[--nopen]; /* the flow's group is done; a new one starts below */
        }
        groups[ng] = (group){(int32_t)i, (int32_t)i, 1, s->seq + payload, payload, s->len,
                             !(s->pkt[s->ip_len + 13] & TCP_PSH)};
        group_of[i] = (int32_t)ng;
        if (nopen == GRO_OPEN_GROUPS) nopen--; /* stop extending one group to make room */
        open[nopen++] = (int32_t)ng;
        ng++;
        continue;
      }
      /* Anything else (a pure ACK, FIN, another protocol...) is written where it stands, and
       * no group grows past it, so no segment is moved across it. */
      nopen = 0;
      groups[ng] = (group){(int32_t)i, (int32_t)i, 1, 0, 0, s->len, false};
      group_of[i] = (int32_t)ng;
      ng++;
    }
    for (uint32_t i = 0; i < n; i++) {
      if (group_of[i] < 0) continue;
      if (!write_group(io, segs, &groups[group_of[i]], &written, fatal)) return written;
    }
  }
  return written;
}

/* Cuts segment i of the pending TCP super-packet into out: the first segment's headers
 * with this segment's length, sequence number, IPv4 ID and flags (FIN and PSH only on the
 * last, CWR only on the first), and full checksums. Returns its length. */
static uint32_t cut_segment(const tg_vnet *v, uint32_t i, uint8_t *out) {
  const uint8_t *p = v->buf;
  uint32_t hdr = v->hdr_len, ip_len = v->ip_len;
  uint32_t at = hdr + i * v->gso_size;
  uint32_t plen = v->len - at < v->gso_size ? v->len - at : v->gso_size;
  bool last = i + 1 == v->count;
  memcpy(out, p, hdr);
  memcpy(out + hdr, p + at, plen);
  uint8_t *th = out + ip_len;
  uint32_t tcp_len = hdr - ip_len + plen;
  if (v->v6) {
    wr16(out + 4, (uint16_t)tcp_len);
  } else {
    wr16(out + 2, (uint16_t)(hdr + plen));
    wr16(out + 4, (uint16_t)(rd16(p + 4) + i));
    wr16(out + 10, 0);
    wr16(out + 10, (uint16_t)~csum_fold(csum_add(0, out, ip_len)));
  }
  uint32_t seq = rd32(p + ip_len + 4) + i * v->gso_size;
  th[4] = (uint8_t)(seq >> 24);
  th[5] = (uint8_t)(seq >> 16);
  th[6] = (uint8_t)(seq >> 8);
  th[7] = (uint8_t)seq;
  if (!last) th[13] &= (uint8_t)~(TCP_FIN | TCP_PSH);
  if (i > 0) th[13] &= (uint8_t)~0x80; /* CWR */
  wr16(th + 16, 0);
  wr16(th + 16, (uint16_t)~csum_fold(csum_add(pseudo_sum(out, v->v6, tcp_len), th, tcp_len)));
  return hdr + plen;
}

/* Takes the packet just read into v->buf (len bytes, header vh): a plain packet is completed
 * (NEEDS_CSUM) and left for copying (count 1, gso_size 0); a TCP super-packet is checked and
 * left for cutting (count segments). Returns false for a packet to drop (counted). */
static bool take(tg_io *io, tg_vnet *v, uint32_t len, size_t cap) {
  const struct virtio_net_hdr *vh = &v->vh;
  uint8_t *p = v->buf;
  v->len = len;
  v->next = 0;
  uint8_t gso = vh->gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
  if (gso == VIRTIO_NET_HDR_GSO_NONE) {
    if (vh->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
      size_t start = vh->csum_start, at = (size_t)vh->csum_start + vh->csum_offset;
      if (start >= len || at + 2 > len) goto bad;
      /* The field holds the pseudo-header sum: the sum over the rest completes it. */
      wr16(p + at, (uint16_t)~csum_fold(csum_add(0, p + start, len - start)));
    }
    if (len > cap) {
      tg_io_count_drop(&io->stats, &io->stats.rx_truncated, EMSGSIZE);
      return false;
    }
    v->gso_size = 0;
    v->count = 1;
    return true;
  }
  if (gso != VIRTIO_NET_HDR_GSO_TCPV4 && gso != VIRTIO_NET_HDR_GSO_TCPV6) goto bad;
  v->v6 = gso == VIRTIO_NET_HDR_GSO_TCPV6;
  if (v->v6) {
    if (len < 60 || p[0] >> 4 != 6 || p[6] != 6) goto bad;
    v->ip_len = 40;
  } else {
    if (len < 40 || p[0] >> 4 != 4 || p[9] != 6) goto bad;
    v->ip_len = (uint16_t)((p[0] & 0x0f) * 4);
    if (v->ip_len < 20) goto bad;
  }
  if (len < (uint32_t)v->ip_len + 20) goto bad;
  v->hdr_len = (uint16_t)(v->ip_len + (p[v->ip_len + 12] >> 4) * 4);
  v->gso_size = vh->gso_size;
  if (v->hdr_len < v->ip_len + 20 || len <= v->hdr_len || v->gso_size == 0) goto bad;
  if ((size_t)v->hdr_len + v->gso_size > cap) {
    tg_io_count_drop(&io->stats, &io->stats.rx_truncated, EMSGSIZE);
    return false;
  }
  v->count = (len - v->hdr_len + v->gso_size - 1) / v->gso_size;
  return true;
bad:
  tg_io_count_drop(&io->stats, &io->stats.rx_errors, EPROTO);
  return false;
}

int64_t tg_tun_read_vnet_batch(tg_io *io, tg_vnet *v, uint8_t *slab, uint32_t slot_size, uint32_t headroom,
                               uint32_t max, uint32_t *lengths) {
  const size_t cap = slot_size - headroom;
  uint32_t n = 0;
  while (n < max) {
    if (v->next < v->count) {
      uint8_t *out = slab + (size_t)n * slot_size + headroom;
      if (v->gso_size == 0) {
        memcpy(out, v->buf, v->len);
        lengths[n++] = v->len;
        v->next = v->count;
      } else {
        for (; v->next < v->count && n < max; v->next++, n++)
          lengths[n] = cut_segment(v, v->next, slab + (size_t)n * slot_size + headroom);
              }
      continue;
    }
    struct iovec iov[2] = {{&v->vh, sizeof v->vh}, {v->buf, TG_VNET_BUF}};
    ssize_t r = readv(io->fd, iov, 2);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      if (n > 0) break;
      return -1;
    }
    if ((size_t)r < sizeof v->vh) {
      tg_io_count_drop(&io->stats, &io->stats.rx_errors, EPROTO);
      continue;
    }
    if (!take(io, v, (uint32_t)((size_t)r - sizeof v->vh), cap)) continue;
    if (v->gso_size != 0) {
      io->stats.rx_split_packets += v->count;
      io->stats.rx_split_reads++;
    }
  }
  return n;
}
