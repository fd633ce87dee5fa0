/* Busy polling: waiting for a TUN or a socket to become readable without letting the CPU go
 * idle. After a device has sent a request or delivered a packet, the answer often comes back
 * within a few hundred microseconds; a thread that sleeps in epoll_wait meanwhile pays for
 * the wake-up (an inter-processor interrupt, and on a VM whose idle vCPUs halt, an exit to
 * the hypervisor) and then runs its whole path on cold caches. Polling for a bounded window
 * instead catches the answer at once, on a warm CPU: the kernel's busy_poll and the guest
 * cpuidle driver haltpoll do the same one layer down. The caller decides the window
 * (device/busy-poll.ts learns it); this file only waits.
 *
 * The wait starts with one sched_yield(). The datagram the device has just sent woke its
 * peer with a synchronous wake-up, which the scheduler places on the waker's CPU when that
 * CPU runs nothing else (wake_affine: the waker is about to sleep), even with the other CPU
 * idle; a poller that does not sleep then holds the peer back for its whole window, because
 * the EEVDF scheduler (Linux 6.6 and later) lets a running task finish its slice rather than
 * preempt it for the wakee. On the lab's VM (kernel 6.18, 2 vCPUs) the peer waited 1.0 ms
 * behind the poll in every such case, so pings every 5 ms over one leg had a 99th percentile
 * of 1.1-1.4 ms against wireguard-go's 0.3-0.4. Yielding once lets whatever is queued here
 * run first; with nothing queued it returns at once.
 *
 * The loop itself never yields: a yielded thread is runnable, so an arriving packet wakes
 * nothing, and whatever took the CPU (a V8 compile job) kept it until the next scheduler
 * tick, up to 4 ms here: the 200 ms ping behind it took 3-4 ms. The window is short (at most
 * a millisecond by default). */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <time.h>

#include "tg.h"

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* busyWait(fdA, fdB, maxMicros) -> bit 0: fdA, bit 1: fdB is readable (or has an error or a
 * hangup, which its next read reports); 0 when neither became so within maxMicros. A negative
 * fd is ignored. maxMicros is at most 100,000. */
static napi_value busy_wait(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!tg_arg_count(env, info, 3, argv, NULL)) return NULL;
  int32_t fds[2];
  uint32_t max_us;
  for (int i = 0; i < 2; i++)
    if (napi_get_value_int32(env, argv[i], &fds[i]) != napi_ok) return tg_throw_type(env, "fd %d must be a number", i);
  if (!tg_arg_u32(env, argv[2], "maxMicros", &max_us)) return NULL;
  if (max_us > 100000) return tg_throw_range(env, "maxMicros %u is above 100000", max_us);
  struct pollfd p[2] = {{.fd = fds[0], .events = POLLIN}, {.fd = fds[1], .events = POLLIN}};
  sched_yield(); /* see the top of the file */
  const uint64_t end = mono_ns() + (uint64_t)max_us * 1000ULL;
  uint32_t mask = 0;
  for (;;) {
    int r = poll(p, 2, 0);
    if (r < 0 && errno != EINTR) return tg_throw_errno(env, errno, "poll");
    if (r > 0) {
      for (int i = 0; i < 2; i++)
        if (p[i].revents != 0) mask |= 1U << i;
      break;
    }
    if (mono_ns() >= end) break;
  }
  napi_value v;
  napi_create_uint32(env, mask, &v);
  return v;
}

napi_value tg_init_busypoll(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"busyWait", NULL, busy_wait, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, 1, props) != napi_ok) return NULL;
  return exports;
}
