/* tenguard native I/O layer: shared declarations.
 *
 * The addon does only what Node has no API for: TUN ioctls, batched socket I/O
 * (recvmmsg/sendmmsg), fd readiness on the event loop without a threadpool round trip,
 * batched ChaCha20-Poly1305 with the OpenSSL inside the node binary, and prctl.
 * Every entry point validates its arguments before touching memory and throws a
 * TypeError/RangeError on bad input; system call failures become Errors whose .code is
 * the errno name (EBADFD, EIO, ...), as Node's own system errors do. */
#ifndef TG_NATIVE_H
#define TG_NATIVE_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/virtio_net.h>
#include <sys/types.h>
#include <uv.h>

/* Endpoint wire format shared with src/native/endpoint.ts: [0]=family (4|6), [1]=flags,
 * [2..3]=port big-endian, [4..19]=remote address (IPv4 in 4..7, rest zero),
 * [20..35]=local address of the same family, valid when flags has TG_EP_HAS_SOURCE.
 * On receive the local address is the one the datagram was sent to; on send it is the
 * source address asked of the kernel (the "sticky" source WireGuard replies from). */
#define TG_EP_SIZE 36
#define TG_EP_FAMILY 0
#define TG_EP_FLAGS 1
#define TG_EP_PORT 2
#define TG_EP_ADDR 4
#define TG_EP_SOURCE 20
#define TG_EP_HAS_SOURCE 0x01

/* Messages handed to one recvmmsg/sendmmsg call. Larger batches are served in chunks of
 * this size; 256 keeps the per-socket arrays small (about 28 KiB) and well under
 * UIO_MAXIOV. */
#define TG_MMSG_CHUNK 256

/* Counted drops. Packets the kernel could not take or hand over are counted here instead
 * of being thrown, so one bad packet never stops a batch. */
typedef struct tg_stats {
  uint64_t rx_truncated; /* longer than a slot: dropped */
  uint64_t rx_errors;    /* transient receive errors (e.g. ICMP reported on the socket) */
  uint64_t rx_stale;     /* UDP: waited in the receive queue longer than the socket's max age: dropped */
  uint64_t tx_dropped;   /* EAGAIN/ENOBUFS: no room in a kernel queue */
  uint64_t tx_rejected;  /* refused for this packet only (EINVAL, EMSGSIZE, unreachable...) */
  int last_errno;        /* errno behind the most recent counted drop, 0 if none */
  uint64_t tx_merged_packets;  /* TUN: segments written inside a coalesced packet */
  uint64_t tx_merged_writes;   /* TUN: coalesced packets written */
  uint64_t rx_split_packets;   /* TUN: segments cut from super-packets read */
  uint64_t rx_split_reads;     /* TUN: super-packets read */
} tg_stats;

typedef enum { TG_KIND_TUN = 1, TG_KIND_UDP = 2 } tg_kind;

/* An fd the addon owns plus its readiness watcher. Embedded first in tg_tun/tg_udp. */
typedef struct tg_io {
  napi_env env;
  tg_kind kind;
  int fd;                 /* -1 once closed */
  uv_poll_t *poll;        /* created on first start(); libuv frees it via the close callback */
  bool polling;           /* poll started and not stopped/failed since */
  napi_ref self;          /* the JS wrapper: weak, but strong while polling so it is not collected */
  napi_ref callback;      /* JS readiness callback (err | null) */
  napi_async_context async;
  napi_async_cleanup_hook_handle cleanup; /* closes the fd and handle if the env ends first */
  /* The kind's working buffers (tens of KB), freed when the fd is closed rather than when
   * the wrapper is collected: V8 does not see this memory, so a closed handle would keep
   * it until some unrelated collection (RSS grew with every device created and deleted). */
  void *bufs;
  tg_stats stats;
} tg_io;

/* --- coalesce.c: TUN with virtio_net_hdr ------------------------------------------------- */

/* Writes count packets (TCP segments coalesced when `coalesce`); returns how many were
 * written (refused ones are counted drops). A fatal error sets *fatal to its errno. */
uint32_t tg_tun_write_vnet(tg_io *io, uint8_t *slab, const uint32_t *offsets, const uint32_t *lengths,
                           uint32_t count, bool coalesce, int *fatal);
/* A TUN's read state with vnet headers: the packet last read, whole, and how far it has
 * been handed out (a TCP super-packet is cut into `count` segments). */
#define TG_VNET_BUF 65536
typedef struct tg_vnet {
  struct virtio_net_hdr vh;
  uint32_t len;      /* bytes in buf */
  uint32_t count;    /* segments (1 for a plain packet) */
  uint32_t next;     /* next segment to hand out; count when nothing is pending */
  uint16_t gso_size; /* 0 for a plain packet */
  uint16_t ip_len, hdr_len;
  bool v6;
  uint8_t buf[TG_VNET_BUF];
} tg_vnet;

/* Reads up to max packets into slots (cutting super-packets); returns how many, or -1 with
 * errno when the first read fails. */
int64_t tg_tun_read_vnet_batch(tg_io *io, tg_vnet *v, uint8_t *slab, uint32_t slot_size, uint32_t headroom,
                               uint32_t max, uint32_t *lengths);

/* --- util.c: argument checks and errors --------------------------------------------- */

/* Each tg_arg_* returns false after throwing a TypeError/RangeError naming `what`. */
bool tg_arg_count(napi_env env, napi_callback_info info, size_t want, napi_value *argv, napi_value *this_arg);
bool tg_arg_bytes(napi_env env, napi_value v, const char *what, uint8_t **data, size_t *len);
/* Like tg_arg_bytes without throwing (for per-element checks that name their own index). */
bool tg_get_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len);
bool tg_arg_u32array(napi_env env, napi_value v, const char *what, uint32_t **data, size_t *len);
bool tg_arg_u32(napi_env env, napi_value v, const char *what, uint32_t *out);
bool tg_arg_bool(napi_env env, napi_value v, const char *what, bool *out);

/* Checks the slot layout of a batched read: `max` slots of `slot_size` bytes fit in the
 * slab, headroom leaves room for data, and `lengths` has max entries. */
bool tg_check_slots(napi_env env, size_t slab_len, uint32_t slot_size, uint32_t headroom, uint32_t max,
                    size_t lengths_len);
/* Checks that count entries exist and every [offsets[i], offsets[i]+lengths[i]) lies in the slab. */
bool tg_check_extents(napi_env env, size_t slab_len, const uint32_t *offsets, size_t offsets_len,
                      const uint32_t *lengths, size_t lengths_len, uint32_t count);

napi_value tg_errno_error(napi_env env, int err, const char *syscall);
napi_value tg_throw_errno(napi_env env, int err, const char *syscall);
napi_value tg_throw_type(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
napi_value tg_throw_range(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
napi_value tg_throw_plain(napi_env env, const char *code, const char *msg);
napi_value tg_undefined(napi_env env);
napi_value tg_uint(napi_env env, uint64_t v);

/* --- io.c: fd ownership, readiness, close ------------------------------------------ */

/* Wraps `obj` around io (io->kind, io->fd set by the caller) and registers cleanup. */
bool tg_io_attach(napi_env env, napi_value obj, tg_io *io);
/* Unwraps this_arg as a tg_io of `kind` (0 = any) that is still open; throws otherwise. */
tg_io *tg_io_unwrap(napi_env env, napi_value this_arg, tg_kind kind, const char *syscall);
void tg_io_count_drop(tg_stats *s, uint64_t *counter, int err);
/* Property descriptors shared by both classes: fd, start, stop, close, stats. */
extern const napi_property_descriptor tg_io_props[];
extern const size_t tg_io_props_count;
extern const napi_type_tag tg_tag_tun;
extern const napi_type_tag tg_tag_udp;

/* --- endpoint.c ----------------------------------------------------------------------- */

/* Fills `sa` from an endpoint's remote part for a socket of `sock_family`. Returns the sockaddr
 * length, or 0 when the endpoint cannot be reached from that socket (IPv6 on AF_INET). */
unsigned tg_ep_to_sockaddr(const uint8_t *ep, int sock_family, void *sa);
/* Writes an endpoint (no source); IPv4-mapped IPv6 addresses come out as family 4. */
void tg_ep_from_sockaddr(const void *sa, uint8_t *ep);
/* Records the local address `addr` (4 or 16 bytes, the endpoint's family) as its source;
 * an address of the other family is ignored. */
void tg_ep_set_source(uint8_t *ep, const void *addr, size_t len);

/* --- crypto_pool.c: large AEAD batches on several threads ------------------------------ */

/* Parts per batch at most (the calling thread plus worker threads). */
#define TG_POOL_MAX_THREADS 16
/* A batch is split only into parts of at least this many bytes: smaller ones stay inline. */
#define TG_POOL_MIN_PART_BYTES (16 * 1024)
struct evp_cipher_ctx_st;
/* Processes items [from, to) of `job` with the given cipher context; false on a crypto failure. */
typedef bool (*tg_pool_fn)(struct evp_cipher_ctx_st *ctx, const void *job, uint32_t from, uint32_t to);
/* Runs fn over [0, count) of job (`bytes` in all), split across the pool when it is large
 * enough, else inline with ctx; returns false if any part failed. */
bool tg_pool_run(tg_pool_fn fn, const void *job, uint32_t count, uint64_t bytes, struct evp_cipher_ctx_st *ctx);

/* --- module parts --------------------------------------------------------------------- */

napi_value tg_init_tun(napi_env env, napi_value exports);
napi_value tg_init_udp(napi_env env, napi_value exports);
napi_value tg_init_aead(napi_env env, napi_value exports);
napi_value tg_init_crypto_pool(napi_env env, napi_value exports);
napi_value tg_init_process(napi_env env, napi_value exports);
napi_value tg_init_secret(napi_env env, napi_value exports);
napi_value tg_init_slab(napi_env env, napi_value exports);
napi_value tg_init_busypoll(napi_env env, napi_value exports);
napi_value tg_init_wake(napi_env env, napi_value exports);
/* Wake placement (wake.c): around a send that may wake a local peer; begin returns whether
 * it switched, end takes that answer. */
bool tg_wake_here_begin(void);
void tg_wake_here_end(bool begun);

#endif
