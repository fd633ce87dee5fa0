/* Process hardening: a process holding session keys must not be dumpable, so that no
 * core file and no ptrace by a same-uid process can read them. */
#include <errno.h>
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

napi_value tg_init_process(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"setDumpable", NULL, set_dumpable, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getDumpable", NULL, get_dumpable, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}
