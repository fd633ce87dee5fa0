/* Packet slabs in anonymous memory: allocSlab(bytes) -> Buffer; and table memory in huge
 * pages: allocHuge(bytes) -> ArrayBuffer.
 *
 * The device's batches have a slot per packet large enough for any WireGuard message
 * (64 KiB), so most of each slot is never written at common MTUs. Mapped privately and
 * anonymously, only the pages packets actually touch become resident; zero-filled by the
 * kernel, with no memset that would touch them all (which a calloc() served from a reused
 * heap chunk does). Unmapped when the Buffer is collected. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "tg.h"

static void slab_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  munmap(data, (size_t)(uintptr_t)hint);
}

/* The one argument of allocSlab and allocHuge: a size in 1 .. 2^31-1. */
static bool bytes_arg(napi_env env, napi_callback_info info, uint32_t *bytes) {
  napi_value argv[1];
  if (!tg_arg_count(env, info, 1, argv, NULL) || !tg_arg_u32(env, argv[0], "bytes", bytes)) return false;
  if (*bytes == 0 || *bytes > INT32_MAX) {
    tg_throw_range(env, "bytes must be in [1, 2^31), got %u", *bytes);
    return false;
  }
  return true;
}

/* allocSlab(bytes: 1 .. 2^31-1) */
static napi_value alloc_slab(napi_env env, napi_callback_info info) {
  uint32_t bytes;
  if (!bytes_arg(env, info, &bytes)) return NULL;
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return tg_throw_errno(env, errno, "mmap");
  napi_value buf;
  if (napi_create_external_buffer(env, bytes, p, slab_finalize, (void *)(uintptr_t)bytes, &buf) != napi_ok) {
    munmap(p, bytes);
    return tg_throw_plain(env, "ERR_TG_NAPI", "cannot wrap the slab in a Buffer");
  }
  return buf;
}

/* Tables looked up at random (the policy engine's connection tables): a lookup in a table of
 * many megabytes misses the TLB as well as the caches, and on a virtual machine a page walk
 * is itself several memory accesses. Aligned to 2 MiB and marked MADV_HUGEPAGE, the region
 * is mapped in transparent huge pages where the kernel allows them (its "madvise" mode, the
 * default), one TLB entry per 2 MiB. Zero-filled, unmapped when the ArrayBuffer is collected;
 * without huge pages it is ordinary anonymous memory. */
#define TG_HUGE_PAGE ((size_t)2 << 20)

struct huge_region {
  void *map;
  size_t len;
};

static void huge_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  struct huge_region *r = hint;
  munmap(r->map, r->len);
  free(r);
}

/* allocHuge(bytes: 1 .. 2^31-1) */
static napi_value alloc_huge(napi_env env, napi_callback_info info) {
  uint32_t bytes;
  if (!bytes_arg(env, info, &bytes)) return NULL;
  size_t len = ((size_t)bytes + TG_HUGE_PAGE - 1) & ~(TG_HUGE_PAGE - 1);
  struct huge_region *r = malloc(sizeof *r);
  if (r == NULL) return tg_throw_errno(env, ENOMEM, "malloc");
  /* Over-map by one huge page, then trim to an aligned region. */
  uint8_t *p = mmap(NULL, len + TG_HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    free(r);
    return tg_throw_errno(env, errno, "mmap");
  }
  uint8_t *a = (uint8_t *)(((uintptr_t)p + TG_HUGE_PAGE - 1) & ~(uintptr_t)(TG_HUGE_PAGE - 1));
  if (a > p) munmap(p, (size_t)(a - p));
  size_t tail = (size_t)(p + len + TG_HUGE_PAGE - (a + len));
  if (tail > 0) munmap(a + len, tail);
  (void)madvise(a, len, MADV_HUGEPAGE);
  r->map = a;
  r->len = len;
  napi_value ab;
  if (napi_create_external_arraybuffer(env, a, bytes, huge_finalize, r, &ab) != napi_ok) {
    munmap(a, len);
    free(r);
    return tg_throw_plain(env, "ERR_TG_NAPI", "cannot wrap the region in an ArrayBuffer");
  }
  return ab;
}

napi_value tg_init_slab(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"allocSlab", NULL, alloc_slab, NULL, NULL, NULL, napi_enumerable, NULL},
      {"allocHuge", NULL, alloc_huge, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}
