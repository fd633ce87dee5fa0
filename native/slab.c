/* Packet slabs in anonymous memory: allocSlab(bytes) -> Buffer.
 *
 * The device's batches have a slot per packet large enough for any WireGuard message
 * (64 KiB), so most of each slot is never written at common MTUs. Mapped privately and
 * anonymously, only the pages packets actually touch become resident; zero-filled by the
 * kernel, with no memset that would touch them all (which a calloc() served from a reused
 * heap chunk does). Unmapped when the Buffer is collected. */
#include <errno.h>
#include <sys/mman.h>

#include "tg.h"

static void slab_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  munmap(data, (size_t)(uintptr_t)hint);
}

/* allocSlab(bytes: 1 .. 2^31-1) */
static napi_value alloc_slab(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!tg_arg_count(env, info, 1, argv, NULL)) return NULL;
  uint32_t bytes;
  if (!tg_arg_u32(env, argv[0], "bytes", &bytes)) return NULL;
  if (bytes == 0 || bytes > INT32_MAX) return tg_throw_range(env, "bytes must be in [1, 2^31), got %u", bytes);
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return tg_throw_errno(env, errno, "mmap");
  napi_value buf;
  if (napi_create_external_buffer(env, bytes, p, slab_finalize, (void *)(uintptr_t)bytes, &buf) != napi_ok) {
    munmap(p, bytes);
    return tg_throw_plain(env, "ERR_TG_NAPI", "cannot wrap the slab in a Buffer");
  }
  return buf;
}

napi_value tg_init_slab(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"allocSlab", NULL, alloc_slab, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, 1, props);
  return exports;
}
