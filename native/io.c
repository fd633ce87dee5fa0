/* One owned fd and its readiness watcher, shared by the TUN and UDP classes.
 *
 * Readiness uses uv_poll on the fd in Node's own event loop: the kernel wakes the loop,
 * the JS callback runs and drains the fd with batched reads until they return 0. No
 * thread pool round trip, no busy loop (uv_poll is level-triggered, so a callback that
 * stops draining early is simply called again on the next loop turn).
 *
 * Lifetime rules:
 *  - the JS wrapper is held strongly only while polling, so an idle, unreferenced handle
 *    can be collected; its finalizer closes the fd;
 *  - close() hands the uv_poll_t to uv_close() (libuv frees it in the close callback, so
 *    no handle dangles) and then closes the fd, which libuv allows once uv_close() was
 *    called, and frees the kind's buffers; it is idempotent;
 *  - an async env cleanup hook closes both if the environment (e.g. a worker) ends first. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tg.h"

/* Type tags ("tenguard" + "tun"/"udp") stop one class's methods from unwrapping the other. */
const napi_type_tag tg_tag_tun = {0x74656e6775617264ULL, 0x000000000074756eULL};
const napi_type_tag tg_tag_udp = {0x74656e6775617264ULL, 0x0000000000756470ULL};

void tg_io_count_drop(tg_stats *s, uint64_t *counter, int err) {
  (*counter)++;
  s->last_errno = err;
}

/* Close callback: in normal operation data is NULL; when the env cleanup hook closed the
 * handle, data carries the hook handle, which must be released only now. */
static void on_poll_closed(uv_handle_t *h) {
  napi_async_cleanup_hook_handle hook = h->data;
  free(h);
  if (hook != NULL) napi_remove_async_cleanup_hook(hook);
}

/* Releases the OS resources; touches no JS value, so it is usable from finalizers and
 * cleanup hooks. Returns true when a poll handle was handed to uv_close(). */
static bool release_os(tg_io *io, napi_async_cleanup_hook_handle hook_for_close) {
  bool closing = false;
  if (io->poll != NULL) {
    io->poll->data = hook_for_close;
    uv_close((uv_handle_t *)io->poll, on_poll_closed); /* also stops it */
    io->poll = NULL;
    closing = true;
  }
  io->polling = false;
  if (io->fd >= 0) {
    close(io->fd);
    io->fd = -1;
  }
  /* Every method that uses the buffers first refuses a closed handle (EBADF). */
  free(io->bufs);
  io->bufs = NULL;
  return closing;
}

static void on_env_cleanup(napi_async_cleanup_hook_handle hook, void *arg) {
  tg_io *io = arg;
  io->cleanup = NULL;
  if (!release_os(io, hook)) napi_remove_async_cleanup_hook(hook);
}

static void io_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  tg_io *io = data;
  release_os(io, NULL);
  if (io->cleanup != NULL) napi_remove_async_cleanup_hook(io->cleanup);
  if (io->callback != NULL) napi_delete_reference(env, io->callback);
  if (io->async != NULL) napi_async_destroy(env, io->async);
  napi_delete_reference(env, io->self);
  free(io); /* tg_io is the first member of the tg_tun/tg_udp allocation */
}

bool tg_io_attach(napi_env env, napi_value obj, tg_io *io) {
  io->env = env;
  const napi_type_tag *tag = io->kind == TG_KIND_TUN ? &tg_tag_tun : &tg_tag_udp;
  if (napi_type_tag_object(env, obj, tag) != napi_ok || napi_wrap(env, obj, io, io_finalize, NULL, &io->self) != napi_ok) {
    tg_throw_plain(env, "ERR_TG_NAPI", "cannot wrap the native handle");
    return false;
  }
  napi_add_async_cleanup_hook(env, on_env_cleanup, io, &io->cleanup);
  return true;
}

tg_io *tg_io_unwrap(napi_env env, napi_value this_arg, tg_kind kind, const char *syscall) {
  /* One tag lookup when the kind is known (every packet call): each is a property lookup. */
  bool ok = false;
  if (kind != TG_KIND_UDP) napi_check_object_type_tag(env, this_arg, &tg_tag_tun, &ok);
  if (!ok && kind != TG_KIND_TUN) napi_check_object_type_tag(env, this_arg, &tg_tag_udp, &ok);
  void *p = NULL;
  if (!ok || napi_unwrap(env, this_arg, &p) != napi_ok || p == NULL) {
    tg_throw_type(env, "receiver is not a native %s handle", kind == TG_KIND_TUN ? "TUN" : kind == TG_KIND_UDP ? "UDP" : "I/O");
    return NULL;
  }
  tg_io *io = p;
  if (syscall != NULL && io->fd < 0) {
    tg_throw_errno(env, EBADF, syscall); /* closed: the same answer the kernel gives */
    return NULL;
  }
  return io;
}

static void set_polling(tg_io *io, bool on) {
  if (io->polling == on) return;
  io->polling = on;
  uint32_t count;
  if (on)
    napi_reference_ref(io->env, io->self, &count);
  else
    napi_reference_unref(io->env, io->self, &count);
}

/* Transient errors that a UDP socket reports for an earlier datagram (ICMP); they do not
 * make the socket unusable. */
static bool udp_transient(int err) {
  return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH || err == EHOSTDOWN ||
         err == ENETDOWN || err == EPROTO || err == EMSGSIZE;
}

/* libuv turns POLLERR into a generic UV_EBADF and stops the watcher; ask the fd itself for
 * the real reason so JS sees the precise errno. */
static int poll_error_reason(tg_io *io, int status) {
  int err = -status;
  if (io->kind == TG_KIND_UDP) {
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr != 0) err = soerr;
  } else {
    /* A TUN fd reports POLLERR once its device is gone; a zero-length read returns the
     * reason (EBADFD) without consuming a packet. */
    if (read(io->fd, NULL, 0) < 0 && errno != EAGAIN) err = errno;
  }
  return err;
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  (void)events;
  tg_io *io = handle->data;
  if (io == NULL || io->callback == NULL) return;
  napi_env env = io->env;
  int err = 0;
  if (status < 0) {
    err = poll_error_reason(io, status);
    if (io->kind == TG_KIND_UDP && udp_transient(err)) {
      tg_io_count_drop(&io->stats, &io->stats.rx_errors, err);
      uv_poll_start(handle, UV_READABLE, on_poll); /* consumed by SO_ERROR; keep watching */
      return;
    }
  }

  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value self, cb, arg, result;
  /* A local handle to the wrapper keeps it (and io) alive through the callback even if
   * the callback closes it and drops the last reference. */
  napi_get_reference_value(env, io->self, &self);
  if (self == NULL) napi_get_undefined(env, &self);
  if (status < 0) {
    set_polling(io, false); /* libuv already stopped the watcher */
    arg = tg_errno_error(env, err, "poll");
  } else {
    napi_get_null(env, &arg);
  }
  napi_get_reference_value(env, io->callback, &cb);
  /* make_callback (not call_function) so that process.nextTick and promise jobs queued by
   * the callback run before control returns to libuv. */
  napi_status s = napi_make_callback(env, io->async, self, cb, 1, &arg, &result);
  if (s == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc); /* same as an exception thrown from an event handler */
  }
  napi_close_handle_scope(env, scope);
}

static napi_value js_fd(napi_env env, napi_callback_info info) {
  napi_value this_arg, r;
  if (!tg_arg_count(env, info, 0, NULL, &this_arg)) return NULL;
  tg_io *io = tg_io_unwrap(env, this_arg, 0, NULL);
  if (io == NULL) return NULL;
  napi_create_int32(env, io->fd, &r);
  return r;
}

/* start(callback): calls callback(null) whenever the fd is readable, callback(err) once
 * if readiness fails (the watcher is then stopped). Calling it again replaces the callback. */
static napi_value js_start(napi_env env, napi_callback_info info) {
  napi_value argv[1], this_arg;
  if (!tg_arg_count(env, info, 1, argv, &this_arg)) return NULL;
  tg_io *io = tg_io_unwrap(env, this_arg, 0, "poll");
  if (io == NULL) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  if (t != napi_function) return tg_throw_type(env, "callback must be a function");

  if (io->poll == NULL) {
    uv_loop_t *loop;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) return tg_throw_plain(env, "ERR_TG_NAPI", "no event loop");
    uv_poll_t *p = calloc(1, sizeof *p);
    if (p == NULL) return tg_throw_errno(env, ENOMEM, "poll");
    int r = uv_poll_init(loop, p, io->fd);
    if (r < 0) {
      free(p); /* a failed init registers nothing with the loop */
      return tg_throw_errno(env, -r, "uv_poll_init");
    }
    p->data = io;
    io->poll = p;
  }
  if (io->async == NULL) {
    napi_value name;
    napi_create_string_utf8(env, io->kind == TG_KIND_TUN ? "TenguardTunReadable" : "TenguardUdpReadable",
                            NAPI_AUTO_LENGTH, &name);
    if (napi_async_init(env, NULL, name, &io->async) != napi_ok)
      return tg_throw_plain(env, "ERR_TG_NAPI", "napi_async_init failed");
  }
  if (io->callback != NULL) napi_delete_reference(env, io->callback);
  napi_create_reference(env, argv[0], 1, &io->callback);
  int r = uv_poll_start(io->poll, UV_READABLE, on_poll);
  if (r < 0) return tg_throw_errno(env, -r, "uv_poll_start");
  set_polling(io, true);
  return tg_undefined(env);
}

/* stop(): no more callbacks until start() again. Safe on a stopped or closed handle. */
static napi_value js_stop(napi_env env, napi_callback_info info) {
  napi_value this_arg;
  if (!tg_arg_count(env, info, 0, NULL, &this_arg)) return NULL;
  tg_io *io = tg_io_unwrap(env, this_arg, 0, NULL);
  if (io == NULL) return NULL;
  if (io->poll != NULL) uv_poll_stop(io->poll);
  set_polling(io, false);
  return tg_undefined(env);
}

/* close(): stops readiness, releases the poll handle and the fd. Idempotent. */
static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value this_arg;
  if (!tg_arg_count(env, info, 0, NULL, &this_arg)) return NULL;
  tg_io *io = tg_io_unwrap(env, this_arg, 0, NULL);
  if (io == NULL) return NULL;
  set_polling(io, false);
  release_os(io, NULL);
  if (io->callback != NULL) {
    napi_delete_reference(env, io->callback);
    io->callback = NULL;
  }
  if (io->async != NULL) {
    napi_async_destroy(env, io->async);
    io->async = NULL;
  }
  if (io->cleanup != NULL) {
    napi_remove_async_cleanup_hook(io->cleanup);
    io->cleanup = NULL;
  }
  return tg_undefined(env);
}

/* stats(): the counted drops, plus the errno name behind the latest one. */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value this_arg, o, last;
  if (!tg_arg_count(env, info, 0, NULL, &this_arg)) return NULL;
  tg_io *io = tg_io_unwrap(env, this_arg, 0, NULL);
  if (io == NULL) return NULL;
  napi_create_object(env, &o);
  napi_set_named_property(env, o, "rxTruncated", tg_uint(env, io->stats.rx_truncated));
  napi_set_named_property(env, o, "rxErrors", tg_uint(env, io->stats.rx_errors));
  napi_set_named_property(env, o, "rxStale", tg_uint(env, io->stats.rx_stale));
  napi_set_named_property(env, o, "txDropped", tg_uint(env, io->stats.tx_dropped));
  napi_set_named_property(env, o, "txRejected", tg_uint(env, io->stats.tx_rejected));
  const char *name = io->stats.last_errno != 0 ? strerrorname_np(io->stats.last_errno) : NULL;
  if (name != NULL)
    napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &last);
  else
    napi_get_null(env, &last);
  napi_set_named_property(env, o, "lastError", last);
  return o;
}

const napi_property_descriptor tg_io_props[] = {
    {"fd", NULL, NULL, js_fd, NULL, NULL, napi_default, NULL},
    {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
    {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL},
    {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
    {"stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL},
};
const size_t tg_io_props_count = sizeof tg_io_props / sizeof tg_io_props[0];
