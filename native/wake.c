/* Wake placement: a device that has been quiet sends its first datagrams at idle scheduling
 * priority (SCHED_IDLE) for the duration of the send, so that a peer it wakes on the same
 * host is placed on this CPU and runs at once instead of waking a halted one.
 *
 * Why: a datagram to a process on the same host is delivered in the sender's own system
 * call, which wakes the receiving thread. The scheduler puts the wakee on its previous CPU
 * when that CPU is idle; on a VM whose idle vCPUs halt, waking it is an exit to the
 * hypervisor, and on the lab's VM that costs 130-250 us once the vCPU has been idle for tens
 * of milliseconds (perf sched: scheduling delay of the answering device's thread, median
 * 129 us). The one CPU the scheduler prefers over an idle previous CPU is the waker's own
 * when it runs only SCHED_IDLE tasks (select_idle_sibling: sched_idle_cpu(target)); a
 * normal task woken there preempts the idle-priority sender immediately. wireguard-go gets
 * the same placement by accident: its threads pile up on one CPU and wake each other there.
 *
 * Guard rails, because a SCHED_IDLE thread that another task preempts waits behind it
 * (weight 3 against 1024): the hint is armed only when nothing else in the system is
 * runnable (/proc/loadavg's running count is 1: this thread), only for a thread that runs
 * SCHED_OTHER, only when the thread may return from SCHED_IDLE (probed once on a throwaway
 * thread: it needs CAP_SYS_NICE or an RLIMIT_NICE that allows the thread's nice value), and
 * each send switches back as soon as its system call returns. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include "tg.h"

/* Armed by setWakeHere(true) on the thread that sends (the device's main thread). */
static __thread bool armed;
/* -1: not probed yet; 0: a thread cannot leave SCHED_IDLE here; 1: it can. */
static int can_restore = -1;
static int loadavg_fd = -1;

static void *probe_restore(void *arg) {
  struct sched_param sp = {0};
  int *ok = arg;
  *ok = sched_setscheduler(0, SCHED_IDLE, &sp) == 0 && sched_setscheduler(0, SCHED_OTHER, &sp) == 0;
  return NULL;
}

static bool restore_allowed(void) {
  if (can_restore >= 0) return can_restore == 1;
  int ok = 0;
  pthread_t t;
  if (pthread_create(&t, NULL, probe_restore, &ok) != 0) return false; /* try again next time */
  pthread_join(t, NULL);
  can_restore = ok;
  return ok == 1;
}

/* Tasks runnable in the whole system (the fourth field of /proc/loadavg, "R/T"), or -1. */
static long runnable_tasks(void) {
  if (loadavg_fd < 0) loadavg_fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  if (loadavg_fd < 0) return -1;
  char buf[128];
  ssize_t n = pread(loadavg_fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return -1;
  buf[n] = '\0';
  char *p = buf;
  for (int field = 0; field < 3; field++) {
    while (*p != '\0' && *p != ' ') p++;
    while (*p == ' ') p++;
  }
  char *end;
  long r = strtol(p, &end, 10);
  return end == p || *end != '/' ? -1 : r;
}

bool tg_wake_here_begin(void) {
  if (!armed) return false;
  struct sched_param sp = {0};
  return sched_setscheduler(0, SCHED_IDLE, &sp) == 0;
}

void tg_wake_here_end(bool begun) {
  if (!begun) return;
  struct sched_param sp = {0};
  if (sched_setscheduler(0, SCHED_OTHER, &sp) != 0) {
    /* Cannot happen after a successful probe; never try again if it does. */
    can_restore = 0;
    armed = false;
  }
}

/* wakePlacementAllowed() -> whether a thread of this process may return from SCHED_IDLE
 * (the probe above; without that right the device never arms). */
static napi_value allowed(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value r;
  napi_get_boolean(env, restore_allowed(), &r);
  return r;
}

/* setWakeHere(on, maxRunnable) -> whether this thread's sends now carry the hint: for on, when
 * at most maxRunnable tasks are runnable in the system (the device passes 1: itself), the
 * thread runs SCHED_OTHER and may return from SCHED_IDLE; off always disarms (false). */
static napi_value set_wake_here(napi_env env, napi_callback_info info) {
  napi_value argv[2], r;
  if (!tg_arg_count(env, info, 2, argv, NULL)) return NULL;
  bool on;
  uint32_t max_runnable;
  if (!tg_arg_bool(env, argv[0], "on", &on) || !tg_arg_u32(env, argv[1], "maxRunnable", &max_runnable)) return NULL;
  if (on) {
    long runnable = runnable_tasks();
    armed = runnable >= 1 && runnable <= (long)max_runnable && sched_getscheduler(0) == SCHED_OTHER &&
            restore_allowed();
  } else {
    armed = false;
  }
  napi_get_boolean(env, armed, &r);
  return r;
}

napi_value tg_init_wake(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"setWakeHere", NULL, set_wake_here, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wakePlacementAllowed", NULL, allowed, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, 2, props) != napi_ok) return NULL;
  return exports;
}
