/* The bfloat16 units of the training gradient (dnpu_mlp_value_grad_bf16): AMX tiles and
 * AVX512-BF16 dot products.  Compiled with -mamx-tile -mamx-bf16 -mavx512f -mavx512bf16 for this
 * file only; each unit is called only after dnpu_bf16_unit() chose it (the CPU has it and, for
 * AMX, the OS granted the tile state).
 *
 * One product shape: c[16 x np] (float32) = a[16 x kp] (bf16) . B, where B is a layer packed by
 * bf16_layer_pack (mlp.c) in the VNNI layout of AMX's B operand: for each chunk of 32 inputs and
 * each block of 16 outputs, 16 rows of (16 outputs x 2 consecutive inputs).  AMX: tiles 0-5 hold
 * up to 96 output columns, tile 6 the a-chunk, tile 7 the B chunk.  AVX512-BF16: four rows of a at
 * a time, their input pairs broadcast against those rows of B (vdpbf16ps: the same pairs, summed
 * in float32), up to six vectors of 16 outputs per row held in registers. */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bf16.h"

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct __attribute__((packed)) tile_config {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} tile_config;

static pthread_once_t unit_once = PTHREAD_ONCE_INIT;
static int unit;

static int amx_granted(void) {
  if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16")) return 0;
  /* Linux hands out the (large) tile state only on request, once per process */
  return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

static void unit_probe(void) {
  const char *env = getenv("DNPU_CORE_BF16"); /* "0": float32 only; "avx512": no AMX */
  if (env && strcmp(env, "0") == 0) return;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bf16")) return;
  const int skip_amx = env && strcmp(env, "avx512") == 0;
  unit = !skip_amx && amx_granted() ? DNPU_BF16_AMX : DNPU_BF16_AVX512;
}

int dnpu_bf16_unit(void) {
  pthread_once(&unit_once, unit_probe);
  return unit;
}

/* Eight tiles of 16 rows x 64 bytes.  A constant in memory: GCC does not see that
 * _tile_loadconfig reads its argument and drops stores to a local configuration. */
static const tile_config config16 = {
    .palette_id = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

void dnpu_bf16_thread_begin(int u) {
  if (u == DNPU_BF16_AMX) _tile_loadconfig(&config16);
}

void dnpu_bf16_thread_end(int u) {
  if (u == DNPU_BF16_AMX) _tile_release();
}

#define ZERO(t) \
  if (nnt > (t)) _tile_zero(t);
#define STEP(t)                                       \
  if (nnt > (t)) {                                    \
    _tile_loadd(7, b + (size_t)(t)*512, 64);          \
    _tile_dpbf16ps(t, 6, 7);                          \
  }
#define STORE(t) \
  if (nnt > (t)) _tile_stored(t, c + (t)*16, (long)(ldc * sizeof(float)));

static void amx_matmul16(const dnpu_bf16_layer *L, const uint16_t *a, size_t lda, float *c,
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

/* Four rows at a time: each 32-value row of B is loaded once for the four rows' broadcast input
 * pairs (24 accumulators, 4 broadcasts and 1 B vector: 29 of the 32 vector registers). */
#define VZERO(t) __m512 a0##t = z, a1##t = z, a2##t = z, a3##t = z;
#define VSTEP(t)                                                                \
  if (nnt > (t)) {                                                              \
    const __m512bh bv = (__m512bh)_mm512_loadu_si512(b + (size_t)(t)*512);     \
    a0##t = _mm512_dpbf16_ps(a0##t, p0, bv);                                    \
    a1##t = _mm512_dpbf16_ps(a1##t, p1, bv);                                    \
    a2##t = _mm512_dpbf16_ps(a2##t, p2, bv);                                    \
    a3##t = _mm512_dpbf16_ps(a3##t, p3, bv);                                    \
  }
#define VSTORE(t)                                      \
  if (nnt > (t)) {                                     \
    _mm512_storeu_ps(cr + (t)*16, a0##t);              \
    _mm512_storeu_ps(cr + ldc + (t)*16, a1##t);        \
    _mm512_storeu_ps(cr + 2 * ldc + (t)*16, a2##t);    \
    _mm512_storeu_ps(cr + 3 * ldc + (t)*16, a3##t);    \
  }

/* inputs 2p, 2p + 1 of row ar, in every lane */
static inline __m512bh pair_of(const uint16_t *ar) {
  uint32_t pair;
  memcpy(&pair, ar, sizeof pair);
  return (__m512bh)_mm512_set1_epi32((int)pair);
}

static void avx512_matmul16(const dnpu_bf16_layer *L, const uint16_t *a, size_t lda, float *c,
                            size_t ldc) {
  const int nkc = L->kp / 32, nnt = L->np / 16;
  const __m512 z = _mm512_setzero_ps();
  for (int r = 0; r < 16; r += 4) {
    const uint16_t *ar = a + (size_t)r * lda;
    float *cr = c + (size_t)r * ldc;
    VZERO(0) VZERO(1) VZERO(2) VZERO(3) VZERO(4) VZERO(5)
    for (int kc = 0; kc < nkc; kc++)
      for (int p = 0; p < 16; p++) {
        const size_t k = (size_t)kc * 32 + 2 * p;
        const __m512bh p0 = pair_of(ar + k), p1 = pair_of(ar + lda + k), p2 = pair_of(ar + 2 * lda + k),
                       p3 = pair_of(ar + 3 * lda + k);
        const uint16_t *b = L->bp + ((size_t)kc * nnt * 16 + p) * 32;
        VSTEP(0) VSTEP(1) VSTEP(2) VSTEP(3) VSTEP(4) VSTEP(5)
      }
    VSTORE(0) VSTORE(1) VSTORE(2) VSTORE(3) VSTORE(4) VSTORE(5)
  }
}

void dnpu_bf16_matmul16(int u, const dnpu_bf16_layer *L, const uint16_t *a, size_t lda, float *c,
                        size_t ldc) {
  if (u == DNPU_BF16_AMX)
    amx_matmul16(L, a, lda, c, ldc);
  else
    avx512_matmul16(L, a, lda, c, ldc);
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
void dnpu_bf16_fwd_epilogue(size_t rows, int n, int kp, const float *c, size_t ldc,
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
void dnpu_bf16_bwd_epilogue(size_t rows, int n, int kp, const float *g, size_t ldg,
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
