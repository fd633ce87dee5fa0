/* Argument checks and error construction shared by every entry point. All size
 * arithmetic is done in 64 bits so that no combination of u32 inputs can wrap. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tg.h"

napi_value tg_undefined(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

napi_value tg_uint(napi_env env, uint64_t v) {
  napi_value r;
  napi_create_double(env, (double)v, &r); /* exact up to 2^53, far beyond any counter here */
  return r;
}

/* Node-style system error: .code = errno name, .errno = -errno, .syscall. */
napi_value tg_errno_error(napi_env env, int err, const char *syscall) {
  const char *name = strerrorname_np(err);
  char namebuf[24];
  if (name == NULL) {
    snprintf(namebuf, sizeof namebuf, "ERRNO_%d", err);
    name = namebuf;
  }
  char msg[192];
  snprintf(msg, sizeof msg, "%s: %s, %s", name, strerror(err), syscall);
  napi_value code, message, error, errno_v, syscall_v;
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, -err, &errno_v);
  napi_set_named_property(env, error, "errno", errno_v);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_v);
  napi_set_named_property(env, error, "syscall", syscall_v);
  return error;
}

napi_value tg_throw_errno(napi_env env, int err, const char *syscall) {
  napi_throw(env, tg_errno_error(env, err, syscall));
  return NULL;
}

napi_value tg_throw_plain(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

napi_value tg_throw_type(napi_env env, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

napi_value tg_throw_range(napi_env env, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

bool tg_arg_count(napi_env env, napi_callback_info info, size_t want, napi_value *argv, napi_value *this_arg) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, this_arg, NULL) != napi_ok) {
    tg_throw_plain(env, "ERR_TG_NAPI", "napi_get_cb_info failed");
    return false;
  }
  if (argc < want) {
    tg_throw_type(env, "expected %zu arguments, got %zu", want, argc);
    return false;
  }
  return true;
}

static bool typed_array(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *len) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) return false;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  if (napi_get_typedarray_info(env, v, &type, len, data, &ab, &offset) != napi_ok) return false;
  if (type != want) return false;
  if (*data == NULL) *len = 0; /* detached: treat as empty so every bound check fails cleanly */
  return true;
}

bool tg_get_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  void *d;
  if (!typed_array(env, v, napi_uint8_array, &d, len)) return false;
  *data = d;
  return true;
}

bool tg_arg_bytes(napi_env env, napi_value v, const char *what, uint8_t **data, size_t *len) {
  void *d;
  if (!typed_array(env, v, napi_uint8_array, &d, len)) {
    tg_throw_type(env, "%s must be a Buffer or Uint8Array", what);
    return false;
  }
  *data = d;
  return true;
}

bool tg_arg_u32array(napi_env env, napi_value v, const char *what, uint32_t **data, size_t *len) {
  void *d;
  if (!typed_array(env, v, napi_uint32_array, &d, len)) {
    tg_throw_type(env, "%s must be a Uint32Array", what);
    return false;
  }
  *data = d;
  return true;
}

bool tg_arg_u32(napi_env env, napi_value v, const char *what, uint32_t *out) {
  napi_valuetype t;
  double d;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
    tg_throw_type(env, "%s must be a number", what);
    return false;
  }
  napi_get_value_double(env, v, &d);
  if (!(d >= 0 && d <= 4294967295.0) || d != (double)(uint32_t)d) {
    /* Show the value as JS prints it (NaN, 1e+21, ...), not as printf would. */
    char shown[32] = "?";
    napi_value str;
    if (napi_coerce_to_string(env, v, &str) == napi_ok)
      napi_get_value_string_utf8(env, str, shown, sizeof shown, NULL);
    tg_throw_range(env, "%s must be an integer in [0, 2^32), got %s", what, shown);
    return false;
  }
  *out = (uint32_t)d;
  return true;
}

bool tg_arg_bool(napi_env env, napi_value v, const char *what, bool *out) {
  if (napi_get_value_bool(env, v, out) != napi_ok) {
    tg_throw_type(env, "%s must be a boolean", what);
    return false;
  }
  return true;
}

bool tg_check_slots(napi_env env, size_t slab_len, uint32_t slot_size, uint32_t headroom, uint32_t max,
                    size_t lengths_len) {
  if (headroom >= slot_size) {
    tg_throw_range(env, "headroom (%u) must be smaller than slotSize (%u)", headroom, slot_size);
    return false;
  }
  if (max > lengths_len) {
    tg_throw_range(env, "max (%u) exceeds lengths.length (%zu)", max, lengths_len);
    return false;
  }
  if ((uint64_t)max * slot_size > slab_len) {
    tg_throw_range(env, "max (%u) slots of %u bytes need %llu bytes, slab has %zu", max, slot_size,
                   (unsigned long long)max * slot_size, slab_len);
    return false;
  }
  return true;
}

bool tg_check_extents(napi_env env, size_t slab_len, const uint32_t *offsets, size_t offsets_len,
                      const uint32_t *lengths, size_t lengths_len, uint32_t count) {
  if (count > offsets_len || count > lengths_len) {
    tg_throw_range(env, "count (%u) exceeds offsets.length (%zu) or lengths.length (%zu)", count, offsets_len,
                   lengths_len);
    return false;
  }
  for (uint32_t i = 0; i < count; i++) {
    if ((uint64_t)offsets[i] + lengths[i] > slab_len) {
      tg_throw_range(env, "packet %u at offset %u, length %u ends past the slab (%zu bytes)", i, offsets[i],
                     lengths[i], slab_len);
      return false;
    }
  }
  return true;
}
