/* Packing, run-time dispatch, block driver, threading and the network engine. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dnpu_core.h"
#include "kernels.h"
#include "bf16.h"

#define BLK 32                /* samples per block pushed through all layers */
#define MIN_ROWS_PER_THREAD 128 /* below this a thread costs more than it saves */
#define STACK_FLOATS 8192     /* scratch kept on the stack when it fits (32 KB) */

/* ---- dispatch (the one piece of process-wide state, written once) ----------------------- */

static pthread_once_t dispatch_once = PTHREAD_ONCE_INIT;
static int isa_ok[DNPU_ISA_COUNT];
static int isa_default;
static int isa_env_status;
static const char *const isa_names[DNPU_ISA_COUNT] = {"generic", "avx2", "avx512"};

static void dispatch_init(void) {
  isa_ok[DNPU_ISA_GENERIC] = 1;
#ifdef DNPU_X86_KERNELS
  __builtin_cpu_init();
  isa_ok[DNPU_ISA_AVX2] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  isa_ok[DNPU_ISA_AVX512] = __builtin_cpu_supports("avx512f") && isa_ok[DNPU_ISA_AVX2];
#endif
  isa_default = DNPU_ISA_GENERIC;
  for (int i = 0; i < DNPU_ISA_COUNT; i++)
    if (isa_ok[i]) isa_default = i;
  const char *env = getenv("DNPU_CORE_ISA");
  isa_env_status = 0;
  if (env && *env) {
    int found = -1;
    for (int i = 0; i < DNPU_ISA_COUNT; i++)
      if (strcmp(env, isa_names[i]) == 0) found = i;
    if (found < 0)
      isa_env_status = 1;
    else if (!isa_ok[found])
      isa_env_status = 2;
    else
      isa_default = found;
  }
}

int dnpu_isa_supported(int isa) {
  pthread_once(&dispatch_once, dispatch_init);
  return isa >= 0 && isa < DNPU_ISA_COUNT && isa_ok[isa];
}
int dnpu_default_isa(void) {
  pthread_once(&dispatch_once, dispatch_init);
  return isa_default;
}
int dnpu_isa_env_status(void) {
  pthread_once(&dispatch_once, dispatch_init);
  return isa_env_status;
}
const char *dnpu_isa_name(int isa) {
  return (isa >= 0 && isa < DNPU_ISA_COUNT) ? isa_names[isa] : "unknown";
}

static const dnpu_kernels *kernels_for(int isa) {
  if (!dnpu_isa_supported(isa)) return NULL;
  switch (isa) {
#ifdef DNPU_X86_KERNELS
    case DNPU_ISA_AVX512: return &dnpu_kernels_avx512;
    case DNPU_ISA_AVX2: return &dnpu_kernels_avx2;
#endif
    default: return &dnpu_kernels_generic;
  }
}

/* ---- packing ----------------------------------------------------------------------------- */

static float *alloc_floats(size_t n) {
  size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
  if (bytes == 0) bytes = 64;
  float *p = aligned_alloc(64, bytes);
  if (p) memset(p, 0, bytes);
  return p;
}

int dnpu_layer_pack(dnpu_layer *L, int k, int n, const float *Wt, const float *b, int relu) {
  if (!L || !Wt || k <= 0 || n <= 0) return DNPU_ERR_ARG;
  memset(L, 0, sizeof *L);
  L->k = k;
  L->n = n;
  L->npad = (n + DNPU_LANES - 1) / DNPU_LANES * DNPU_LANES;
  L->relu = relu ? 1 : 0;
  L->w = alloc_floats(n == 1 ? (size_t)k : (size_t)k * L->npad);
  L->b = alloc_floats((size_t)L->npad);
  if (!L->w || !L->b) {
    dnpu_layer_free(L);
    return DNPU_ERR_NOMEM;
  }
  if (n == 1) {
    memcpy(L->w, Wt, (size_t)k * sizeof(float));
  } else {
    for (int j = 0; j < n; j++)
      for (int kk = 0; kk < k; kk++) L->w[(size_t)kk * L->npad + j] = Wt[(size_t)j * k + kk];
  }
  if (b) memcpy(L->b, b, (size_t)n * sizeof(float));
  return DNPU_OK;
}

void dnpu_layer_free(dnpu_layer *L) {
  if (!L) return;
  free(L->w);
  free(L->b);
  L->w = L->b = NULL;
}

/* ---- the MLP block driver ---------------------------------------------------------------- */

static int mlp_width(const dnpu_mlp *m) { /* widest padded activation row */
  int w = DNPU_LANES;
  for (int l = 0; l < m->n_layers; l++)
    if (m->layer[l].npad > w) w = m->layer[l].npad;
  return w;
}

/* rows <= BLK samples through every layer; buf0/buf1 hold BLK rows of ldb floats each. */
static void mlp_rows(const dnpu_mlp *m, dnpu_layer_fn fn, size_t rows, const float *x, size_t ldx,
                     float *y, size_t ldy, float *buf0, float *buf1, size_t ldb) {
  const float *in = x;
  size_t ldin = ldx;
  float *bufs[2] = {buf0, buf1};
  const int last = m->n_layers - 1;
  for (int l = 0; l <= last; l++) {
    const dnpu_layer *L = &m->layer[l];
    if (l == last && L->n == 1) {
      fn(L, rows, in, ldin, y, ldy);
      return;
    }
    float *out = bufs[l & 1];
    fn(L, rows, in, ldin, out, ldb);
    in = out;
    ldin = ldb;
  }
  const int nout = m->layer[last].n;
  for (size_t r = 0; r < rows; r++) memcpy(y + r * ldy, in + r * ldin, (size_t)nout * sizeof(float));
}

/* Threads take blocks of BLK samples from a shared counter, so a thread slowed down by other
 * work on a shared machine simply takes fewer blocks. */
typedef struct mlp_job {
  const dnpu_mlp *m;
  dnpu_layer_fn fn;
  atomic_size_t *next;
  size_t n;
  const float *x;
  size_t ldx;
  float *y;
  size_t ldy;
  int err;
} mlp_job;

static void *mlp_job_run(void *arg) {
  mlp_job *j = arg;
  const size_t ldb = (size_t)mlp_width(j->m);
  const size_t rows_blk = j->n < BLK ? j->n : BLK;
  const size_t need = 2 * rows_blk * ldb;
  _Alignas(64) float stackbuf[STACK_FLOATS];
  float *buf = stackbuf;
  if (need > STACK_FLOATS) {
    buf = alloc_floats(need);
    if (!buf) {
      j->err = DNPU_ERR_NOMEM;
      return NULL;
    }
  }
  for (;;) {
    const size_t i = atomic_fetch_add(j->next, BLK);
    if (i >= j->n) break;
    const size_t rows = j->n - i < BLK ? j->n - i : BLK;
    mlp_rows(j->m, j->fn, rows, j->x + i * j->ldx, j->ldx, j->y + i * j->ldy, j->ldy, buf,
             buf + rows_blk * ldb, ldb);
  }
  if (buf != stackbuf) free(buf);
  return NULL;
}

/* Runs jobs[0..n) on n fresh threads (the caller runs jobs[0]); a job whose thread cannot be
 * created runs in the caller.  The fallback when the worker pool is busy. */
static void run_jobs_spawn(void *jobs, size_t job_size, int n, void *(*run)(void *)) {
  pthread_t tid[DNPU_MAX_THREADS];
  int started[DNPU_MAX_THREADS];
  for (int t = 1; t < n; t++)
    started[t] = pthread_create(&tid[t], NULL, run, (char *)jobs + t * job_size) == 0;
  run(jobs);
  for (int t = 1; t < n; t++) {
    if (started[t])
      pthread_join(tid[t], NULL);
    else
      run((char *)jobs + t * job_size);
  }
}

/* ---- worker pool ---------------------------------------------------------------------------
 * Creating and joining threads on every call costs tens of microseconds, a few per cent of a
 * 4096-sample batch.  Workers are started on first use and then sleep on a condition variable
 * between calls (no spinning).  One call uses the pool at a time; a concurrent caller (another
 * Python thread: the GIL is released) falls back to fresh threads.  Worker w runs job w of each
 * dispatch; `gen` counts dispatches, so a worker never runs a dispatch twice or misses one. */
typedef struct worker_pool {
  pthread_mutex_t mu;
  pthread_cond_t wake, done;
  int n_workers;                          /* workers started: ids 1..n_workers */
  unsigned long gen;                      /* dispatches so far */
  unsigned long start_gen[DNPU_MAX_THREADS];
  char *jobs;
  size_t job_size;
  int n_jobs;                             /* jobs of the current dispatch (0 runs in the caller) */
  void *(*run)(void *);
  int pending;                            /* pool jobs of the current dispatch not yet finished */
} worker_pool;

static worker_pool pool = {.mu = PTHREAD_MUTEX_INITIALIZER,
                           .wake = PTHREAD_COND_INITIALIZER,
                           .done = PTHREAD_COND_INITIALIZER};
static pthread_mutex_t pool_owner = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

/* In a child after fork() the workers do not exist: start from an empty pool. */
static void pool_after_fork_child(void) {
  pthread_mutex_init(&pool.mu, NULL);
  pthread_cond_init(&pool.wake, NULL);
  pthread_cond_init(&pool.done, NULL);
  pthread_mutex_init(&pool_owner, NULL);
  pool.n_workers = 0;
  pool.n_jobs = 0;
  pool.pending = 0;
}

static void pool_init(void) { pthread_atfork(NULL, NULL, pool_after_fork_child); }

static void *pool_worker(void *arg) {
  const int id = (int)(intptr_t)arg;
  pthread_mutex_lock(&pool.mu);
  unsigned long seen = pool.start_gen[id];
  for (;;) {
    while (pool.gen == seen) pthread_cond_wait(&pool.wake, &pool.mu);
    seen = pool.gen;
    if (id < pool.n_jobs) {
      void *job = pool.jobs + (size_t)id * pool.job_size;
      void *(*run)(void *) = pool.run;
      pthread_mutex_unlock(&pool.mu);
      run(job);
      pthread_mutex_lock(&pool.mu);
      if (--pool.pending == 0) pthread_cond_signal(&pool.done);
    }
  }
  return NULL;
}

/* Runs jobs[0..n) on n threads: the caller runs jobs[0], pool workers the others. */
static void run_jobs(void *jobs, size_t job_size, int n, void *(*run)(void *)) {
  if (n <= 1) {
    run(jobs);
    return;
  }
  pthread_once(&pool_once, pool_init);
  if (pthread_mutex_trylock(&pool_owner) != 0) {
    run_jobs_spawn(jobs, job_size, n, run);
    return;
  }
  pthread_mutex_lock(&pool.mu);
  while (pool.n_workers < n - 1) {
    const int id = pool.n_workers + 1;
    pthread_t t;
    pool.start_gen[id] = pool.gen;
    if (pthread_create(&t, NULL, pool_worker, (void *)(intptr_t)id) != 0) break;
    pthread_detach(t);
    pool.n_workers = id;
  }
  const int use = pool.n_workers + 1 < n ? pool.n_workers + 1 : n;
  pool.jobs = jobs;
  pool.job_size = job_size;
  pool.run = run;
  pool.n_jobs = use;
  pool.pending = use - 1;
  pool.gen++;
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.mu);
  run(jobs);
  for (int t = use; t < n; t++) run((char *)jobs + t * job_size); /* no worker could start */
  pthread_mutex_lock(&pool.mu);
  while (pool.pending > 0) pthread_cond_wait(&pool.done, &pool.mu);
  pool.n_jobs = 0;
  pthread_mutex_unlock(&pool.mu);
  pthread_mutex_unlock(&pool_owner);
}

static int threads_for(size_t n, int n_threads) {
  size_t t = (n + MIN_ROWS_PER_THREAD - 1) / MIN_ROWS_PER_THREAD;
  if (t < 1) t = 1;
  if (t > (size_t)n_threads) t = (size_t)n_threads;
  return (int)t;
}

int dnpu_mlp_eval(const dnpu_mlp *m, int isa, int n_threads, size_t n, const float *x,
                  size_t ldx, float *y, size_t ldy) {
  if (!m || m->n_layers < 1 || m->n_layers > DNPU_MAX_LAYERS) return DNPU_ERR_ARG;
  if (n_threads < 1 || n_threads > DNPU_MAX_THREADS) return DNPU_ERR_ARG;
  const dnpu_kernels *kern = kernels_for(isa);
  if (!kern) return DNPU_ERR_ISA;
  if (n == 0) return DNPU_OK;
  if (!x || !y) return DNPU_ERR_ARG;
  const int T = threads_for(n, n_threads);
  mlp_job jobs[DNPU_MAX_THREADS];
  atomic_size_t next;
  atomic_init(&next, 0);
  for (int t = 0; t < T; t++) jobs[t] = (mlp_job){m, kern->layer, &next, n, x, ldx, y, ldy, DNPU_OK};
  run_jobs(jobs, sizeof(mlp_job), T, mlp_job_run);
  for (int t = 0; t < T; t++)
    if (jobs[t].err) return jobs[t].err;
  return DNPU_OK;
}

/* ---- value and input gradient ---------------------------------------------------------- */

static int grad_shapes_ok(const dnpu_mlp *m, const dnpu_mlp *back) {
  const int L = m->n_layers;
  if (L < 1 || L > DNPU_MAX_LAYERS || back->n_layers != L - 1) return 0;
  if (m->layer[L - 1].n != 1 || m->layer[L - 1].relu) return 0;
  for (int l = 0; l < L - 1; l++) {
    const dnpu_layer *F = &m->layer[l], *B = &back->layer[l];
    if (!F->relu || B->relu || B->k != F->n || B->n != F->k) return 0;
  }
  return 1;
}

/* One job type for both precisions: back (float32) or c (bf16 tiles) is set. */
typedef struct grad_job {
  const dnpu_mlp *m, *back;
  const dnpu_bf16_chain *c;
  dnpu_layer_fn fn; /* float32 layers (bf16: the first and the last) */
  atomic_size_t *next;
  size_t n, ldx, ldg, ldb;
  const float *x;
  float *y, *g;
  int err;
  int nvm; /* bf16: ReLU mask words per row (16 columns each) */
  int unit; /* bf16: the unit of the products (DNPU_BF16_AMX or DNPU_BF16_AVX512) */
} grad_job;

/* m's layers as a chain that runs dense: at the density of a trained ReLU chain skipping
 * zeros saves nothing on these passes */
static dnpu_mlp dense_copy(const dnpu_mlp *m) {
  dnpu_mlp d = *m;
  for (int l = 0; l < d.n_layers; l++) d.layer[l].sparse_in = 0;
  return d;
}

/* Copies of `proto` (sharing one block counter) on the threads n rows call for; the first error. */
static int run_grad_jobs(grad_job proto, int n_threads, void *(*run)(void *)) {
  const int T = threads_for(proto.n, n_threads);
  grad_job jobs[DNPU_MAX_THREADS];
  atomic_size_t next;
  atomic_init(&next, 0);
  proto.next = &next;
  for (int t = 0; t < T; t++) jobs[t] = proto;
  run_jobs(jobs, sizeof(grad_job), T, run);
  for (int t = 0; t < T; t++)
    if (jobs[t].err) return jobs[t].err;
  return DNPU_OK;
}

/* g (rows x n, stride ldb) *= (act > 0): the ReLU's derivative, 0 where it clipped */
static void relu_mask(size_t rows, int n, float *restrict g, const float *restrict act,
                      size_t ldb) {
  for (size_t r = 0; r < rows; r++) {
    float *restrict gr = g + r * ldb;
    const float *restrict ar = act + r * ldb;
    for (int j = 0; j < n; j++) gr[j] = ar[j] > 0.0f ? gr[j] : 0.0f;
  }
}

/* rows <= BLK samples: forward keeping every hidden activation, then back to the inputs.
 * acts: L-1 buffers of BLK x ldb; g0, g1: BLK x ldb each. */
static void grad_rows(const grad_job *j, size_t rows, const float *x, float *y, float *g,
                      float *acts, float *g0, float *g1) {
  const dnpu_mlp *m = j->m;
  const int L = m->n_layers;
  const size_t ldb = j->ldb, stride = BLK * ldb;
  const float *in = x;
  size_t ldin = j->ldx;
  for (int l = 0; l < L - 1; l++) {
    float *out = acts + (size_t)l * stride;
    j->fn(&m->layer[l], rows, in, ldin, out, ldb);
    in = out;
    ldin = ldb;
  }
  const dnpu_layer *last = &m->layer[L - 1];
  j->fn(last, rows, in, ldin, y, 1);
  /* dy/d(input of the last layer) = its weight row, masked by the ReLU before it */
  for (size_t r = 0; r < rows; r++) memcpy(g0 + r * ldb, last->w, (size_t)last->k * sizeof(float));
  float *cur = g0, *nxt = g1;
  for (int l = L - 2; l >= 0; l--) {
    relu_mask(rows, m->layer[l].n, cur, acts + (size_t)l * stride, ldb);
    j->fn(&j->back->layer[l], rows, cur, ldb, nxt, ldb);
    float *t = cur;
    cur = nxt;
    nxt = t;
  }
  const int nin = m->layer[0].k;
  for (size_t r = 0; r < rows; r++)
    memcpy(g + r * j->ldg, cur + r * ldb, (size_t)nin * sizeof(float));
}

static void *grad_job_run(void *arg) {
  grad_job *j = arg;
  const size_t stride = BLK * j->ldb;
  float *buf = alloc_floats(((size_t)j->m->n_layers + 1) * stride);
  if (!buf) {
    j->err = DNPU_ERR_NOMEM;
    return NULL;
  }
  float *acts = buf, *g0 = buf + (size_t)(j->m->n_layers - 1) * stride, *g1 = g0 + stride;
  for (;;) {
    const size_t i = atomic_fetch_add(j->next, BLK);
    if (i >= j->n) break;
    const size_t rows = j->n - i < BLK ? j->n - i : BLK;
    grad_rows(j, rows, j->x + i * j->ldx, j->y + i, j->g + i * j->ldg, acts, g0, g1);
  }
  free(buf);
  return NULL;
}

int dnpu_mlp_value_grad(const dnpu_mlp *m, const dnpu_mlp *back, int isa, int n_threads, size_t n,
                        const float *x, size_t ldx, float *y, float *g, size_t ldg) {
  if (!m || !back || !grad_shapes_ok(m, back)) return DNPU_ERR_ARG;
  if (n_threads < 1 || n_threads > DNPU_MAX_THREADS) return DNPU_ERR_ARG;
  if (ldx < (size_t)m->layer[0].k || ldg < (size_t)m->layer[0].k) return DNPU_ERR_ARG;
  const dnpu_kernels *kern = kernels_for(isa);
  if (!kern) return DNPU_ERR_ISA;
  if (n == 0) return DNPU_OK;
  if (!x || !y || !g) return DNPU_ERR_ARG;
  const dnpu_mlp fwd = dense_copy(m), bwd = dense_copy(back);
  size_t ldb = (size_t)mlp_width(m);
  if ((size_t)mlp_width(back) > ldb) ldb = (size_t)mlp_width(back);
  return run_grad_jobs((grad_job){&fwd, &bwd, NULL, kern->layer, NULL, n, ldx, ldg, ldb, x, y, g, DNPU_OK, 0},
                       n_threads, grad_job_run);
}

/* ---- the same with bfloat16 tiles --------------------------------------------------------- */

#define B16 16 /* rows per tile product */
#define S16 128 /* rows taken through each layer before the next (per thread) */

#ifndef DNPU_BF16_KERNELS /* stubs: never called, dnpu_bf16_unit() is DNPU_BF16_NONE */
int dnpu_bf16_unit(void) { return DNPU_BF16_NONE; }
void dnpu_bf16_thread_begin(int unit) {}
void dnpu_bf16_thread_end(int unit) {}
void dnpu_bf16_matmul16(int unit, const dnpu_bf16_layer *L, const uint16_t *a, size_t lda, float *c,
                        size_t ldc) {}
void dnpu_bf16_fwd_epilogue(size_t rows, int n, int kp, const float *c, size_t ldc,
                            const float *bias, uint16_t *mask, int nvm, uint16_t *a16, size_t lda,
                            const float *w, float wb, float *y) {}
void dnpu_bf16_bwd_epilogue(size_t rows, int n, int kp, const float *g, size_t ldg,
                            const uint16_t *mask, int nvm, uint16_t *a16, size_t lda) {}
#endif

int dnpu_bf16_supported(void) { return dnpu_bf16_unit() != DNPU_BF16_NONE; }

const char *dnpu_bf16_unit_name(void) {
  static const char *const names[] = {"none", "amx", "avx512bf16"};
  return names[dnpu_bf16_unit()];
}

static uint16_t f32_to_bf16(float f) { /* round to nearest even (weights are finite) */
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static int bf16_layer_pack(dnpu_bf16_layer *B, const dnpu_layer *F) {
  memset(B, 0, sizeof *B);
  B->k = F->k;
  B->n = F->n;
  B->kp = (F->k + 31) / 32 * 32;
  B->np = F->npad; /* n rounded up to 16, as the float32 packing pads it */
  if (B->np > 96) return DNPU_ERR_ARG;
  const int nnt = B->np / 16;
  const size_t count = (size_t)B->kp * B->np;
  B->bp = aligned_alloc(64, ((count * sizeof(uint16_t) + 63) / 64) * 64);
  if (!B->bp) return DNPU_ERR_NOMEM;
  memset(B->bp, 0, count * sizeof(uint16_t));
  for (int kk = 0; kk < F->k; kk++)
    for (int j = 0; j < F->n; j++) {
      const float w = F->n == 1 ? F->w[kk] : F->w[(size_t)kk * F->npad + j];
      const int kc = kk / 32, p = (kk % 32) / 2, e = kk % 2, nt = j / 16, c = j % 16;
      B->bp[(((size_t)kc * nnt + nt) * 16 + p) * 32 + c * 2 + e] = f32_to_bf16(w);
    }
  return DNPU_OK;
}

void dnpu_bf16_chain_free(dnpu_bf16_chain *c) {
  if (!c) return;
  for (int l = 0; l < DNPU_MAX_LAYERS; l++) {
    free(c->fwd[l].bp);
    free(c->back[l].bp);
  }
  memset(c, 0, sizeof *c);
}

int dnpu_bf16_chain_pack(dnpu_bf16_chain *c, const dnpu_mlp *m, const dnpu_mlp *back) {
  if (!c || !m || !back || !grad_shapes_ok(m, back)) return DNPU_ERR_ARG;
  memset(c, 0, sizeof *c);
  c->n_layers = m->n_layers;
  int rc = DNPU_OK;
  for (int l = 0; l < m->n_layers - 1 && rc == DNPU_OK; l++) {
    if (l > 0) rc = bf16_layer_pack(&c->fwd[l], &m->layer[l]);
    if (rc == DNPU_OK) rc = bf16_layer_pack(&c->back[l], &back->layer[l]);
  }
  if (rc != DNPU_OK) dnpu_bf16_chain_free(c);
  return rc;
}

/* rows <= S16 samples, layer by layer in tiles of B16 rows.  Between layers only bf16
 * activations (a16, two S16 x ldb buffers: a layer's products read one while its epilogues
 * write the other) and ReLU masks (masks: L-1 blocks of S16 x nvm) are kept; c holds one tile's
 * float32 product.  The working set stays near L1: no float32 activation is stored. */
static void grad16_rows(const grad_job *j, size_t rows, const float *x, float *y, float *g,
                        uint16_t *masks, float *c, uint16_t *a16[2], const float *zero) {
  const dnpu_mlp *m = j->m;
  const dnpu_bf16_chain *ch = j->c;
  const int L = m->n_layers, nvm = j->nvm, u = j->unit;
  const size_t ldb = j->ldb, mstride = S16 * (size_t)nvm;
  const dnpu_layer *last = &m->layer[L - 1];
  int cur = 0;
  for (int l = 0; l < L - 1; l++, cur ^= 1) {
    const int is_last = l == L - 2;
    const int kp_next = is_last ? 0 : ch->fwd[l + 1].kp;
    const float *bias = l == 0 ? zero : m->layer[l].b; /* layer 0 comes biased and rectified */
    for (size_t r0 = 0; r0 < rows; r0 += B16) {
      const size_t tr = rows - r0 < B16 ? rows - r0 : B16;
      if (l == 0)
        j->fn(&m->layer[0], tr, x + r0 * j->ldx, j->ldx, c, ldb);
      else
        dnpu_bf16_matmul16(u, &ch->fwd[l], a16[cur] + r0 * ldb, ldb, c, ldb);
      dnpu_bf16_fwd_epilogue(tr, m->layer[l].n, kp_next, c, ldb, bias,
                            masks + (size_t)l * mstride + r0 * nvm, nvm,
                            is_last ? NULL : a16[cur ^ 1] + r0 * ldb, ldb,
                            is_last ? last->w : NULL, last->b[0], y + r0);
    }
  }
  /* backward: the output layer's weights through the last ReLU, then layer by layer */
  for (size_t r0 = 0; r0 < rows; r0 += B16) {
    const size_t tr = rows - r0 < B16 ? rows - r0 : B16;
    dnpu_bf16_bwd_epilogue(tr, last->k, ch->back[L - 2].kp, last->w, 0,
                          masks + (size_t)(L - 2) * mstride + r0 * nvm, nvm, a16[cur] + r0 * ldb, ldb);
  }
  const int nin = m->layer[0].k;
  for (int l = L - 2; l >= 0; l--, cur ^= 1) {
    for (size_t r0 = 0; r0 < rows; r0 += B16) {
      const size_t tr = rows - r0 < B16 ? rows - r0 : B16;
      dnpu_bf16_matmul16(u, &ch->back[l], a16[cur] + r0 * ldb, ldb, c, ldb);
      if (l > 0)
        dnpu_bf16_bwd_epilogue(tr, m->layer[l - 1].n, ch->back[l - 1].kp, c, ldb,
                              masks + (size_t)(l - 1) * mstride + r0 * nvm, nvm,
                              a16[cur ^ 1] + r0 * ldb, ldb);
      else
        for (size_t r = 0; r < tr; r++)
          memcpy(g + (r0 + r) * j->ldg, c + r * ldb, (size_t)nin * sizeof(float));
    }
  }
}

static void *grad16_job_run(void *arg) {
  grad_job *j = arg;
  const int L = j->m->n_layers;
  const size_t a16_floats = S16 * j->ldb; /* two bf16 buffers of S16 x ldb */
  const size_t mask_floats = ((size_t)(L - 1) * S16 * (size_t)j->nvm + 1) / 2;
  float *buf = alloc_floats(B16 * j->ldb + j->ldb + a16_floats + mask_floats);
  if (!buf) {
    j->err = DNPU_ERR_NOMEM;
    return NULL;
  }
  float *c = buf, *zero = buf + B16 * j->ldb;
  uint16_t *a16[2] = {(uint16_t *)(zero + j->ldb), (uint16_t *)(zero + j->ldb) + S16 * j->ldb};
  uint16_t *masks = (uint16_t *)(zero + j->ldb + a16_floats);
  dnpu_bf16_thread_begin(j->unit);
  for (;;) {
    const size_t i = atomic_fetch_add(j->next, S16);
    if (i >= j->n) break;
    const size_t rows = j->n - i < S16 ? j->n - i : S16;
    grad16_rows(j, rows, j->x + i * j->ldx, j->y + i, j->g + i * j->ldg, masks, c, a16, zero);
  }
  dnpu_bf16_thread_end(j->unit);
  free(buf);
  return NULL;
}

int dnpu_mlp_value_grad_bf16(const dnpu_mlp *m, const dnpu_bf16_chain *c, int n_threads, size_t n,
                             const float *x, size_t ldx, float *y, float *g, size_t ldg) {
  if (!m || !c || c->n_layers != m->n_layers || m->n_layers < 2) return DNPU_ERR_ARG;
  if (n_threads < 1 || n_threads > DNPU_MAX_THREADS) return DNPU_ERR_ARG;
  if (ldx < (size_t)m->layer[0].k || ldg < (size_t)m->layer[0].k) return DNPU_ERR_ARG;
  if (!dnpu_bf16_supported()) return DNPU_ERR_ISA;
  const dnpu_kernels *kern = kernels_for(dnpu_default_isa());
  if (!kern) return DNPU_ERR_ISA;
  if (n == 0) return DNPU_OK;
  if (!x || !y || !g) return DNPU_ERR_ARG;
  const dnpu_mlp fwd = dense_copy(m);
  size_t ldb = (size_t)mlp_width(m);
  for (int l = 0; l < m->n_layers - 1; l++) {
    const dnpu_bf16_layer *B[2] = {&c->fwd[l], &c->back[l]};
    for (int i = 0; i < 2; i++) {
      if ((size_t)B[i]->kp > ldb) ldb = (size_t)B[i]->kp;
      if ((size_t)B[i]->np > ldb) ldb = (size_t)B[i]->np;
    }
  }
  int nvm = 1; /* mask words per row: 16 units each */
  for (int l = 0; l < m->n_layers - 1; l++)
    if (m->layer[l].npad / DNPU_LANES > nvm) nvm = m->layer[l].npad / DNPU_LANES;
  return run_grad_jobs(
      (grad_job){&fwd, NULL, c, kern->layer, NULL, n, ldx, ldg, ldb, x, y, g, DNPU_OK, nvm, dnpu_bf16_unit()},
      n_threads, grad16_job_run);
}

/* ---- network engine ---------------------------------------------------------------------- */

static inline size_t pad16(size_t n) { return (n + DNPU_LANES - 1) / DNPU_LANES * DNPU_LANES; }

typedef struct net_job {
  const dnpu_net *net;
  dnpu_layer_fn fn;
  atomic_size_t *next;
  size_t n;
  const float *x;
  float *y;
  size_t ldact, ldmlp, ldnode; /* row strides of the scratch areas */
  int err;
} net_job;

static void net_rows(const net_job *j, size_t rows, const float *x, float *y, float *act0,
                     float *act1, float *node_in, float *mlp0, float *mlp1) {
  const dnpu_net *net = j->net;
  const float *in = x;
  size_t ldin = (size_t)net->n_in;
  float *acts[2] = {act0, act1};
  const size_t lda = j->ldact;
  for (int o = 0; o < net->n_ops; o++) {
    const dnpu_op *op = &net->ops[o];
    float *out = acts[o & 1];
    switch (op->kind) {
      case DNPU_OP_LINEAR:
        j->fn(&op->lin, rows, in, ldin, out, lda);
        break;
      case DNPU_OP_AFFINE:
        for (size_t r = 0; r < rows; r++) {
          const float *restrict ir = in + r * ldin;
          float *restrict orow = out + r * lda;
          for (int c = 0; c < op->n_out; c++) orow[c] = ir[c] * op->scale[c] + op->shift[c];
        }
        break;
      case DNPU_OP_DNPU:
        for (int q = 0; q < op->n_nodes; q++) {
          const dnpu_node *nd = &op->nodes[q];
          const size_t ldn = j->ldnode;
          for (size_t r = 0; r < rows; r++) {
            const float *restrict ir = in + r * ldin;
            float *restrict vr = node_in + r * ldn;
            for (int d = 0; d < nd->n_data; d++) {
              float v = ir[nd->in_index[d]] * nd->in_scale[d] + nd->in_offset[d];
              v = v < nd->lo[d] ? nd->lo[d] : v; /* comparisons keep NaN */
              v = v > nd->hi[d] ? nd->hi[d] : v;
              vr[d] = v;
            }
          }
          mlp_rows(nd->mlp, j->fn, rows, node_in, ldn, out + q, lda, mlp0, mlp1, j->ldmlp);
          const float s = nd->out_scale, off = nd->out_offset;
          for (size_t r = 0; r < rows; r++) out[r * lda + q] = out[r * lda + q] * s + off;
        }
        break;
      default:
        break;
    }
    in = out;
    ldin = lda;
  }
  for (size_t r = 0; r < rows; r++)
    memcpy(y + r * (size_t)net->n_out, in + r * ldin, (size_t)net->n_out * sizeof(float));
}

static void *net_job_run(void *arg) {
  net_job *j = arg;
  const size_t a = BLK * j->ldact, m = BLK * j->ldmlp, nd = BLK * j->ldnode;
  float *buf = alloc_floats(2 * a + nd + 2 * m);
  if (!buf) {
    j->err = DNPU_ERR_NOMEM;
    return NULL;
  }
  const dnpu_net *net = j->net;
  for (;;) {
    const size_t i = atomic_fetch_add(j->next, BLK);
    if (i >= j->n) break;
    const size_t rows = j->n - i < BLK ? j->n - i : BLK;
    net_rows(j, rows, j->x + i * (size_t)net->n_in, j->y + i * (size_t)net->n_out, buf, buf + a,
             buf + 2 * a, buf + 2 * a + nd, buf + 2 * a + nd + m);
  }
  free(buf);
  return NULL;
}

int dnpu_net_eval(const dnpu_net *net, int isa, int n_threads, size_t n, const float *x, float *y) {
  if (!net || net->n_ops < 1 || net->n_in < 1 || net->n_out < 1) return DNPU_ERR_ARG;
  if (n_threads < 1 || n_threads > DNPU_MAX_THREADS) return DNPU_ERR_ARG;
  const dnpu_kernels *kern = kernels_for(isa);
  if (!kern) return DNPU_ERR_ISA;
  if (n == 0) return DNPU_OK;
  if (!x || !y) return DNPU_ERR_ARG;
  size_t ldact = pad16((size_t)net->n_in), ldmlp = DNPU_LANES, ldnode = 1;
  for (int o = 0; o < net->n_ops; o++) {
    const dnpu_op *op = &net->ops[o];
    if (pad16((size_t)op->n_out) > ldact) ldact = pad16((size_t)op->n_out);
    if (op->kind == DNPU_OP_DNPU)
      for (int q = 0; q < op->n_nodes; q++) {
        const dnpu_node *nd = &op->nodes[q];
        if ((size_t)mlp_width(nd->mlp) > ldmlp) ldmlp = (size_t)mlp_width(nd->mlp);
        if ((size_t)nd->n_data > ldnode) ldnode = (size_t)nd->n_data;
      }
  }
  const int T = threads_for(n, n_threads);
  net_job jobs[DNPU_MAX_THREADS];
  atomic_size_t next;
  atomic_init(&next, 0);
  for (int t = 0; t < T; t++)
    jobs[t] = (net_job){net, kern->layer, &next, n, x, y, ldact, ldmlp, ldnode, DNPU_OK};
  run_jobs(jobs, sizeof(net_job), T, net_job_run);
  for (int t = 0; t < T; t++)
    if (jobs[t].err) return jobs[t].err;
  return DNPU_OK;
}

/* ---- FMA peak ---------------------------------------------------------------------------- */

typedef struct fma_job {
  dnpu_fma_spin_fn spin;
  long iters;
  double flops, seconds;
  float sink;
} fma_job;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *fma_job_run(void *arg) {
  fma_job *j = arg;
  double t0 = now_s();
  j->flops = j->spin(j->iters, &j->sink);
  j->seconds = now_s() - t0;
  return NULL;
}

double dnpu_fma_peak_gflops(int isa, int n_threads, double seconds) {
  const dnpu_kernels *kern = kernels_for(isa);
  if (!kern || n_threads < 1 || n_threads > DNPU_MAX_THREADS || !(seconds > 0)) return -1.0;
  /* calibrate on one thread */
  fma_job probe = {kern->fma_spin, 1 << 16, 0, 0, 0};
  for (;;) {
    fma_job_run(&probe);
    if (probe.seconds > 0.01 || probe.iters > (1L << 40)) break;
    probe.iters *= 4;
  }
  long iters = (long)((double)probe.iters * seconds / probe.seconds) + 1;
  fma_job jobs[DNPU_MAX_THREADS];
  for (int t = 0; t < n_threads; t++) jobs[t] = (fma_job){kern->fma_spin, iters, 0, 0, 0};
  run_jobs(jobs, sizeof(fma_job), n_threads, fma_job_run);
  double gflops = 0.0;
  for (int t = 0; t < n_threads; t++) gflops += jobs[t].flops / jobs[t].seconds * 1e-9;
  return gflops;
}
