/* TUN device: open by name (TUNSETIFF), batched non-blocking read and write.
 *
 * Layer 3 only (IFF_TUN) and without the 4-byte packet-information prefix (IFF_NO_PI),
 * so every read returns one bare IP packet (with vnetHdr, the virtio_net_hdr is read and
 * written by coalesce.c and never seen by JS). Link settings (MTU, address, up) are done
 * with `ip` by the caller.
 *
 * Errors: EAGAIN ends a read batch; EAGAIN/ENOBUFS on write are counted drops; a write
 * the kernel refuses for that packet alone (EINVAL: not IPv4/IPv6; EMSGSIZE) is a counted
 * rejection. Anything else means the device is unusable and is thrown with its errno name:
 *   EBADFD  the interface was deleted (`ip link del`) or the queue was detached
 *   EIO     write while the interface is administratively down
 *   EBADF   the handle was closed */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tg.h"

typedef struct tg_tun {
  tg_io io; /* first: freed as one block by io.c */
  bool vnet;     /* IFF_VNET_HDR: packets carry a virtio_net_hdr (coalesce.c) */
  bool coalesce; /* with vnet: writes coalesce TCP segments */
  tg_vnet *rx;   /* with vnet: read state (== io.bufs, freed at close) */
  bool channel;  /* a seqpacketPair() end: read with recv(MSG_TRUNC) for the full length */
} tg_tun;

/* Wraps fd (already non-blocking) as a TUN handle named `name`; takes the fd, also on failure. */
static napi_value tun_attach(napi_env env, napi_value this_arg, int fd, bool vnet_hdr, bool channel, const char *name) {
  tg_tun *t = calloc(1, sizeof *t);
  tg_vnet *rx = vnet_hdr ? calloc(1, sizeof *rx) : NULL;
  if (t == NULL || (vnet_hdr && rx == NULL)) {
    close(fd);
    free(t);
    free(rx);
    return tg_throw_errno(env, ENOMEM, "tun");
  }
  t->io.kind = TG_KIND_TUN;
  t->io.fd = fd;
  t->io.bufs = rx;
  t->vnet = vnet_hdr;
  t->coalesce = vnet_hdr;
  t->rx = rx;
  t->channel = channel;
  if (!tg_io_attach(env, this_arg, &t->io)) {
    close(fd);
    free(rx);
    free(t);
    return NULL;
  }
  napi_value actual;
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &actual);
  napi_property_descriptor name_prop = {"name", NULL, NULL, NULL, NULL, actual, napi_enumerable, NULL};
  napi_define_properties(env, this_arg, 1, &name_prop);
  return this_arg;
}

/* new TunHandle(fd, false, false) with an fd from seqpacketPair(): one end of an in-process
 * packet channel read and written exactly as a TUN device without vnetHdr (one packet per
 * read and write), named "". Only an AF_UNIX SOCK_SEQPACKET socket is taken. */
static napi_value tun_adopt(napi_env env, napi_value this_arg, napi_value fd_v, bool multi_queue, bool vnet_hdr) {
  int32_t fd;
  if (napi_get_value_int32(env, fd_v, &fd) != napi_ok || fd < 0) return tg_throw_type(env, "fd must be a non-negative integer");
  if (multi_queue || vnet_hdr) return tg_throw_range(env, "a packet channel has no queues and no vnet header");
  int type = 0, domain = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_SEQPACKET) return tg_throw_errno(env, ENOTSOCK, "adopt");
  len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX) return tg_throw_errno(env, ENOTSOCK, "adopt");
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return tg_throw_errno(env, errno, "fcntl");
  return tun_attach(env, this_arg, fd, false, true, "");
}

/* seqpacketPair() -> [fd, fd]: a connected AF_UNIX SOCK_SEQPACKET pair, non-blocking and
 * close-on-exec, for two TunHandles (new TunHandle(fd, false, false)), which own them. */
static napi_value tun_seqpacket_pair(napi_env env, napi_callback_info info) {
  (void)info;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
    return tg_throw_errno(env, errno, "socketpair");
  napi_value arr, a, b;
  napi_create_array_with_length(env, 2, &arr);
  napi_create_int32(env, fds[0], &a);
  napi_create_int32(env, fds[1], &b);
  napi_set_element(env, arr, 0, a);
  napi_set_element(env, arr, 1, b);
  return arr;
}

/* new TunHandle(name, multiQueue, vnetHdr): name may be "" or a pattern like "tg%d"; a number
 * instead of a name adopts a seqpacketPair() fd (tun_adopt). */
static napi_value tun_new(napi_env env, napi_callback_info info) {
  napi_value argv[3], this_arg;
  if (!tg_arg_count(env, info, 3, argv, &this_arg)) return NULL;
  napi_valuetype first;
  napi_typeof(env, argv[0], &first);
  if (first == napi_number) {
    bool mq, vh;
    if (!tg_arg_bool(env, argv[1], "multiQueue", &mq) || !tg_arg_bool(env, argv[2], "vnetHdr", &vh)) return NULL;
    return tun_adopt(env, this_arg, argv[0], mq, vh);
  }
  char name[IFNAMSIZ + 1];
  size_t name_len = 0;
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &name_len) != napi_ok)
    return tg_throw_type(env, "name must be a string");
  if (name_len >= IFNAMSIZ) return tg_throw_range(env, "interface name is longer than %d bytes", IFNAMSIZ - 1);
  napi_get_value_string_utf8(env, argv[0], name, sizeof name, &name_len);
  bool multi_queue, vnet_hdr;
  if (!tg_arg_bool(env, argv[1], "multiQueue", &multi_queue) || !tg_arg_bool(env, argv[2], "vnetHdr", &vnet_hdr))
    return NULL;

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return tg_throw_errno(env, errno, "open /dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, name, name_len);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (multi_queue ? IFF_MULTI_QUEUE : 0) | (vnet_hdr ? IFF_VNET_HDR : 0);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    return tg_throw_errno(env, err, "ioctl TUNSETIFF");
  }

  if (vnet_hdr) {
    /* Segmentation offload towards us: checksums and TCP super-packets (coalesce.c cuts
     * them). A kernel that refuses keeps sending plain packets, which is fine too. */
    unsigned off = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    if (ioctl(fd, TUNSETOFFLOAD, off) < 0) ioctl(fd, TUNSETOFFLOAD, 0);
  }
  /* The kernel's name: differs from the request when a pattern like "tg%d" was given. */
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  return tun_attach(env, this_arg, fd, vnet_hdr, false, ifr.ifr_name);
}

/* readBatch(slab, slotSize, headroom, max, lengths) -> count.
 * Packet i lands at slab[i*slotSize + headroom], lengths[i] = its length. Stops at EAGAIN
 * or max. A fatal error after some packets were read returns those first; the error comes
 * back on the next call (device errors persist). */
static napi_value tun_read_batch(napi_env env, napi_callback_info info) {
  napi_value argv[5], this_arg;
  if (!tg_arg_count(env, info, 5, argv, &this_arg)) return NULL;
  uint8_t *slab;
  size_t slab_len, lengths_len;
  uint32_t slot_size, headroom, max, *lengths;
  if (!tg_arg_bytes(env, argv[0], "slab", &slab, &slab_len) || !tg_arg_u32(env, argv[1], "slotSize", &slot_size) ||
      !tg_arg_u32(env, argv[2], "headroom", &headroom) || !tg_arg_u32(env, argv[3], "max", &max) ||
      !tg_arg_u32array(env, argv[4], "lengths", &lengths, &lengths_len) ||
      !tg_check_slots(env, slab_len, slot_size, headroom, max, lengths_len))
    return NULL;
  tg_io *io = tg_io_unwrap(env, this_arg, TG_KIND_TUN, "read");
  if (io == NULL) return NULL;

  tg_tun *t = (tg_tun *)io;
  if (t->vnet) {
    int64_t got = tg_tun_read_vnet_batch(io, t->rx, slab, slot_size, headroom, max, lengths);
    if (got < 0) return tg_throw_errno(env, errno, "read");
    return tg_uint(env, (uint64_t)got);
  }
  const size_t cap = slot_size - headroom;
  uint32_t n = 0;
  while (n < max) {
    uint8_t *at = slab + (size_t)n * slot_size + headroom;
    /* A channel end reports a longer packet's full length only when asked (MSG_TRUNC), as a
     * TUN device's read always does. */
    ssize_t r = t->channel ? recv(io->fd, at, cap, MSG_TRUNC) : read(io->fd, at, cap);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      if (n > 0) break;
      return tg_throw_errno(env, errno, "read");
    }
    /* A TUN device never reads 0 bytes; a packet channel does once its other end is closed. */
    if (r == 0) break;
    /* The kernel returns the packet's full length even when it copied only `cap` bytes. */
    if ((size_t)r > cap) {
      tg_io_count_drop(&io->stats, &io->stats.rx_truncated, EMSGSIZE);
      continue;
    }
    lengths[n++] = (uint32_t)r;
  }
  return tg_uint(env, n);
}

/* writeBatch(slab, offsets, lengths, count) -> packets written. */
static napi_value tun_write_batch(napi_env env, napi_callback_info info) {
  napi_value argv[4], this_arg;
  if (!tg_arg_count(env, info, 4, argv, &this_arg)) return NULL;
  uint8_t *slab;
  size_t slab_len, offsets_len, lengths_len;
  uint32_t *offsets, *lengths, count;
  if (!tg_arg_bytes(env, argv[0], "slab", &slab, &slab_len) ||
      !tg_arg_u32array(env, argv[1], "offsets", &offsets, &offsets_len) ||
      !tg_arg_u32array(env, argv[2], "lengths", &lengths, &lengths_len) ||
      !tg_arg_u32(env, argv[3], "count", &count) ||
      !tg_check_extents(env, slab_len, offsets, offsets_len, lengths, lengths_len, count))
    return NULL;
  tg_io *io = tg_io_unwrap(env, this_arg, TG_KIND_TUN, "write");
  if (io == NULL) return NULL;
  tg_tun *t = (tg_tun *)io;
  if (t->vnet) {
    int fatal = 0;
    uint32_t w = tg_tun_write_vnet(io, slab, offsets, lengths, count, t->coalesce, &fatal);
    if (fatal != 0 && w == 0) return tg_throw_errno(env, fatal, "writev");
    return tg_uint(env, w);
  }

  uint32_t written = 0;
  for (uint32_t i = 0; i < count; i++) {
    ssize_t r;
    do r = write(io->fd, slab + offsets[i], lengths[i]);
    while (r < 0 && errno == EINTR);
    if (r >= 0) {
      written++;
      continue;
    }
    int err = errno;
    if (err == EAGAIN || err == ENOBUFS) {
      tg_io_count_drop(&io->stats, &io->stats.tx_dropped, err);
    } else if (err == EINVAL || err == EMSGSIZE) {
      tg_io_count_drop(&io->stats, &io->stats.tx_rejected, err);
    } else {
      return tg_throw_errno(env, err, "write");
    }
  }
  return tg_uint(env, written);
}

/* coalescing(enable?: boolean) -> whether writes coalesce TCP segments (IFF_VNET_HDR only). */
static napi_value tun_coalescing(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], this_arg;
  if (napi_get_cb_info(env, info, &argc, argv, &this_arg, NULL) != napi_ok) return NULL;
  tg_io *io = tg_io_unwrap(env, this_arg, TG_KIND_TUN, "coalescing");
  if (io == NULL) return NULL;
  tg_tun *t = (tg_tun *)io;
  if (argc >= 1) {
    napi_valuetype type;
    napi_typeof(env, argv[0], &type);
    if (type != napi_undefined) {
      bool on;
      if (!tg_arg_bool(env, argv[0], "enable", &on)) return NULL;
      if (on && !t->vnet) return tg_throw_range(env, "coalescing needs a TUN opened with vnetHdr");
      t->coalesce = on;
    }
  }
  napi_value v;
  napi_get_boolean(env, t->coalesce, &v);
  return v;
}

/* mergeStats() -> {packets, writes, splitPackets, splitReads}: segments written inside
 * coalesced packets and those packets; segments cut from super-packets read and those reads. */
static napi_value tun_merge_stats(napi_env env, napi_callback_info info) {
  napi_value this_arg, o;
  if (!tg_arg_count(env, info, 0, NULL, &this_arg)) return NULL;
  tg_io *io = tg_io_unwrap(env, this_arg, TG_KIND_TUN, "mergeStats");
  if (io == NULL) return NULL;
  napi_create_object(env, &o);
  napi_set_named_property(env, o, "packets", tg_uint(env, io->stats.tx_merged_packets));
  napi_set_named_property(env, o, "writes", tg_uint(env, io->stats.tx_merged_writes));
  napi_set_named_property(env, o, "splitPackets", tg_uint(env, io->stats.rx_split_packets));
  napi_set_named_property(env, o, "splitReads", tg_uint(env, io->stats.rx_split_reads));
  return o;
}

napi_value tg_init_tun(napi_env env, napi_value exports) {
  napi_property_descriptor props[12];
  size_t n = 0;
  for (size_t i = 0; i < tg_io_props_count; i++) props[n++] = tg_io_props[i];
  props[n++] = (napi_property_descriptor){"readBatch", NULL, tun_read_batch, NULL, NULL, NULL, napi_default, NULL};
  props[n++] = (napi_property_descriptor){"writeBatch", NULL, tun_write_batch, NULL, NULL, NULL, napi_default, NULL};
  props[n++] = (napi_property_descriptor){"coalescing", NULL, tun_coalescing, NULL, NULL, NULL, napi_default, NULL};
  props[n++] = (napi_property_descriptor){"mergeStats", NULL, tun_merge_stats, NULL, NULL, NULL, napi_default, NULL};
  napi_value cls;
  if (napi_define_class(env, "TunHandle", NAPI_AUTO_LENGTH, tun_new, NULL, n, props, &cls) != napi_ok) return NULL;
  napi_set_named_property(env, exports, "TunHandle", cls);
  napi_value pair;
  if (napi_create_function(env, "seqpacketPair", NAPI_AUTO_LENGTH, tun_seqpacket_pair, NULL, &pair) != napi_ok) return NULL;
  napi_set_named_property(env, exports, "seqpacketPair", pair);
  return exports;
}
