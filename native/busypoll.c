/* Busy polling: waiting for a TUN or a socket to become readable without letting the CPU go
 * idle. After a device has sent a request or delivered a packet, the answer often comes back
 * within a few hundred microseconds; a thread that sleeps in epoll_wait meanwhile pays for
 * the wake-up (an inter-processor interrupt, and on a VM whose idle vCPUs halt, an exit to
 * the hypervisor) and then runs its whole path on cold caches. Polling for a bounded window
 * instead catches the answer at once, on a warm CPU: the kernel's busy_poll and the guest
 * cpuidle driver haltpoll do the same one layer down. The caller decides the window
 * (device/busy-poll.ts learns it); this file only waits.
 *
 * Polling must only use a CPU nobody else wants, so the wait yields (sched_yield) when it
 * starts and every YIELD_EVERY_NS while it polls; with nothing else queued on the CPU a yield
 * returns at once. The datagram the device has just sent woke its peer with a synchronous
 * wake-up, which the scheduler places on the waker's CPU when that CPU runs nothing else
 * (wake_affine: the waker is about to sleep), even with the other CPU idle; and a task woken
 * here while the poll runs (the next hop of a path, the application) waits as well, because
 * the EEVDF scheduler (Linux 6.6 and later) lets a running task finish its slice rather than
 * preempt it for the wakee. On the lab's VM (kernel 6.18, 2 vCPUs) the peer waited 1.0 ms
 * behind a poll that never yielded, so pings every 5 ms over one leg had a 99th percentile of
 * 1.1-1.4 ms against wireguard-go's 0.3-0.4, and through the full path (four polling devices)
 * a median of 0.98 ms; yielding at the start only: 0.66 ms, and every 50 us as well: 0.49 ms.
 *
 * The price: a task that takes the CPU at a yield keeps it until it sleeps or its slice ends,
 * and a packet that arrives meanwhile wakes nothing (this thread is runnable), so it waits as
 * long; a V8 compile job once held a 200 ms ping 3-4 ms that way. Such jobs run in the first
 * seconds of a device; data-plane peers sleep again within tens of microseconds. */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <time.h>

#include "tg.h"

/* How often a poll gives way to whatever else is queued on its CPU (see above). */
#define YIELD_EVERY_NS 50000ULL

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
  uint64_t now = mono_ns();
  const uint64_t end = now + (uint64_t)max_us * 1000ULL;
  uint64_t next_yield = now + YIELD_EVERY_NS;
  uint32_t mask = 0;
  for (;;) {
    if (now >= next_yield) {
      sched_yield();
      next_yield = mono_ns() + YIELD_EVERY_NS;
    }
    int r = poll(p, 2, 0);
    if (r < 0 && errno != EINTR) return tg_throw_errno(env, errno, "poll");
    if (r > 0) {
      for (int i = 0; i < 2; i++)
        if (p[i].revents != 0) mask |= 1U << i;
      break;
    }
    now = mono_ns();
    if (now >= end) break;
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
