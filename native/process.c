/* Process hardening: a process holding session keys must not be dumpable, so that no
 * core file and no ptrace by a same-uid process can read them. And process memory upkeep:
 * glibc keeps memory freed by the threads' malloc arenas (V8's worker threads, libuv's pool)
 * instead of giving it back, so a long-running daemon's RSS creeps up with no leak behind it;
 * malloc_trim returns those free pages. */
#include <errno.h>
#include <malloc.h>
#include <sys/prctl.h>

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

napi_value tg_init_process(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"setDumpable", NULL, set_dumpable, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getDumpable", NULL, get_dumpable, NULL, NULL, NULL, napi_enumerable, NULL},
      {"trimHeap", NULL, trim_heap, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mallocStats", NULL, heap_stats, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, 4, props);
  return exports;
}
