/* Module entry: registers the TUN and UDP handle classes, the batched AEAD, the
 * process helpers, the slab allocator, locked memory for secrets, busy polling and wake
 * placement. See tg.h for the
 * conventions every part follows. */
#include "tg.h"

static napi_value init(napi_env env, napi_value exports) {
  if (tg_init_tun(env, exports) == NULL || tg_init_udp(env, exports) == NULL || tg_init_aead(env, exports) == NULL ||
      tg_init_crypto_pool(env, exports) == NULL ||
      tg_init_process(env, exports) == NULL || tg_init_slab(env, exports) == NULL ||
      tg_init_secret(env, exports) == NULL || tg_init_busypoll(env, exports) == NULL ||
      tg_init_wake(env, exports) == NULL)
    return NULL;
  napi_value v;
  napi_create_uint32(env, TG_EP_SIZE, &v);
  napi_set_named_property(env, exports, "ENDPOINT_SIZE", v);
  napi_create_uint32(env, TG_MMSG_CHUNK, &v);
  napi_set_named_property(env, exports, "MMSG_CHUNK", v);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
