/* Memory for secrets: anonymous pages that are locked in RAM (mlock: never written to swap),
 * left out of core dumps (MADV_DONTDUMP) and not inherited by a forked child
 * (MADV_DONTFORK). JavaScript gets them as an external ArrayBuffer and carves 32- and 64-byte
 * keys out of it (src/native/secret-pool.ts); when the ArrayBuffer is collected the pages are
 * wiped, unlocked and unmapped. A failed mlock (RLIMIT_MEMLOCK) is reported, not fatal. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tg.h"

struct tg_arena {
  void *base;
  size_t size;
  bool locked;
};

static void arena_free(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  struct tg_arena *a = hint;
  explicit_bzero(a->base, a->size);
  if (a->locked) munlock(a->base, a->size);
  munmap(a->base, a->size);
  free(a);
}

/* lockedArena(bytes: number) -> { buffer: ArrayBuffer, locked: boolean } */
static napi_value locked_arena(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!tg_arg_count(env, info, 1, argv, NULL)) return NULL;
  uint32_t want;
  if (!tg_arg_u32(env, argv[0], "bytes", &want)) return NULL;
  long page = sysconf(_SC_PAGESIZE);
  if (want == 0 || want > (16u << 20)) {
    napi_throw_range_error(env, "TG_ERR_INVALID_ARGUMENT", "an arena is 1 byte to 16 MiB");
    return NULL;
  }
  size_t size = ((size_t)want + (size_t)page - 1) / (size_t)page * (size_t)page;
  void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return tg_throw_errno(env, errno, "mmap");
  struct tg_arena *a = malloc(sizeof *a);
  if (a == NULL) {
    munmap(base, size);
    return tg_throw_errno(env, ENOMEM, "malloc");
  }
  a->base = base;
  a->size = size;
  a->locked = mlock(base, size) == 0;
  (void)madvise(base, size, MADV_DONTDUMP);
  (void)madvise(base, size, MADV_DONTFORK);
  napi_value ab, locked, out;
  if (napi_create_external_arraybuffer(env, base, size, arena_free, a, &ab) != napi_ok) {
    if (a->locked) munlock(base, size);
    munmap(base, size);
    free(a);
    napi_throw_error(env, "TG_ERR_NATIVE", "external ArrayBuffers are not available");
    return NULL;
  }
  napi_get_boolean(env, a->locked, &locked);
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "buffer", ab);
  napi_set_named_property(env, out, "locked", locked);
  return out;
}

napi_value tg_init_secret(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"lockedArena", NULL, locked_arena, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, 1, props);
  return exports;
}
