/* UDP socket owned by the addon: batched receive (recvmmsg) into slab slots and batched
 * send (sendmmsg) to per-packet endpoints.
 *
 * By default the socket is AF_INET6 with IPV6_V6ONLY=0, so one socket carries both IPv4
 * (as IPv4-mapped addresses, reported to JS as family 4) and IPv6 outer transport.
 * Binding a family-4 endpoint makes an AF_INET socket instead (IPv6 destinations are then
 * counted rejections).
 *
 * Sends use UDP generic segmentation offload where a run of packets allows (see below).
 *
 * Sticky source addresses, as WireGuard keeps them: each received datagram's endpoint
 * carries the local address it was sent to (IP_PKTINFO / IPV6_PKTINFO), and a send to an
 * endpoint that carries a source asks the kernel for that source address, so that a host
 * with several addresses answers from the one its peer wrote to. When the kernel refuses
 * the source (the address is gone: EINVAL for IPv6, ENETUNREACH for IPv4), the message is sent again
 * without it and the kernel picks the source, as the kernel's WireGuard falls back.
 *
 * Errors: EAGAIN ends a receive batch; ICMP-reported errors on receive are counted
 * (rxErrors) and skipped; on send, EAGAIN drops the rest of the batch and ENOBUFS the
 * one packet (txDropped); a refusal that concerns one destination (unreachable, EINVAL,
 * EMSGSIZE, EPERM from a firewall...) drops that packet (txRejected). Anything else
 * (EBADF, ENOTSOCK, ...) is thrown with its errno name. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tg.h"

/* UDP generic segmentation offload (UDP_SEGMENT, Linux 4.18): a run of packets to one
 * endpoint, all of one size except a shorter last one, leaves as one sendmsg with a
 * segment-size control message; the kernel (or the device) cuts it into datagrams. The
 * receiver sees ordinary datagrams. Runs stay under the kernel's limits (64 segments,
 * 64 KiB in all). */
#define TG_GSO_MAX_SEGMENTS 64
#define TG_GSO_MAX_BYTES 65000

/* UDP generic receive offload (UDP_GRO, Linux 5.0): the kernel hands over a run of
 * datagrams from one source, all of one size but a shorter last one, as one message with
 * the segment size in a control message (and passes a GSO run sent over a veth or the
 * loopback on whole instead of cutting it). One message lands in one slot and recvBatch
 * reports each segment as its own datagram at its offset inside the slot: no copies, and
 * one syscall carries up to TG_GRO_SEGMENTS datagrams. Only with the offsets argument of
 * recvBatch; a batch asks for no more messages than its remaining entries can take at
 * TG_GRO_SEGMENTS segments each (the kernel's GRO merges at most 64), and segments beyond
 * the batch's entries (a longer GSO run from a local sender) are counted drops. */
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#define TG_GRO_SEGMENTS 64

/* Receive age limit (receiveMaxAge): with SO_TIMESTAMPNS the kernel stamps each datagram
 * when it is queued on the socket; a datagram that waited longer than the limit (its
 * process was stopped or starved, say) is dropped and counted (rxStale) instead of handed
 * over seconds late. Stamps and the limit are CLOCK_REALTIME, read once per recvmmsg. */

/* Preallocated per socket so that a batch costs no allocation; freed at close (io.c), not
 * when V8 gets round to collecting the wrapper. sockaddr_in6 is large enough for
 * sockaddr_in as well. */
typedef struct tg_udp_bufs {
  /* Packets per message of the chunk being sent. */
  uint16_t segs[TG_MMSG_CHUNK];
  /* Control messages: on send a segment size and a source address, on receive the
   * packet-info messages (one of each family at most) and the GRO segment size. */
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t)) + CMSG_SPACE(sizeof(struct in6_pktinfo)) +
             CMSG_SPACE(sizeof(struct in_pktinfo)) + CMSG_SPACE(sizeof(struct timespec))];
    struct cmsghdr align;
  } ctrl[TG_MMSG_CHUNK];
  struct mmsghdr msgs[TG_MMSG_CHUNK];
  struct iovec iov[TG_MMSG_CHUNK];
  struct sockaddr_in6 names[TG_MMSG_CHUNK];
} tg_udp_bufs;

typedef struct tg_udp {
  tg_io io; /* first: freed as one block by io.c */
  int family;
  /* Send runs with UDP_SEGMENT; cleared for good when the kernel cannot segment at all. */
  bool gso;
  /* UDP_GRO is on: received messages may carry several datagrams. */
  bool gro;
  /* Segments of at least this size are sent unsegmented: the kernel refused (EINVAL) a run
   * of them, as it does when a segment exceeds the route's MTU (such datagrams leave as IP
   * fragments, one by one). */
  uint32_t gso_refused_size;
  /* Receive age limit in ns; 0: none (see receiveMaxAge). */
  uint64_t max_age_ns;
  tg_udp_bufs *b; /* == io.bufs */
} tg_udp;

/* Big socket buffers absorb bursts between event-loop turns. SO_*BUFFORCE (root, or
 * CAP_NET_ADMIN) may exceed net.core.[rw]mem_max; otherwise the kernel caps the size. */
static void set_buffer(int fd, int force_opt, int opt, uint32_t size) {
  if (size == 0) return;
  int v = size > (uint32_t)INT32_MAX / 2 ? INT32_MAX / 2 : (int)size;
  if (setsockopt(fd, SOL_SOCKET, force_opt, &v, sizeof v) == 0) return;
  setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v);
}

static bool rx_transient(int err) {
  return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH || err == EHOSTDOWN ||
         err == ENETDOWN || err == EPROTO;
}

static bool tx_rejected(int err) {
  return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH || err == EHOSTDOWN ||
         err == ENETDOWN || err == EADDRNOTAVAIL || err == EAFNOSUPPORT || err == EINVAL ||
         err == EMSGSIZE || err == EPERM || err == EACCES || err == ENOMEM;
}

/* The local address a received datagram was sent to, from its packet-info message. */
static void read_source(struct msghdr *h, uint8_t *ep) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
        c->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
      struct in_pktinfo pi;
      memcpy(&pi, CMSG_DATA(c), sizeof pi);
      tg_ep_set_source(ep, &pi.ipi_spec_dst, 4);
      return;
    }
    if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
        c->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
      struct in6_pktinfo pi;
      memcpy(&pi, CMSG_DATA(c), sizeof pi);
      if (IN6_IS_ADDR_V4MAPPED(&pi.ipi6_addr)) tg_ep_set_source(ep, &pi.ipi6_addr.s6_addr[12], 4);
      else tg_ep_set_source(ep, &pi.ipi6_addr, 16);
      return;
    }
  }
}

/* Whether a received message waited longer than max_age_ns before `now` (SO_TIMESTAMPNS);
 * a message without a stamp is not stale. */
static bool rx_is_stale(struct msghdr *h, const struct timespec *now, uint64_t max_age_ns) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS &&
        c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
      struct timespec ts;
      memcpy(&ts, CMSG_DATA(c), sizeof ts);
      int64_t age = ((int64_t)now->tv_sec - (int64_t)ts.tv_sec) * 1000000000LL +
                    ((int64_t)now->tv_nsec - (int64_t)ts.tv_nsec);
      return age > 0 && (uint64_t)age > max_age_ns;
    }
  }
  return false;
}

/* The segment size of a received message from its UDP_GRO control message; 0 without one. */
static uint32_t read_gro_size(struct msghdr *h) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int v;
      memcpy(&v, CMSG_DATA(c), sizeof v);
      return v > 0 ? (uint32_t)v : 0;
    }
  }
  return 0;
}

/* Writes message j's control messages: the segment size when it carries more than one
 * segment, the source address when `ep` (may be NULL) has one and `with_source`. */
static void build_control(tg_udp *u, uint32_t j, const uint8_t *ep, bool with_source) {
  struct msghdr *h = &u->b->msgs[j].msg_hdr;
  bool source = with_source && ep != NULL && (ep[TG_EP_FLAGS] & TG_EP_HAS_SOURCE) != 0;
  if (u->b->segs[j] < 2 && !source) {
    h->msg_control = NULL;
    h->msg_controllen = 0;
    return;
  }
  memset(u->b->ctrl[j].buf, 0, sizeof u->b->ctrl[j].buf);
  h->msg_control = u->b->ctrl[j].buf;
  h->msg_controllen = sizeof u->b->ctrl[j].buf;
  struct cmsghdr *c = CMSG_FIRSTHDR(h);
  size_t used = 0;
  if (u->b->segs[j] >= 2) {
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t gso_size = (uint16_t)h->msg_iov[0].iov_len;
    memcpy(CMSG_DATA(c), &gso_size, sizeof gso_size);
    used += CMSG_SPACE(sizeof(uint16_t));
    c = CMSG_NXTHDR(h, c);
  }
  if (source) {
    if (ep[TG_EP_FAMILY] == 4) {
      /* Also on a dual-stack socket: an IPv4-mapped destination takes IPv4 control messages. */
      struct in_pktinfo pi;
      memset(&pi, 0, sizeof pi);
      memcpy(&pi.ipi_spec_dst, ep + TG_EP_SOURCE, 4);
      c->cmsg_level = IPPROTO_IP;
      c->cmsg_type = IP_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof pi);
      memcpy(CMSG_DATA(c), &pi, sizeof pi);
      used += CMSG_SPACE(sizeof pi);
    } else {
      struct in6_pktinfo pi;
      memset(&pi, 0, sizeof pi);
      memcpy(&pi.ipi6_addr, ep + TG_EP_SOURCE, 16);
      c->cmsg_level = IPPROTO_IPV6;
      c->cmsg_type = IPV6_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof pi);
      memcpy(CMSG_DATA(c), &pi, sizeof pi);
      used += CMSG_SPACE(sizeof pi);
    }
  }
  h->msg_controllen = used;
}

static bool check_endpoint(napi_env env, const uint8_t *ep, const char *what, uint32_t index) {
  if (ep[TG_EP_FAMILY] != 4 && ep[TG_EP_FAMILY] != 6) {
    tg_throw_type(env, "%s %u has family %u, expected 4 or 6", what, index, ep[TG_EP_FAMILY]);
    return false;
  }
  return true;
}

/* new UdpHandle(bind: Uint8Array(20) | null, v6Only, rcvBuf, sndBuf) */
static napi_value udp_new(napi_env env, napi_callback_info info) {
  napi_value argv[4], this_arg;
  if (!tg_arg_count(env, info, 4, argv, &this_arg)) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  uint8_t *bind_ep = NULL;
  size_t bind_len = 0;
  if (t != napi_null && t != napi_undefined) {
    if (!tg_arg_bytes(env, argv[0], "bind endpoint", &bind_ep, &bind_len)) return NULL;
    if (bind_len != TG_EP_SIZE) return tg_throw_range(env, "bind endpoint must be %d bytes", TG_EP_SIZE);
    if (!check_endpoint(env, bind_ep, "bind endpoint", 0)) return NULL;
  }
  bool v6_only;
  uint32_t rcvbuf, sndbuf;
  if (!tg_arg_bool(env, argv[1], "v6Only", &v6_only) || !tg_arg_u32(env, argv[2], "rcvBuf", &rcvbuf) ||
      !tg_arg_u32(env, argv[3], "sndBuf", &sndbuf))
    return NULL;

  /* No bind endpoint means [::]:0. */
  uint8_t ep[TG_EP_SIZE] = {6};
  if (bind_ep != NULL) memcpy(ep, bind_ep, TG_EP_SIZE);
  bool wildcard6 = ep[TG_EP_FAMILY] == 6;
  for (int i = TG_EP_ADDR; i < TG_EP_SIZE; i++) wildcard6 = wildcard6 && ep[i] == 0;

  int family = ep[TG_EP_FAMILY] == 4 ? AF_INET : AF_INET6;
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd < 0 && errno == EAFNOSUPPORT && wildcard6) {
    family = AF_INET; /* kernel without IPv6: the wildcard becomes 0.0.0.0 */
    ep[TG_EP_FAMILY] = 4;
    fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  }
  if (fd < 0) return tg_throw_errno(env, errno, "socket");
  int err = 0;
  const char *step = NULL;
  if (family == AF_INET6) {
    int v = v6_only ? 1 : 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof v) < 0) err = errno, step = "setsockopt IPV6_V6ONLY";
  }
  /* Packet info for sticky sources; without it (never seen on Linux) endpoints simply
   * carry no source. */
  int on = 1;
  setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof on);
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on);
  set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf);
  set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf);
  if (err == 0) {
    struct sockaddr_in6 sa;
    unsigned sa_len = tg_ep_to_sockaddr(ep, family, &sa);
    if (bind(fd, (struct sockaddr *)&sa, sa_len) < 0) err = errno, step = "bind";
  }
  if (err != 0) {
    close(fd);
    return tg_throw_errno(env, err, step);
  }

  tg_udp *u = calloc(1, sizeof *u);
  tg_udp_bufs *b = calloc(1, sizeof *b);
  if (u == NULL || b == NULL) {
    close(fd);
    free(u);
    free(b);
    return tg_throw_errno(env, ENOMEM, "udp");
  }
  u->b = b;
  u->io.bufs = b;
  u->io.kind = TG_KIND_UDP;
  u->io.fd = fd;
  u->family = family;
  u->gso = true;
  u->gso_refused_size = UINT32_MAX;
  if (!tg_io_attach(env, this_arg, &u->io)) {
    close(fd);
    free(b);
    free(u);
    return NULL;
  }
  napi_value fam;
  napi_create_uint32(env, family == AF_INET6 ? 6 : 4, &fam);
  napi_property_descriptor fam_prop = {"family", NULL, NULL, NULL, NULL, fam, napi_enumerable, NULL};
  napi_define_properties(env, this_arg, 1, &fam_prop);
  return this_arg;
}

/* localEndpoint(out: Uint8Array(>= 20)): the bound address and port (port 0 resolved). */
static napi_value udp_local_endpoint(napi_env env, napi_callback_info info) {
  napi_value argv[1], this_arg;
  if (!tg_arg_count(env, info, 1, argv, &this_arg)) return NULL;
  uint8_t *out;
  size_t out_len;
  if (!tg_arg_bytes(env, argv[0], "out", &out, &out_len)) return NULL;
  if (out_len < TG_EP_SIZE) return tg_throw_range(env, "out must hold %d bytes", TG_EP_SIZE);
  tg_io *io = tg_io_unwrap(env, this_arg, TG_KIND_UDP, "getsockname");
  if (io == NULL) return NULL;
  struct sockaddr_in6 sa;
  socklen_t len = sizeof sa;
  if (getsockname(io->fd, (struct sockaddr *)&sa, &len) < 0) return tg_throw_errno(env, errno, "getsockname");
  tg_ep_from_sockaddr(&sa, out);
  return tg_undefined(env);
}

/* bufferSizes(): the kernel's actual SO_RCVBUF/SO_SNDBUF (it reports twice the request). */
static napi_value udp_buffer_sizes(napi_env env, napi_callback_info info) {
  napi_value this_arg, o;
  if (!tg_arg_count(env, info, 0, NULL, &this_arg)) return NULL;
  tg_io *io = tg_io_unwrap(env, this_arg, TG_KIND_UDP, "getsockopt");
  if (io == NULL) return NULL;
  int rcv = 0, snd = 0;
  socklen_t l = sizeof rcv;
  getsockopt(io->fd, SOL_SOCKET, SO_RCVBUF, &rcv, &l);
  l = sizeof snd;
  getsockopt(io->fd, SOL_SOCKET, SO_SNDBUF, &snd, &l);
  napi_create_object(env, &o);
  napi_set_named_property(env, o, "rcvBuf", tg_uint(env, (uint64_t)rcv));
  napi_set_named_property(env, o, "sndBuf", tg_uint(env, (uint64_t)snd));
  return o;
}

/* recvBatch(slab, slotSize, headroom, max, lengths, endpoints, offsets?) -> count.
 * Without offsets: datagram i lands at slab[i*slotSize + headroom], its length in
 * lengths[i]; truncated datagrams are dropped and the later ones moved down, so slots stay
 * dense. With offsets: datagram i is at slab[offsets[i]] (message k of the call lands in
 * slot k, and with UDP_GRO its segments follow each other there). Either way the source
 * of datagram i is endpoint record i (with the local address it was sent to). */
static napi_value udp_recv_batch(napi_env env, napi_callback_info info) {
  napi_value argv[7], this_arg;
  size_t argc = 7;
  if (napi_get_cb_info(env, info, &argc, argv, &this_arg, NULL) != napi_ok)
    return tg_throw_type(env, "napi_get_cb_info failed");
  if (argc < 6) return tg_throw_type(env, "expected 6 arguments, got %zu", argc);
  uint8_t *slab, *eps;
  size_t slab_len, lengths_len, eps_len, offsets_len = 0;
  uint32_t slot_size, headroom, max, *lengths, *offsets = NULL;
  if (!tg_arg_bytes(env, argv[0], "slab", &slab, &slab_len) || !tg_arg_u32(env, argv[1], "slotSize", &slot_size) ||
      !tg_arg_u32(env, argv[2], "headroom", &headroom) || !tg_arg_u32(env, argv[3], "max", &max) ||
      !tg_arg_u32array(env, argv[4], "lengths", &lengths, &lengths_len) ||
      !tg_arg_bytes(env, argv[5], "endpoints", &eps, &eps_len) ||
      !tg_check_slots(env, slab_len, slot_size, headroom, max, lengths_len))
    return NULL;
  if (argc >= 7) {
    napi_valuetype t;
    napi_typeof(env, argv[6], &t);
    if (t != napi_undefined) {
      if (!tg_arg_u32array(env, argv[6], "offsets", &offsets, &offsets_len)) return NULL;
      if (offsets_len < max) return tg_throw_range(env, "offsets must hold max (%u) entries, has %zu", max, offsets_len);
    }
  }
  if ((uint64_t)max * TG_EP_SIZE > eps_len)
    return tg_throw_range(env, "endpoints must hold max (%u) x %d bytes, has %zu", max, TG_EP_SIZE, eps_len);
  tg_io *io = tg_io_unwrap(env, this_arg, TG_KIND_UDP, "recvmmsg");
  if (io == NULL) return NULL;
  tg_udp *u = (tg_udp *)io;
  if (u->gro && offsets == NULL) return tg_throw_type(env, "a socket with receive offload needs the offsets argument");

  const size_t cap = slot_size - headroom;
  uint32_t n = 0;    /* datagrams reported */
  uint32_t slot = 0; /* slots used (== n without offsets) */
  int transient_budget = 8; /* a pending socket error is consumed by one call; bound the retries anyway */
  while (n < max && slot < max) {
    uint32_t want = max - slot;
    if (u->gro) {
      uint32_t room = max - n;
      if (room < TG_GRO_SEGMENTS && n > 0) break; /* the next message might not fit */
      uint32_t fit = room / TG_GRO_SEGMENTS;
      if (want > fit) want = fit > 0 ? fit : 1;
    }
    if (want > TG_MMSG_CHUNK) want = TG_MMSG_CHUNK;
    for (uint32_t k = 0; k < want; k++) {
      u->b->iov[k].iov_base = slab + (size_t)(slot + k) * slot_size + headroom;
      u->b->iov[k].iov_len = cap;
      memset(&u->b->msgs[k], 0, sizeof u->b->msgs[k]);
      u->b->msgs[k].msg_hdr.msg_name = &u->b->names[k];
      u->b->msgs[k].msg_hdr.msg_namelen = sizeof u->b->names[k];
      u->b->msgs[k].msg_hdr.msg_iov = &u->b->iov[k];
      u->b->msgs[k].msg_hdr.msg_iovlen = 1;
      u->b->msgs[k].msg_hdr.msg_control = u->b->ctrl[k].buf;
      u->b->msgs[k].msg_hdr.msg_controllen = sizeof u->b->ctrl[k].buf;
    }
    int r = recvmmsg(io->fd, u->b->msgs, want, MSG_DONTWAIT, NULL);
    if (r < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN) break;
      if (rx_transient(err) && transient_budget-- > 0) {
        tg_io_count_drop(&io->stats, &io->stats.rx_errors, err);
        continue;
      }
      if (n > 0) break;
      return tg_throw_errno(env, err, "recvmmsg");
    }
    struct timespec now = {0, 0};
    if (u->max_age_ns != 0) clock_gettime(CLOCK_REALTIME, &now);
    for (uint32_t k = 0; k < (uint32_t)r; k++) {
      if (u->b->msgs[k].msg_hdr.msg_flags & MSG_TRUNC) {
        tg_io_count_drop(&io->stats, &io->stats.rx_truncated, EMSGSIZE);
        continue;
      }
      uint32_t len = u->b->msgs[k].msg_len;
      if (u->max_age_ns != 0 && rx_is_stale(&u->b->msgs[k].msg_hdr, &now, u->max_age_ns)) {
        uint32_t seg = u->gro ? read_gro_size(&u->b->msgs[k].msg_hdr) : 0;
        io->stats.rx_stale += seg == 0 || seg >= len ? 1 : (len + seg - 1) / seg;
        continue;
      }
      if (offsets == NULL) {
        if (n != slot + k) memmove(slab + (size_t)n * slot_size + headroom, u->b->iov[k].iov_base, len);
        lengths[n] = len;
        uint8_t *ep = eps + (size_t)n * TG_EP_SIZE;
        tg_ep_from_sockaddr(&u->b->names[k], ep);
        read_source(&u->b->msgs[k].msg_hdr, ep);
        n++;
        continue;
      }
      uint32_t seg = u->gro ? read_gro_size(&u->b->msgs[k].msg_hdr) : 0;
      if (seg == 0 || seg > len) seg = len;
      uint32_t at = (uint32_t)((size_t)(slot + k) * slot_size + headroom);
      const uint8_t *first = NULL;
      uint32_t off = 0;
      do {
        if (n >= max) {
          /* A run longer than the batch's entries: the rest is dropped and counted. */
          uint32_t left = (len - off + seg - 1) / seg;
          tg_io_count_drop(&io->stats, &io->stats.rx_truncated, EMSGSIZE);
          io->stats.rx_truncated += left - 1;
          break;
        }
        uint32_t l = len - off < seg ? len - off : seg;
        offsets[n] = at + off;
        lengths[n] = l;
        uint8_t *ep = eps + (size_t)n * TG_EP_SIZE;
        if (first == NULL) {
          tg_ep_from_sockaddr(&u->b->names[k], ep);
          read_source(&u->b->msgs[k].msg_hdr, ep);
          first = ep;
        } else {
          memcpy(ep, first, TG_EP_SIZE);
        }
        n++;
        off += l;
      } while (off < len);
    }
    slot = offsets == NULL ? n : slot + (uint32_t)r;
    if ((uint32_t)r < want) break; /* the queue is drained */
  }
  return tg_uint(env, n);
}

/* sendBatch(slab, offsets, lengths, endpoints, count) -> datagrams sent.
 * Packet i is slab[offsets[i] .. +lengths[i]) sent to the endpoint record i (from its
 * source address when the record has one). */
static napi_value udp_send_batch(napi_env env, napi_callback_info info) {
  napi_value argv[5], this_arg;
  if (!tg_arg_count(env, info, 5, argv, &this_arg)) return NULL;
  uint8_t *slab, *eps;
  size_t slab_len, offsets_len, lengths_len, eps_len;
  uint32_t *offsets, *lengths, count;
  if (!tg_arg_bytes(env, argv[0], "slab", &slab, &slab_len) ||
      !tg_arg_u32array(env, argv[1], "offsets", &offsets, &offsets_len) ||
      !tg_arg_u32array(env, argv[2], "lengths", &lengths, &lengths_len) ||
      !tg_arg_bytes(env, argv[3], "endpoints", &eps, &eps_len) || !tg_arg_u32(env, argv[4], "count", &count) ||
      !tg_check_extents(env, slab_len, offsets, offsets_len, lengths, lengths_len, count))
    return NULL;
  if ((uint64_t)count * TG_EP_SIZE > eps_len)
    return tg_throw_range(env, "endpoints must hold count (%u) x %d bytes, has %zu", count, TG_EP_SIZE, eps_len);
  for (uint32_t i = 0; i < count; i++)
    if (!check_endpoint(env, eps + (size_t)i * TG_EP_SIZE, "endpoint", i)) return NULL;
  tg_io *io = tg_io_unwrap(env, this_arg, TG_KIND_UDP, "sendmmsg");
  if (io == NULL) return NULL;
  tg_udp *u = (tg_udp *)io;
  const uint8_t *msg_ep[TG_MMSG_CHUNK];

  uint32_t sent = 0, i = 0;
  while (i < count) {
    uint32_t m = 0; /* messages built for this chunk */
    uint32_t k = 0; /* iovecs used: one per packet */
    uint32_t seg_size = 0, run_bytes = 0;
    bool run_open = false; /* the last message may take more segments */
    const uint8_t *run_ep = NULL;
    for (; i < count && k < TG_MMSG_CHUNK; i++) {
      const uint8_t *ep = eps + (size_t)i * TG_EP_SIZE;
      uint32_t len = lengths[i];
      u->b->iov[k].iov_base = slab + offsets[i];
      u->b->iov[k].iov_len = len;
      if (u->gso && run_open && len > 0 && len <= seg_size && seg_size < u->gso_refused_size &&
          u->b->segs[m - 1] < TG_GSO_MAX_SEGMENTS &&
          run_bytes + len <= TG_GSO_MAX_BYTES && memcmp(ep, run_ep, TG_EP_SIZE) == 0) {
        u->b->msgs[m - 1].msg_hdr.msg_iovlen++;
        u->b->segs[m - 1]++;
        run_bytes += len;
        run_open = len == seg_size; /* a shorter segment ends the run */
        k++;
        continue;
      }
      unsigned sa_len = tg_ep_to_sockaddr(ep, u->family, &u->b->names[m]);
      if (sa_len == 0) {
        tg_io_count_drop(&io->stats, &io->stats.tx_rejected, EAFNOSUPPORT);
        run_open = false;
        continue;
      }
      memset(&u->b->msgs[m], 0, sizeof u->b->msgs[m]);
      u->b->msgs[m].msg_hdr.msg_name = &u->b->names[m];
      u->b->msgs[m].msg_hdr.msg_namelen = sa_len;
      u->b->msgs[m].msg_hdr.msg_iov = &u->b->iov[k];
      u->b->msgs[m].msg_hdr.msg_iovlen = 1;
      u->b->segs[m] = 1;
      msg_ep[m] = ep;
      seg_size = len;
      run_bytes = len;
      run_ep = ep;
      run_open = len > 0;
      m++;
      k++;
    }
    /* Messages of more than one segment carry the segment size, and messages to an
     * endpoint with a source carry the source. */
    for (uint32_t j = 0; j < m; j++) build_control(u, j, msg_ep[j], true);
    uint32_t at = 0;
    while (at < m) {
      /* sendmmsg stops at the first failing message: it returns the count before it, and
       * the next call (starting at that message) returns its error. */
      bool begun = tg_wake_here_begin();
      int r = sendmmsg(io->fd, u->b->msgs + at, m - at, MSG_DONTWAIT);
      int saved = errno;
      tg_wake_here_end(begun);
      errno = saved;
      if (r > 0) {
        for (int j = 0; j < r; j++) sent += u->b->segs[at + (uint32_t)j];
        at += (uint32_t)r;
        continue;
      }
      int err = r == 0 ? EAGAIN : errno;
      if (err == EINTR) continue;
      if ((err == EINVAL || err == EADDRNOTAVAIL || err == ENETUNREACH) && msg_ep[at] != NULL &&
          (msg_ep[at][TG_EP_FLAGS] & TG_EP_HAS_SOURCE) != 0) {
        /* The source address is no longer usable here: let the kernel choose one. The
         * endpoint record is the caller's copy; the engine learns the new source from the
         * peer's next datagram. */
        build_control(u, at, msg_ep[at], false);
        msg_ep[at] = NULL; /* retried once: a second failure takes the paths below */
        continue;
      }
      if (err == EAGAIN) {
        /* The send buffer is full: every later packet in this call would fail too. */
        uint32_t left = count - i;
        for (uint32_t j = at; j < m; j++) left += u->b->segs[j];
        io->stats.tx_dropped += left;
        io->stats.last_errno = err;
        return tg_uint(env, sent);
      }
      if (u->b->segs[at] > 1 && (err == EIO || err == EINVAL || err == ENOPROTOOPT || err == EOPNOTSUPP)) {
        /* The kernel or the route's device cannot segment: send this run packet by packet
         * and keep to single datagrams from now on. EINVAL is also the answer for segments
         * larger than the route's MTU: then only runs of this size or larger stay unsegmented. */
        uint32_t size = (uint32_t)u->b->msgs[at].msg_hdr.msg_iov[0].iov_len;
        if (err == EINVAL && size > 1200)
          u->gso_refused_size = size < u->gso_refused_size ? size : u->gso_refused_size;
        else
          u->gso = false;
        /* The single datagrams keep the source address (when it was not refused already). */
        uint16_t segs = u->b->segs[at];
        u->b->segs[at] = 1;
        build_control(u, at, msg_ep[at], true);
        u->b->segs[at] = segs;
        struct msghdr one = u->b->msgs[at].msg_hdr;
        one.msg_iovlen = 1;
        for (uint32_t j = 0; j < u->b->segs[at]; j++) {
          one.msg_iov = &u->b->msgs[at].msg_hdr.msg_iov[j];
          ssize_t w;
          do w = sendmsg(io->fd, &one, MSG_DONTWAIT);
          while (w < 0 && errno == EINTR);
          if (w >= 0) sent++;
          else tg_io_count_drop(&io->stats, &io->stats.tx_dropped, errno);
        }
        at++;
        continue;
      }
      uint32_t lost = u->b->segs[at];
      if (err == ENOBUFS) {
        tg_io_count_drop(&io->stats, &io->stats.tx_dropped, err);
        io->stats.tx_dropped += lost - 1;
      } else if (tx_rejected(err)) {
        tg_io_count_drop(&io->stats, &io->stats.tx_rejected, err);
        io->stats.tx_rejected += lost - 1;
      } else {
        return tg_throw_errno(env, err, "sendmmsg");
      }
      at++; /* skip the failed message */
    }
  }
  return tg_uint(env, sent);
}

/* The preamble of an option accessor: the UDP handle `this` and, when the first argument is
 * given (not undefined), that argument in *arg. Returns the handle, or NULL with an exception
 * pending. */
static tg_udp *udp_option_call(napi_env env, napi_callback_info info, const char *what, napi_value *arg) {
  size_t argc = 1;
  napi_value argv[1], this_arg;
  *arg = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, &this_arg, NULL) != napi_ok) return NULL;
  tg_io *io = tg_io_unwrap(env, this_arg, TG_KIND_UDP, what);
  if (io == NULL) return NULL;
  if (argc >= 1) {
    napi_valuetype t;
    napi_typeof(env, argv[0], &t);
    if (t != napi_undefined) *arg = argv[0];
  }
  return (tg_udp *)io;
}

/* segmentation(enable?: boolean) -> whether sends use UDP_SEGMENT. With an argument, turns
 * it on or off first (on is a request: the first refusal by the kernel turns it off). */
static napi_value udp_segmentation(napi_env env, napi_callback_info info) {
  napi_value arg;
  tg_udp *u = udp_option_call(env, info, "segmentation", &arg);
  if (u == NULL) return NULL;
  if (arg != NULL) {
    bool on;
    if (!tg_arg_bool(env, arg, "enable", &on)) return NULL;
    u->gso = on;
  }
  napi_value v;
  napi_get_boolean(env, u->gso, &v);
  return v;
}

/* receiveOffload(enable?: boolean) -> whether UDP_GRO is on (see recvBatch). With an
 * argument, turns it on or off first; a kernel that refuses leaves it off. */
static napi_value udp_receive_offload(napi_env env, napi_callback_info info) {
  napi_value arg;
  tg_udp *u = udp_option_call(env, info, "receiveOffload", &arg);
  if (u == NULL) return NULL;
  if (arg != NULL) {
    bool on;
    if (!tg_arg_bool(env, arg, "enable", &on)) return NULL;
    int v = on ? 1 : 0;
    if (setsockopt(u->io.fd, SOL_UDP, UDP_GRO, &v, sizeof v) == 0) u->gro = on;
    else if (!on) u->gro = false;
  }
  napi_value v;
  napi_get_boolean(env, u->gro, &v);
  return v;
}

/* receiveMaxAge(ms?: number) -> the limit in ms (0: none). With an argument, sets it first:
 * datagrams that waited longer in the receive queue are dropped and counted (rxStale). The
 * kernel stamps datagrams (SO_TIMESTAMPNS) only while a limit is set. */
static napi_value udp_receive_max_age(napi_env env, napi_callback_info info) {
  napi_value arg;
  tg_udp *u = udp_option_call(env, info, "receiveMaxAge", &arg);
  if (u == NULL) return NULL;
  if (arg != NULL) {
    uint32_t ms;
    if (!tg_arg_u32(env, arg, "ms", &ms)) return NULL;
    int v = ms > 0 ? 1 : 0;
    if (setsockopt(u->io.fd, SOL_SOCKET, SO_TIMESTAMPNS, &v, sizeof v) != 0)
      return tg_throw_errno(env, errno, "setsockopt SO_TIMESTAMPNS");
    u->max_age_ns = (uint64_t)ms * 1000000ULL;
  }
  return tg_uint(env, u->max_age_ns / 1000000ULL);
}

napi_value tg_init_udp(napi_env env, napi_value exports) {
  napi_property_descriptor props[14];
  size_t n = 0;
  for (size_t i = 0; i < tg_io_props_count; i++) props[n++] = tg_io_props[i];
  props[n++] = (napi_property_descriptor){"recvBatch", NULL, udp_recv_batch, NULL, NULL, NULL, napi_default, NULL};
  props[n++] = (napi_property_descriptor){"sendBatch", NULL, udp_send_batch, NULL, NULL, NULL, napi_default, NULL};
  props[n++] = (napi_property_descriptor){"localEndpoint", NULL, udp_local_endpoint, NULL, NULL, NULL, napi_default, NULL};
  props[n++] = (napi_property_descriptor){"bufferSizes", NULL, udp_buffer_sizes, NULL, NULL, NULL, napi_default, NULL};
  props[n++] = (napi_property_descriptor){"segmentation", NULL, udp_segmentation, NULL, NULL, NULL, napi_default, NULL};
  props[n++] =
      (napi_property_descriptor){"receiveOffload", NULL, udp_receive_offload, NULL, NULL, NULL, napi_default, NULL};
  props[n++] =
      (napi_property_descriptor){"receiveMaxAge", NULL, udp_receive_max_age, NULL, NULL, NULL, napi_default, NULL};
  napi_value cls;
  if (napi_define_class(env, "UdpHandle", NAPI_AUTO_LENGTH, udp_new, NULL, n, props, &cls) != napi_ok) return NULL;
  napi_set_named_property(env, exports, "UdpHandle", cls);
  return exports;
}
