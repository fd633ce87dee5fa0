/* Busy polling: waiting for a TUN or a socket to become readable without letting the CPU go
 * idle. After a device has sent a request or delivered a packet, the answer often comes back
 * within a few hundred microseconds; a thread that sleeps in epoll_wait meanwhile pays for
 * the wake-up (an inter-processor interrupt, and on a VM whose idle vCPUs halt, an exit to
 * the hypervisor) and then runs its whole path on cold caches. Polling for a bounded window
 * instead catches the answer at once, on a warm CPU: the kernel's busy_poll and the guest
 * cpuidle driver haltpoll do the same one layer down. The caller decides the window
 * (device/busy-poll.ts learns it); this file only waits.
 *
 * The loop never yields (sched_yield): a yielded thread is runnable, so an arriving packet
 * wakes nothing, and whatever took the CPU (a V8 compile job) kept it until the next
 * scheduler tick, up to 4 ms here: the 200 ms ping behind it took 3-4 ms. A task woken on
 * this CPU meanwhile (the application reading its answer from the TUN) preempts the loop as
 * it would any running task, and the window is short (at most a millisecond by default). */
#include <errno.h>
#include <poll.h>
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
