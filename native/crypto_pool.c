/* Crypto worker threads: one large AEAD batch is cut into parts that run at the same time on
 * the calling thread and on worker threads, and the call returns when every part is done.
 * To JavaScript a batch stays one synchronous call; nothing else changes.
 *
 * Rules:
 *  - Small batches never leave the calling thread: a part must carry at least
 *    TG_POOL_MIN_PART_BYTES, so one packet, a ping or a handshake costs no thread wake-up
 *    (latency), and a batch is split into at most `threads` parts.
 *  - The calling thread runs part 0 and then takes any part no worker has started yet, so a
 *    batch never waits for a worker that is slow to wake (a loaded host): at worst it runs
 *    inline, as with one thread.
 *  - Workers touch only the packet memory and keys of the batch, which the caller keeps
 *    alive for the call; never a JavaScript value. Each has its own cipher context, whose key
 *    is overwritten with zeros after every part.
 *  - One batch at a time per process: a second thread (a Node worker using the addon) that
 *    finds the pool busy runs its batch inline.
 *  - Workers start on first need, up to the configured count, and live as long as the process
 *    (idle ones sleep on a condition variable). */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>

#include "tg.h"

typedef struct pool_worker {
  pthread_t thread;
  EVP_CIPHER_CTX *ctx;
} pool_worker;

static struct {
  pthread_mutex_t job_mu; /* held by the thread whose batch is in the pool */
  pthread_mutex_t mu;     /* guards everything below */
  pthread_cond_t work_cv;
  pthread_cond_t done_cv;
  unsigned threads; /* parts per batch at most (calling thread included) */
  unsigned started; /* worker threads running */
  pool_worker workers[TG_POOL_MAX_THREADS];
  /* the batch in the pool */
  uint64_t generation;
  tg_pool_fn fn;
  const void *job;
  uint32_t bounds[TG_POOL_MAX_THREADS + 1];
  unsigned parts, next_part, running;
  bool failed;
  /* statistics */
  uint64_t parallel_batches, worker_parts;
} pool = {
    .job_mu = PTHREAD_MUTEX_INITIALIZER,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .work_cv = PTHREAD_COND_INITIALIZER,
    .done_cv = PTHREAD_COND_INITIALIZER,
    .threads = 1,
};

/* Takes the next part not started yet (mu held); false when none is left. */
static bool take_part(unsigned *part) {
  if (pool.next_part >= pool.parts) return false;
  *part = pool.next_part++;
  pool.running++;
  return true;
}

/* Runs one part with mu released, then books it (mu held again on return). */
static void run_part(unsigned part, EVP_CIPHER_CTX *ctx, bool worker) {
  tg_pool_fn fn = pool.fn;
  const void *job = pool.job;
  uint32_t from = pool.bounds[part], to = pool.bounds[part + 1];
  pthread_mutex_unlock(&pool.mu);
  bool ok = fn(ctx, job, from, to);
  if (worker) {
    /* Leave no session key behind in a context that outlives the batch. */
    static const uint8_t zero_key[32];
    if (EVP_CipherInit_ex(ctx, NULL, NULL, zero_key, NULL, -1) != 1) ERR_clear_error();
  }
  pthread_mutex_lock(&pool.mu);
  if (!ok) pool.failed = true;
  if (worker) pool.worker_parts++;
  if (--pool.running == 0 && pool.next_part >= pool.parts) pthread_cond_broadcast(&pool.done_cv);
}

static void *worker_main(void *arg) {
  pool_worker *w = arg;
  uint64_t seen = 0;
  pthread_mutex_lock(&pool.mu);
  for (;;) {
    unsigned part;
    while (pool.generation == seen || !take_part(&part)) {
      seen = pool.generation;
      pthread_cond_wait(&pool.work_cv, &pool.mu);
    }
    run_part(part, w->ctx, true);
  }
  return NULL; /* not reached: workers live as long as the process */
}

/* Starts workers until `want` run (mu held); returns how many run. */
static unsigned start_workers(unsigned want) {
  while (pool.started < want) {
    pool_worker *w = &pool.workers[pool.started];
    w->ctx = EVP_CIPHER_CTX_new();
    if (w->ctx == NULL || EVP_CipherInit_ex(w->ctx, EVP_chacha20_poly1305(), NULL, NULL, NULL, 1) != 1) {
      ERR_clear_error();
      if (w->ctx != NULL) EVP_CIPHER_CTX_free(w->ctx);
      w->ctx = NULL;
      break;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int r = pthread_create(&w->thread, &attr, worker_main, w);
    pthread_attr_destroy(&attr);
    if (r != 0) {
      EVP_CIPHER_CTX_free(w->ctx);
      w->ctx = NULL;
      break;
    }
    pool.started++;
  }
  return pool.started;
}

bool tg_pool_run(tg_pool_fn fn, const void *job, uint32_t count, uint64_t bytes, EVP_CIPHER_CTX *ctx) {
  unsigned parts = pool.threads; /* read without the lock: a stale value only changes the split */
  uint64_t by_bytes = bytes / TG_POOL_MIN_PART_BYTES;
  if (by_bytes < parts) parts = (unsigned)by_bytes;
  if (count < parts) parts = count;
  if (parts <= 1 || pthread_mutex_trylock(&pool.job_mu) != 0) return fn(ctx, job, 0, count);

  pthread_mutex_lock(&pool.mu);
  unsigned workers = start_workers(parts - 1);
  if (workers + 1 < parts) parts = workers + 1;
  if (parts <= 1) {
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&pool.job_mu);
    return fn(ctx, job, 0, count);
  }
  pool.fn = fn;
  pool.job = job;
  pool.parts = parts;
  for (unsigned i = 0; i <= parts; i++) pool.bounds[i] = (uint32_t)(((uint64_t)count * i) / parts);
  pool.next_part = 1; /* part 0 is the calling thread's */
  pool.running = 1;
  pool.failed = false;
  pool.generation++;
  pool.parallel_batches++;
  pthread_cond_broadcast(&pool.work_cv);
  run_part(0, ctx, false);
  unsigned part;
  while (take_part(&part)) run_part(part, ctx, false);
  while (pool.running > 0) pthread_cond_wait(&pool.done_cv, &pool.mu);
  bool ok = !pool.failed;
  pool.fn = NULL;
  pool.job = NULL;
  pthread_mutex_unlock(&pool.mu);
  pthread_mutex_unlock(&pool.job_mu);
  return ok;
}

/* setCryptoThreads(n): parts per batch at most, calling thread included (1 = never split). */
static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!tg_arg_count(env, info, 1, argv, NULL)) return NULL;
  uint32_t n;
  if (!tg_arg_u32(env, argv[0], "threads", &n)) return NULL;
  if (n < 1 || n > TG_POOL_MAX_THREADS)
    return tg_throw_range(env, "threads must be from 1 to %d, got %u", TG_POOL_MAX_THREADS, n);
  pthread_mutex_lock(&pool.mu);
  pool.threads = n;
  pthread_mutex_unlock(&pool.mu);
  return tg_undefined(env);
}

/* cryptoPoolStats(): { threads, workers, parallelBatches, workerParts } */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  if (!tg_arg_count(env, info, 0, NULL, NULL)) return NULL;
  pthread_mutex_lock(&pool.mu);
  uint64_t threads = pool.threads, workers = pool.started, batches = pool.parallel_batches,
           parts = pool.worker_parts;
  pthread_mutex_unlock(&pool.mu);
  napi_value o;
  napi_create_object(env, &o);
  napi_set_named_property(env, o, "threads", tg_uint(env, threads));
  napi_set_named_property(env, o, "workers", tg_uint(env, workers));
  napi_set_named_property(env, o, "parallelBatches", tg_uint(env, batches));
  napi_set_named_property(env, o, "workerParts", tg_uint(env, parts));
  return o;
}

napi_value tg_init_crypto_pool(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"setCryptoThreads", NULL, js_set_threads, NULL, NULL, NULL, napi_enumerable, NULL},
      {"cryptoPoolStats", NULL, js_stats, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, 2, props) != napi_ok) return NULL;
  return exports;
}
