/* AMX (Advanced Matrix Extensions) bfloat16 tiles for the training gradient
 * (dnpu_mlp_value_grad_bf16).  Compiled with -mamx-tile -mamx-bf16 -mavx512f -mavx512bf16 for
 * this file only; called only after dnpu_amx_available() said the CPU has the units and the OS
 * granted them.
 *
 * One product shape: c[16 x np] (float32) = a[16 x kp] (bf16) . B, where B is a layer packed by
 * dnpu_bf16_layer_pack in the VNNI layout of AMX's B operand.  Tiles 0-5 hold up to 96 output
 * columns, tile 6 the a-chunk, tile 7 the B chunk. */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "amx.h"

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct __attribute__((packed)) tile_config {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} tile_config;

static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
static int amx_ok;

static void amx_probe(void) {
  const char *env = getenv("DNPU_CORE_BF16"); /* "0": float32 only (tests of the fallback) */
  if (env && strcmp(env, "0") == 0) return;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bf16") ||
      !__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16"))
    return;
  /* Linux hands out the (large) tile state only on request, once per process */
  amx_ok = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

int dnpu_amx_available(void) {
  pthread_once(&amx_once, amx_probe);
  return amx_ok;
}

/* Eight tiles of 16 rows x 64 bytes.  A constant in memory: GCC does not see that
 * _tile_loadconfig reads its argument and drops stores to a local configuration. */
static const tile_config config16 = {
    .palette_id = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

void dnpu_amx_thread_begin(void) { _tile_loadconfig(&config16); }

void dnpu_amx_thread_end(void) { _tile_release(); }

#define ZERO(t) \
  if (nnt > (t)) _tile_zero(t);
#define STEP(t)                                       \
  if (nnt > (t)) {                                    \
    _tile_loadd(7, b + (size_t)(t)*512, 64);          \
    _tile_dpbf16ps(t, 6, 7);                          \
  }
#define STORE(t) \
  if (nnt > (t)) _tile_stored(t, c + (t)*16, (long)(ldc * sizeof(float)));

void dnpu_amx_matmul16(const dnpu_bf16_layer *L, const uint16_t *a, size_t lda, float *c,
                       size_t ldc) {
  const int nkc = L->kp / 32, nnt = L->np / 16;
  ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5)
  for (int kc = 0; kc < nkc; kc++) {
    _tile_loadd(6, a + (size_t)kc * 32, (long)(lda * sizeof(uint16_t)));
    const uint16_t *b = L->bp + (size_t)kc * nnt * 512;
    STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5)
  }
  STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5)
}

/* Lanes of the vector starting at column j that hold one of n columns. */
static inline __mmask16 live_lanes(int n, int j) {
  const int live = n - j >= 16 ? 16 : (n - j > 0 ? n - j : 0);
  return (__mmask16)((1u << live) - 1u);
}

/* Forward epilogue of a hidden layer, per row: h = relu(c + bias) over n columns; its ReLU mask
 * (lanes with h > 0) per 16 columns into mask[r * nvm + v]; and either bf16(h) into a16 (kp
 * columns, zero past n) for the next product, or (w != NULL, the last hidden layer) the output
 * layer's y[r] = h . w + wb in float32.  Whole vectors go unmasked, only the tail is masked. */
void dnpu_amx_fwd_epilogue(size_t rows, int n, int kp, const float *c, size_t ldc,
                           const float *bias, uint16_t *mask, int nvm, uint16_t *a16, size_t lda,
                           const float *w, float wb, float *y) {
  const __m512 z = _mm512_setzero_ps();
  const int nfull = n / 16, nvec = (n + 15) / 16;
  for (size_t r = 0; r < rows; r++) {
    const float *cr = c + r * ldc;
    uint16_t *mr = mask + r * (size_t)nvm;
    uint16_t *hr = a16 ? a16 + r * lda : NULL;
    __m512 acc = z;
    for (int v = 0; v < nvec; v++) {
      const int j = 16 * v;
      __m512 h;
      if (v < nfull) {
        h = _mm512_max_ps(z, _mm512_add_ps(_mm512_loadu_ps(cr + j), _mm512_loadu_ps(bias + j)));
      } else {
        const __mmask16 m = live_lanes(n, j);
        h = _mm512_max_ps(z, _mm512_add_ps(_mm512_maskz_loadu_ps(m, cr + j),
                                           _mm512_maskz_loadu_ps(m, bias + j)));
      }
      mr[v] = (uint16_t)_mm512_cmp_ps_mask(h, z, _CMP_GT_OQ);
      if (hr) _mm256_storeu_si256((__m256i *)(hr + j), (__m256i)_mm512_cvtneps_pbh(h));
      else acc = _mm512_fmadd_ps(h, _mm512_maskz_loadu_ps(live_lanes(n, j), w + j), acc);
    }
    if (hr)
      for (int j = 16 * nvec; j < kp; j += 16) _mm256_storeu_si256((__m256i *)(hr + j), _mm256_setzero_si256());
    else
      y[r] = _mm512_reduce_add_ps(acc) + wb;
  }
}

/* Backward epilogue, per row: a16 = bf16(g on the lanes of mask), n columns, zero up to kp.
 * ldg = 0 reads the same g for every row (the output layer's weights). */
void dnpu_amx_bwd_epilogue(size_t rows, int n, int kp, const float *g, size_t ldg,
                           const uint16_t *mask, int nvm, uint16_t *a16, size_t lda) {
  const int nvec = (n + 15) / 16;
  for (size_t r = 0; r < rows; r++) {
    const float *gr = g + r * ldg;
    const uint16_t *mr = mask + r * (size_t)nvm;
    uint16_t *hr = a16 + r * lda;
    int v = 0;
    for (; v < nvec; v++) {
      const __m512 gv = _mm512_maskz_loadu_ps((__mmask16)mr[v], gr + 16 * v);
      _mm256_storeu_si256((__m256i *)(hr + 16 * v), (__m256i)_mm512_cvtneps_pbh(gv));
    }
    for (int j = 16 * v; j < kp; j += 16) _mm256_storeu_si256((__m256i *)(hr + j), _mm256_setzero_si256());
  }
}
