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
 * threads (crypto_pool.c), each with a context of its own; small ones run inline.
 *
 * Two implementations of the same RFC 8439 AEAD, both OpenSSL's code:
 *  - "primitives" (the default when node exports them): RFC 8439 section 2.8 composed from
 *    OpenSSL's ChaCha20_ctr32 and Poly1305_Init/Update/Final, the very routines (and CPU
 *    dispatch) its EVP chacha20-poly1305 runs. Per packet EVP_CipherInit_ex and the tag ctrl
 *    go through OpenSSL 3's provider parameter machinery (OSSL_PARAM arrays, strcmp on
 *    parameter names, IV copies): measured under `bench path`, that cost 70 to 80% of the
 *    cipher work itself on 1,420-byte packets. The composition is a few calls per packet;
 *    open checks the tag before it decrypts, so a forgery never becomes plaintext (its
 *    bytes are wiped all the same, as the EVP path wipes what it decrypted).
 *  - "evp": the EVP interface, used when the primitives are not exported (a node linked
 *    against another OpenSSL) or when chosen with aeadImplementation("evp") (tests compare
 *    the two). */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
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

/* --- RFC 8439 from OpenSSL's primitives --------------------------------------------------- */

/* OpenSSL's internal entry points (crypto/chacha.h, crypto/poly1305.h), exported by node's
 * binary; resolved at load time, never linked against, so a node without them still loads. */
typedef void (*chacha20_ctr32_fn)(unsigned char *out, const unsigned char *inp, size_t len, const unsigned int key[8],
                                  const unsigned int counter[4]);
typedef size_t (*poly1305_ctx_size_fn)(void);
typedef void (*poly1305_init_fn)(void *ctx, const unsigned char key[32]);
typedef void (*poly1305_update_fn)(void *ctx, const unsigned char *inp, size_t len);
typedef void (*poly1305_final_fn)(void *ctx, unsigned char mac[16]);

/* Room for OpenSSL's POLY1305 state (248 bytes in 3.0), checked against Poly1305_ctx_size(). */
#define POLY_STATE_MAX 512

static struct {
  chacha20_ctr32_fn chacha20;
  poly1305_init_fn poly_init;
  poly1305_update_fn poly_update;
  poly1305_final_fn poly_final;
  bool available; /* all of the above resolved and the state fits */
  bool use;       /* the implementation in use: primitives (true) or EVP */
} prim;

static void resolve_primitives(void) {
  prim.chacha20 = (chacha20_ctr32_fn)dlsym(RTLD_DEFAULT, "ChaCha20_ctr32");
  poly1305_ctx_size_fn size = (poly1305_ctx_size_fn)dlsym(RTLD_DEFAULT, "Poly1305_ctx_size");
  prim.poly_init = (poly1305_init_fn)dlsym(RTLD_DEFAULT, "Poly1305_Init");
  prim.poly_update = (poly1305_update_fn)dlsym(RTLD_DEFAULT, "Poly1305_Update");
  prim.poly_final = (poly1305_final_fn)dlsym(RTLD_DEFAULT, "Poly1305_Final");
  prim.available = prim.chacha20 != NULL && size != NULL && prim.poly_init != NULL && prim.poly_update != NULL &&
                   prim.poly_final != NULL && size() <= POLY_STATE_MAX;
  prim.use = prim.available;
}

static inline uint32_t load_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void store_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* ChaCha20's key words and the block-0 counter/nonce words of one packet. */
typedef struct prim_packet {
  unsigned int key[8];
  unsigned int counter[4];
} prim_packet;

static void prim_key(prim_packet *pp, const uint8_t *key) {
  for (int i = 0; i < 8; i++) pp->key[i] = load_le32(key + 4 * i);
}

/* Nonce: 4 zero bytes || the 8-byte counter of the header; block counter 0. */
static void prim_nonce(prim_packet *pp, const uint8_t *header) {
  pp->counter[0] = 0;
  pp->counter[1] = 0;
  pp->counter[2] = load_le32(header + WG_COUNTER_OFFSET);
  pp->counter[3] = load_le32(header + WG_COUNTER_OFFSET + 4);
}

/* Poly1305 tag over ciphertext c (AAD empty): c || pad16 || le64(0) || le64(len) (RFC 8439 2.8). */
static void prim_tag(const prim_packet *pp, void *state, const uint8_t *c, size_t len, uint8_t tag[WG_TAG_LEN]) {
  static const uint8_t zero64[64];
  uint8_t otk[64];
  /* The one-time key: the first 32 bytes of block 0's key stream. */
  prim.chacha20(otk, zero64, sizeof otk, pp->key, pp->counter);
  prim.poly_init(state, otk);
  OPENSSL_cleanse(otk, sizeof otk);
  prim.poly_update(state, c, len);
  if (len % 16 != 0) prim.poly_update(state, zero64, 16 - len % 16);
  uint8_t lens[16];
  store_le64(lens, 0);
  store_le64(lens + 8, (uint64_t)len);
  prim.poly_update(state, lens, sizeof lens);
  prim.poly_final(state, tag); /* wipes the state */
}

/* Encrypts or decrypts len bytes in place from block 1 (a message is < 2^32 blocks: no wrap). */
static void prim_cipher(prim_packet *pp, uint8_t *p, size_t len) {
  pp->counter[0] = 1;
  if (len > 0) prim.chacha20(p, p, len, pp->key, pp->counter);
}

/* One batch as the range functions see it (the pool hands out [from, to) ranges of it). */
typedef struct batch_job {
  uint8_t *buf;
  const uint32_t *offsets;
  const uint32_t *lengths; /* plaintext lengths to seal, whole message lengths to open */
  const uint8_t *const *keys;
  uint8_t *ok; /* open only */
} batch_job;

static bool seal_range_prim(const batch_job *j, uint32_t from, uint32_t to) {
  _Alignas(64) uint8_t state[POLY_STATE_MAX];
  prim_packet pp;
  const uint8_t *last_key = NULL;
  for (uint32_t i = from; i < to; i++) {
    uint8_t *h = j->buf + j->offsets[i];
    uint8_t *p = h + WG_HEADER_LEN;
    size_t len = j->lengths[i];
    if (j->keys[i] != last_key) {
      prim_key(&pp, j->keys[i]);
      last_key = j->keys[i];
    }
    prim_nonce(&pp, h);
    prim_cipher(&pp, p, len);
    pp.counter[0] = 0;
    prim_tag(&pp, state, p, len, p + len);
  }
  OPENSSL_cleanse(&pp, sizeof pp);
  return true;
}

static bool open_range_prim(const batch_job *j, uint32_t from, uint32_t to) {
  _Alignas(64) uint8_t state[POLY_STATE_MAX];
  prim_packet pp;
  const uint8_t *last_key = NULL;
  for (uint32_t i = from; i < to; i++) {
    uint8_t *h = j->buf + j->offsets[i];
    uint8_t *p = h + WG_HEADER_LEN;
    size_t len = j->lengths[i] - WG_HEADER_LEN - WG_TAG_LEN;
    if (j->keys[i] != last_key) {
      prim_key(&pp, j->keys[i]);
      last_key = j->keys[i];
    }
    prim_nonce(&pp, h);
    uint8_t tag[WG_TAG_LEN];
    prim_tag(&pp, state, p, len, tag);
    j->ok[i] = CRYPTO_memcmp(tag, p + len, WG_TAG_LEN) == 0;
    /* A forgery is never decrypted; its bytes are wiped as the EVP path does. */
    if (j->ok[i])
      prim_cipher(&pp, p, len);
    else
      memset(p, 0, len);
  }
  OPENSSL_cleanse(&pp, sizeof pp);
  return true;
}

static bool seal_range(EVP_CIPHER_CTX *ctx, const void *arg, uint32_t from, uint32_t to) {
  const batch_job *j = arg;
  if (prim.use) return seal_range_prim(j, from, to);
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
  if (prim.use) return open_range_prim(j, from, to);
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

/* aeadImplementation(name?): with "primitives" or "evp" chooses the implementation of every
 * Aead in the process (call it while no batch runs); returns the one in use. */
static napi_value js_aead_implementation(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc >= 1) {
    napi_valuetype t;
    napi_typeof(env, argv[0], &t);
    if (t != napi_undefined) {
      char name[16];
      size_t len = 0;
      if (t != napi_string || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok)
        return tg_throw_type(env, "implementation must be 'primitives' or 'evp'");
      if (strcmp(name, "evp") == 0)
        prim.use = false;
      else if (strcmp(name, "primitives") == 0) {
        if (!prim.available)
          return tg_throw_plain(env, "ERR_TG_CRYPTO", "this node does not export OpenSSL's ChaCha20 and Poly1305");
        prim.use = true;
      } else
        return tg_throw_type(env, "implementation must be 'primitives' or 'evp', got '%s'", name);
    }
  }
  napi_value out;
  napi_create_string_utf8(env, prim.use ? "primitives" : "evp", NAPI_AUTO_LENGTH, &out);
  return out;
}

napi_value tg_init_aead(napi_env env, napi_value exports) {
  resolve_primitives();
  napi_value impl;
  if (napi_create_function(env, "aeadImplementation", NAPI_AUTO_LENGTH, js_aead_implementation, NULL, &impl) !=
          napi_ok ||
      napi_set_named_property(env, exports, "aeadImplementation", impl) != napi_ok)
    return NULL;
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
