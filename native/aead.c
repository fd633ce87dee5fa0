/* WireGuard transport AEAD (ChaCha20-Poly1305, RFC 8439) over batches of packets, in
 * place, with the OpenSSL that the node binary itself exports (no second libcrypto).
 *
 * Message layout (WireGuard "transport data"): a 16-byte header (type u32 LE = 4,
 * receiver u32 LE, counter u64 LE) then the ciphertext then the 16-byte tag. The nonce is
 * 4 zero bytes || the counter as written in the header (little-endian); AAD is empty.
 *
 * One EVP_CIPHER_CTX per Aead object, reused for every packet: per packet only the key
 * (when it differs from the previous packet's) and the nonce are set, so there is no
 * allocation on the hot path. The context holds the last key used until the next batch
 * or close(); EVP_CIPHER_CTX_free wipes it. A large batch is split across the crypto pool's
 * threads (crypto_pool.c), each with a context of its own; small ones run inline. */
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "tg.h"

#define WG_HEADER_LEN 16
#define WG_COUNTER_OFFSET 8
#define WG_TAG_LEN 16
#define WG_KEY_LEN 32
#define WG_NONCE_LEN 12

/* Distinct from the I/O handles' tags so that no method can unwrap the wrong struct. */
static const napi_type_tag tag_aead = {0x74656e6775617264ULL, 0x0000000061656164ULL}; /* "tenguard" "aead" */

typedef struct tg_aead {
  EVP_CIPHER_CTX *ctx; /* NULL once closed */
  const uint8_t **keys; /* per-batch key pointers; grows to the largest batch seen */
  size_t keys_cap;
} tg_aead;

static void aead_free(tg_aead *a) {
  if (a->ctx != NULL) EVP_CIPHER_CTX_free(a->ctx);
  a->ctx = NULL;
  free(a->keys);
  a->keys = NULL;
  a->keys_cap = 0;
}

static void aead_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  aead_free(data);
  free(data);
}

static napi_value aead_new(napi_env env, napi_callback_info info) {
  napi_value this_arg;
  if (!tg_arg_count(env, info, 0, NULL, &this_arg)) return NULL;
  tg_aead *a = calloc(1, sizeof *a);
  if (a == NULL) return tg_throw_errno(env, ENOMEM, "aead");
  a->ctx = EVP_CIPHER_CTX_new();
  if (a->ctx == NULL || EVP_CipherInit_ex(a->ctx, EVP_chacha20_poly1305(), NULL, NULL, NULL, 1) != 1) {
    ERR_clear_error();
    aead_free(a);
    free(a);
    return tg_throw_plain(env, "ERR_TG_CRYPTO", "OpenSSL has no usable chacha20-poly1305");
  }
  if (napi_type_tag_object(env, this_arg, &tag_aead) != napi_ok ||
      napi_wrap(env, this_arg, a, aead_finalize, NULL, NULL) != napi_ok) {
    aead_free(a);
    free(a);
    return tg_throw_plain(env, "ERR_TG_NAPI", "cannot wrap the AEAD context");
  }
  return this_arg;
}

static tg_aead *aead_unwrap(napi_env env, napi_value this_arg, bool need_open) {
  void *p = NULL;
  bool tagged = false;
  napi_check_object_type_tag(env, this_arg, &tag_aead, &tagged);
  if (!tagged || napi_unwrap(env, this_arg, &p) != napi_ok || p == NULL) {
    tg_throw_type(env, "receiver is not a native AEAD");
    return NULL;
  }
  tg_aead *a = p;
  if (need_open && a->ctx == NULL) {
    tg_throw_plain(env, "ERR_TG_CLOSED", "the AEAD context is closed");
    return NULL;
  }
  return a;
}

/* Collects keys[0..count) as pointers, checking each is a 32-byte Uint8Array. The values
 * are kept alive by the caller's array for the duration of the call. */
static bool collect_keys(napi_env env, tg_aead *a, napi_value keys, uint32_t count) {
  bool is_array = false;
  napi_is_array(env, keys, &is_array);
  if (!is_array) {
    tg_throw_type(env, "keys must be an array of 32-byte Buffers");
    return false;
  }
  uint32_t n = 0;
  napi_get_array_length(env, keys, &n);
  if (n < count) {
    tg_throw_range(env, "keys.length (%u) is smaller than count (%u)", n, count);
    return false;
  }
  if (count > a->keys_cap) {
    const uint8_t **grown = realloc(a->keys, (size_t)count * sizeof *grown);
    if (grown == NULL) {
      tg_throw_errno(env, ENOMEM, "aead");
      return false;
    }
    a->keys = grown;
    a->keys_cap = count;
  }
  for (uint32_t i = 0; i < count; i++) {
    napi_value k;
    uint8_t *data;
    size_t len;
    if (napi_get_element(env, keys, i, &k) != napi_ok || !tg_get_bytes(env, k, &data, &len)) {
      tg_throw_type(env, "keys[%u] must be a Buffer or Uint8Array", i);
      return false;
    }
    if (len != WG_KEY_LEN) {
      tg_throw_range(env, "keys[%u] must be %d bytes, got %zu", i, WG_KEY_LEN, len);
      return false;
    }
    a->keys[i] = data;
  }
  return true;
}

/* Sets key (unless it is the one already in the context) and the nonce from the header. */
static bool start_packet(EVP_CIPHER_CTX *ctx, const uint8_t *key, const uint8_t **last_key, const uint8_t *header,
                         int enc) {
  uint8_t nonce[WG_NONCE_LEN] = {0};
  memcpy(nonce + 4, header + WG_COUNTER_OFFSET, 8);
  const uint8_t *k = key == *last_key ? NULL : key;
  *last_key = key;
  return EVP_CipherInit_ex(ctx, NULL, NULL, k, nonce, enc) == 1;
}

/* One batch as the range functions see it (the pool hands out [from, to) ranges of it). */
typedef struct batch_job {
  uint8_t *buf;
  const uint32_t *offsets;
  const uint32_t *lengths; /* plaintext lengths to seal, whole message lengths to open */
  const uint8_t *const *keys;
  uint8_t *ok; /* open only */
} batch_job;

static bool seal_range(EVP_CIPHER_CTX *ctx, const void *arg, uint32_t from, uint32_t to) {
  const batch_job *j = arg;
  const uint8_t *last_key = NULL;
  for (uint32_t i = from; i < to; i++) {
    uint8_t *h = j->buf + j->offsets[i];
    uint8_t *p = h + WG_HEADER_LEN;
    int len = (int)j->lengths[i], outl;
    if (!start_packet(ctx, j->keys[i], &last_key, h, 1) || (len > 0 && EVP_CipherUpdate(ctx, p, &outl, p, len) != 1) ||
        EVP_CipherFinal_ex(ctx, p + len, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, WG_TAG_LEN, p + len) != 1) {
      ERR_clear_error();
      return false;
    }
  }
  return true;
}

static bool open_range(EVP_CIPHER_CTX *ctx, const void *arg, uint32_t from, uint32_t to) {
  const batch_job *j = arg;
  const uint8_t *last_key = NULL;
  for (uint32_t i = from; i < to; i++) {
    uint8_t *h = j->buf + j->offsets[i];
    uint8_t *p = h + WG_HEADER_LEN;
    int len = (int)j->lengths[i] - WG_HEADER_LEN - WG_TAG_LEN, outl;
    /* SET_TAG copies the tag, so decrypting in place cannot disturb it. */
    if (!start_packet(ctx, j->keys[i], &last_key, h, 0) ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, WG_TAG_LEN, p + len) != 1 ||
        (len > 0 && EVP_CipherUpdate(ctx, p, &outl, p, len) != 1)) {
      ERR_clear_error();
      return false;
    }
    uint8_t scratch[WG_TAG_LEN];
    j->ok[i] = EVP_CipherFinal_ex(ctx, scratch, &outl) == 1;
    if (!j->ok[i]) {
      /* Forged or corrupt: never leave unauthenticated plaintext behind. */
      memset(p, 0, (size_t)len);
      ERR_clear_error();
    }
  }
  return true;
}

static napi_value crypto_failure(napi_env env, const char *what) {
  ERR_clear_error(); /* leave no stale entries for node:crypto to trip over */
  return tg_throw_plain(env, "ERR_TG_CRYPTO", what);
}

/* sealBatch(buf, offsets, plainLengths, keys, count) */
static napi_value aead_seal_batch(napi_env env, napi_callback_info info) {
  napi_value argv[5], this_arg;
  if (!tg_arg_count(env, info, 5, argv, &this_arg)) return NULL;
  uint8_t *buf;
  size_t buf_len, offsets_len, lengths_len;
  uint32_t *offsets, *plain, count;
  if (!tg_arg_bytes(env, argv[0], "buf", &buf, &buf_len) ||
      !tg_arg_u32array(env, argv[1], "offsets", &offsets, &offsets_len) ||
      !tg_arg_u32array(env, argv[2], "plainLengths", &plain, &lengths_len) ||
      !tg_arg_u32(env, argv[4], "count", &count))
    return NULL;
  if (count > offsets_len || count > lengths_len)
    return tg_throw_range(env, "count (%u) exceeds offsets.length (%zu) or plainLengths.length (%zu)", count,
                          offsets_len, lengths_len);
  for (uint32_t i = 0; i < count; i++) {
    if (plain[i] > INT_MAX - WG_HEADER_LEN - WG_TAG_LEN)
      return tg_throw_range(env, "plainLengths[%u] (%u) is too large", i, plain[i]);
    if ((uint64_t)offsets[i] + WG_HEADER_LEN + plain[i] + WG_TAG_LEN > buf_len)
      return tg_throw_range(env, "packet %u (offset %u, %u bytes + header + tag) ends past the buffer (%zu bytes)", i,
                            offsets[i], plain[i], buf_len);
  }
  tg_aead *a = aead_unwrap(env, this_arg, true);
  if (a == NULL || !collect_keys(env, a, argv[3], count)) return NULL;

  uint64_t bytes = 0;
  for (uint32_t i = 0; i < count; i++) bytes += plain[i];
  batch_job job = {buf, offsets, plain, a->keys, NULL};
  if (!tg_pool_run(seal_range, &job, count, bytes, a->ctx)) return crypto_failure(env, "chacha20-poly1305 seal failed");
  return tg_undefined(env);
}

/* openBatch(buf, offsets, lengths, keys, count, ok) */
static napi_value aead_open_batch(napi_env env, napi_callback_info info) {
  napi_value argv[6], this_arg;
  if (!tg_arg_count(env, info, 6, argv, &this_arg)) return NULL;
  uint8_t *buf, *ok;
  size_t buf_len, offsets_len, lengths_len, ok_len;
  uint32_t *offsets, *lengths, count;
  if (!tg_arg_bytes(env, argv[0], "buf", &buf, &buf_len) ||
      !tg_arg_u32array(env, argv[1], "offsets", &offsets, &offsets_len) ||
      !tg_arg_u32array(env, argv[2], "lengths", &lengths, &lengths_len) ||
      !tg_arg_u32(env, argv[4], "count", &count) || !tg_arg_bytes(env, argv[5], "ok", &ok, &ok_len))
    return NULL;
  if (count > offsets_len || count > lengths_len || count > ok_len)
    return tg_throw_range(env, "count (%u) exceeds offsets.length (%zu), lengths.length (%zu) or ok.length (%zu)",
                          count, offsets_len, lengths_len, ok_len);
  for (uint32_t i = 0; i < count; i++) {
    if (lengths[i] < WG_HEADER_LEN + WG_TAG_LEN || lengths[i] > INT_MAX)
      return tg_throw_range(env, "lengths[%u] (%u) must be at least %d (header + tag)", i, lengths[i],
                            WG_HEADER_LEN + WG_TAG_LEN);
    if ((uint64_t)offsets[i] + lengths[i] > buf_len)
      return tg_throw_range(env, "packet %u (offset %u, length %u) ends past the buffer (%zu bytes)", i, offsets[i],
                            lengths[i], buf_len);
  }
  tg_aead *a = aead_unwrap(env, this_arg, true);
  if (a == NULL || !collect_keys(env, a, argv[3], count)) return NULL;

  uint64_t bytes = 0;
  for (uint32_t i = 0; i < count; i++) bytes += lengths[i];
  batch_job job = {buf, offsets, lengths, a->keys, ok};
  if (!tg_pool_run(open_range, &job, count, bytes, a->ctx)) return crypto_failure(env, "chacha20-poly1305 open failed");
  return tg_undefined(env);
}

/* close(): frees (and wipes) the context. Idempotent; later batches throw ERR_TG_CLOSED. */
static napi_value aead_close(napi_env env, napi_callback_info info) {
  napi_value this_arg;
  if (!tg_arg_count(env, info, 0, NULL, &this_arg)) return NULL;
  tg_aead *a = aead_unwrap(env, this_arg, false);
  if (a == NULL) return NULL;
  aead_free(a);
  return tg_undefined(env);
}

napi_value tg_init_aead(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"sealBatch", NULL, aead_seal_batch, NULL, NULL, NULL, napi_default, NULL},
      {"openBatch", NULL, aead_open_batch, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, aead_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  if (napi_define_class(env, "Aead", NAPI_AUTO_LENGTH, aead_new, NULL, 3, props, &cls) != napi_ok) return NULL;
  napi_set_named_property(env, exports, "Aead", cls);
  return exports;
}
