/* Process hardening: a process holding session keys must not be dumpable, so that no
 * core file and no ptrace by a same-uid process can read them. And process memory upkeep:
 * glibc keeps memory freed by the threads' malloc arenas (V8's worker threads, libuv's pool)
 * instead of giving it back, so a long-running daemon's RSS creeps up with no leak behind it;
 * malloc_trim returns those free pages. */
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "tg.h"

/* setDumpable(on: boolean) */
static napi_value set_dumpable(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!tg_arg_count(env, info, 1, argv, NULL)) return NULL;
  bool on;
  if (!tg_arg_bool(env, argv[0], "on", &on)) return NULL;
  if (prctl(PR_SET_DUMPABLE, on ? 1 : 0, 0, 0, 0) < 0) return tg_throw_errno(env, errno, "prctl PR_SET_DUMPABLE");
  return tg_undefined(env);
}

/* getDumpable() -> 0 (not dumpable), 1 (dumpable) or 2 (root-only, suid_dumpable) */
static napi_value get_dumpable(napi_env env, napi_callback_info info) {
  (void)info;
  int r = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
  if (r < 0) return tg_throw_errno(env, errno, "prctl PR_GET_DUMPABLE");
  napi_value v;
  napi_create_int32(env, r, &v);
  return v;
}

/* trimHeap() -> true when malloc_trim(0) gave memory back to the system */
static napi_value trim_heap(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_get_boolean(env, malloc_trim(0) == 1, &v);
  return v;
}

/* mallocStats() -> { inUse, free, mapped }: bytes of the C heap handed out (in the arenas and
 * in chunks mapped on their own), free in the arenas, and mapped on their own. Unlike RSS,
 * inUse does not move with what the allocator keeps cached, so a soak can judge leaks by it. */
static napi_value heap_stats(napi_env env, napi_callback_info info) {
  (void)info;
  struct mallinfo2 m = mallinfo2();
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_double(env, (double)(m.uordblks + m.hblkhd), &v);
  napi_set_named_property(env, out, "inUse", v);
  napi_create_double(env, (double)m.fordblks, &v);
  napi_set_named_property(env, out, "free", v);
  napi_create_double(env, (double)m.hblkhd, &v);
  napi_set_named_property(env, out, "mapped", v);
  return out;
}

/* idleHelperThreads() -> { idled, failed }: every thread of the process but the calling one
 * (the main thread) moves to SCHED_IDLE. Called early in a data-plane process, these are V8's
 * platform workers (concurrent compilation and GC), its delayed-task thread, the inspector's
 * signal thread and libuv's pool: on a loaded or small host a TurboFan job of 4-5 ms on a
 * normal-priority worker held the CPU a woken main thread needed (the scheduler lets a running
 * task reach its slice first), so packets waited for a compiler. An idle-policy thread is
 * preempted at once by any normal one and still runs whenever a CPU is free. Threads started
 * later (the addon's crypto workers) keep the normal policy. */
static napi_value idle_helper_threads(napi_env env, napi_callback_info info) {
  (void)info;
  const pid_t self = gettid();
  uint32_t idled = 0, failed = 0;
  DIR *d = opendir("/proc/self/task");
  if (d == NULL) return tg_throw_errno(env, errno, "opendir /proc/self/task");
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long tid = strtol(e->d_name, &end, 10);
    if (*end != '\0' || tid <= 0 || tid == self) continue;
    struct sched_param sp = {.sched_priority = 0};
    if (sched_setscheduler((pid_t)tid, SCHED_IDLE, &sp) == 0)
      idled++;
    else if (errno != ESRCH) /* ESRCH: the thread ended meanwhile */
      failed++;
  }
  closedir(d);
  napi_value out;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "idled", tg_uint(env, idled));
  napi_set_named_property(env, out, "failed", tg_uint(env, failed));
  return out;
}

napi_value tg_init_process(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"setDumpable", NULL, set_dumpable, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getDumpable", NULL, get_dumpable, NULL, NULL, NULL, napi_enumerable, NULL},
      {"trimHeap", NULL, trim_heap, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mallocStats", NULL, heap_stats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"idleHelperThreads", NULL, idle_helper_threads, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
