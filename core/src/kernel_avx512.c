/* AVX-512F kernels (compiled with -mavx512f -mfma for this file only; called only when the CPU
 * reports AVX-512F).  Register tile: up to MR samples x NVMAX vectors of 16 output neurons, i.e.
 * 4 x 96 accumulators in 24 zmm registers, weights streamed row by row from L1/L2. */
#include <immintrin.h>
#include "kernels.h"

#define MR 4
#define NVMAX 6
#define W 16

#define AI static inline __attribute__((always_inline))

/* c = act(bias + a[:, 0..K) . w[0..K, :]) for mr samples x nv vectors of outputs */
AI void tile(int mr, int nv, int K, const float *restrict a, size_t lda, const float *restrict w,
             size_t ldw, const float *restrict b, float *restrict c, size_t ldc, int relu) {
  __m512 acc[MR][NVMAX];
#pragma GCC unroll 8
  for (int v = 0; v < nv; v++) {
    const __m512 bv = _mm512_load_ps(b + W * v);
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++) acc[r][v] = bv;
  }
  for (int k = 0; k < K; k++) {
    const float *restrict wk = w + (size_t)k * ldw;
    __m512 wv[NVMAX];
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++) wv[v] = _mm512_load_ps(wk + W * v);
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++) {
      const __m512 x = _mm512_set1_ps(a[(size_t)r * lda + k]);
#pragma GCC unroll 8
      for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(x, wv[v], acc[r][v]);
    }
  }
  if (relu) {
    const __m512 z = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
      for (int v = 0; v < nv; v++) acc[r][v] = _mm512_max_ps(z, acc[r][v]); /* NaN kept */
  }
#pragma GCC unroll 4
  for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++) _mm512_storeu_ps(c + (size_t)r * ldc + W * v, acc[r][v]);
}

#define CASE(M, N)                                          \
  case (M)*8 + (N):                                         \
    tile(M, N, K, a, lda, w, ldw, b, c, ldc, relu);         \
    break;
#define CASES(M) CASE(M, 1) CASE(M, 2) CASE(M, 3) CASE(M, 4) CASE(M, 5) CASE(M, 6)

static void tile_any(int mr, int nv, int K, const float *restrict a, size_t lda,
                     const float *restrict w, size_t ldw, const float *restrict b,
                     float *restrict c, size_t ldc, int relu) {
  switch (mr * 8 + nv) {
    CASES(1) CASES(2) CASES(3) CASES(4)
    default: break;
  }
}

static void dot_rows(const dnpu_layer *L, size_t rows, const float *a, size_t lda, float *c,
                     size_t ldc) {
  const int K = L->k;
  const float *restrict w = L->w;
  const float bias = L->b[0];
  const __mmask16 tail = (__mmask16)((1u << (K % W)) - 1u);
  const int kfull = K - K % W;
  for (size_t r = 0; r < rows; r++) {
    const float *restrict ar = a + r * lda;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int k = 0;
    for (; k + 2 * W <= kfull; k += 2 * W) {
      s0 = _mm512_fmadd_ps(_mm512_loadu_ps(ar + k), _mm512_loadu_ps(w + k), s0);
      s1 = _mm512_fmadd_ps(_mm512_loadu_ps(ar + k + W), _mm512_loadu_ps(w + k + W), s1);
    }
    if (k < kfull) {
      s0 = _mm512_fmadd_ps(_mm512_loadu_ps(ar + k), _mm512_loadu_ps(w + k), s0);
      k += W;
    }
    if (tail)
      s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, ar + k), _mm512_maskz_loadu_ps(tail, w + k),
                           s1);
    float y = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) + bias;
    if (L->relu) y = y < 0.0f ? 0.0f : y;
    c[r * ldc] = y;
  }
}

/* ---- inputs with many exact zeros (after a ReLU): skip them ------------------------------
 * Each sample's non-zero inputs (NaN and inf count as non-zero) are compressed into a list of
 * (index, value); the tile then walks the lists of MR samples in lockstep, each step adding
 * one weight row per sample.  Same per-sample summation order as the dense tile minus the
 * exact-zero terms, so results match it up to the sign of zero. */
#define KS_MAX 1024 /* longest input row handled sparsely (stack scratch) */

static int compress_row(const float *restrict a, int K, int *restrict idx, float *restrict val) {
  const __m512 z = _mm512_setzero_ps();
  const __m512i step = _mm512_set1_epi32(W);
  __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int cnt = 0;
  for (int k = 0; k < K; k += W) {
    const __mmask16 live = K - k >= W ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1u);
    const __m512 x = _mm512_maskz_loadu_ps(live, a + k);
    const __mmask16 nz = _mm512_mask_cmp_ps_mask(live, x, z, _CMP_NEQ_UQ);
    /* register-form compress + full store: compress-to-memory is slow on some cores */
    _mm512_storeu_ps(val + cnt, _mm512_maskz_compress_ps(nz, x));
    _mm512_storeu_si512((void *)(idx + cnt), _mm512_maskz_compress_epi32(nz, iota));
    cnt += __builtin_popcount((unsigned)nz);
    iota = _mm512_add_epi32(iota, step);
  }
  return cnt;
}

AI void sparse_tile(int mr, int nv, const int *cnt, const int *restrict idx,
                    const float *restrict val, size_t lds, const float *restrict w, size_t ldw,
                    const float *restrict b, float *restrict c, size_t ldc, int relu) {
  __m512 acc[MR][NVMAX];
#pragma GCC unroll 8
  for (int v = 0; v < nv; v++) {
    const __m512 bv = _mm512_load_ps(b + W * v);
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++) acc[r][v] = bv;
  }
  int common = cnt[0];
  for (int r = 1; r < mr; r++) common = cnt[r] < common ? cnt[r] : common;
  for (int i = 0; i < common; i++) {
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++) {
      const float *restrict wk = w + (size_t)idx[r * lds + i] * ldw;
      const __m512 x = _mm512_set1_ps(val[r * lds + i]);
#pragma GCC unroll 8
      for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(x, _mm512_load_ps(wk + W * v), acc[r][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < mr; r++)
    for (int i = common; i < cnt[r]; i++) {
      const float *restrict wk = w + (size_t)idx[r * lds + i] * ldw;
      const __m512 x = _mm512_set1_ps(val[r * lds + i]);
#pragma GCC unroll 8
      for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(x, _mm512_load_ps(wk + W * v), acc[r][v]);
    }
  if (relu) {
    const __m512 z = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
      for (int v = 0; v < nv; v++) acc[r][v] = _mm512_max_ps(z, acc[r][v]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++) _mm512_storeu_ps(c + (size_t)r * ldc + W * v, acc[r][v]);
}

#define SCASE(M, N)                                                   \
  case (M)*8 + (N):                                                   \
    sparse_tile(M, N, cnt, idx, val, lds, w, ldw, b, c, ldc, relu);   \
    break;
#define SCASES(M) SCASE(M, 1) SCASE(M, 2) SCASE(M, 3) SCASE(M, 4) SCASE(M, 5) SCASE(M, 6)

static void sparse_tile_any(int mr, int nv, const int *cnt, const int *restrict idx,
                            const float *restrict val, size_t lds, const float *restrict w,
                            size_t ldw, const float *restrict b, float *restrict c, size_t ldc,
                            int relu) {
  switch (mr * 8 + nv) {
    SCASES(1) SCASES(2) SCASES(3) SCASES(4)
    default: break;
  }
}

#ifndef SPARSE_NV
#define SPARSE_NV NVMAX
#endif

static void sparse_layer(const dnpu_layer *L, size_t rows, const float *a, size_t lda, float *c,
                         size_t ldc) {
  const size_t lds = KS_MAX + W;
  _Alignas(64) int idx[MR * (KS_MAX + W)];
  _Alignas(64) float val[MR * (KS_MAX + W)];
  int cnt[MR];
  const int nvt = L->npad / W;
  for (size_t r0 = 0; r0 < rows; r0 += MR) {
    const int mr = rows - r0 < MR ? (int)(rows - r0) : MR;
    for (int r = 0; r < mr; r++)
      cnt[r] = compress_row(a + (r0 + r) * lda, L->k, idx + r * lds, val + r * lds);
    for (int v0 = 0; v0 < nvt;) {
      int left = nvt - v0;
      int nv = left <= SPARSE_NV ? left : (left < 2 * SPARSE_NV ? (left + 1) / 2 : SPARSE_NV);
      sparse_tile_any(mr, nv, cnt, idx, val, lds, L->w + W * v0, (size_t)L->npad, L->b + W * v0,
                      c + r0 * ldc + W * v0, ldc, L->relu);
      v0 += nv;
    }
  }
}

static void layer_avx512(const dnpu_layer *L, size_t rows, const float *a, size_t lda, float *c,
                         size_t ldc) {
  if (L->n == 1) {
    dot_rows(L, rows, a, lda, c, ldc);
    return;
  }
  if (L->sparse_in && L->k <= KS_MAX) {
    sparse_layer(L, rows, a, lda, c, ldc);
    return;
  }
  const int nvt = L->npad / W;
  for (int v0 = 0; v0 < nvt;) {
    int left = nvt - v0;
    /* split e.g. 7 vectors as 4 + 3 rather than 6 + 1 */
    int nv = left <= NVMAX ? left : (left < 2 * NVMAX ? (left + 1) / 2 : NVMAX);
    const float *w = L->w + W * v0;
    const float *b = L->b + W * v0;
    size_t r = 0;
    for (; r + MR <= rows; r += MR)
      tile_any(MR, nv, L->k, a + r * lda, lda, w, (size_t)L->npad, b, c + r * ldc + W * v0, ldc,
               L->relu);
    if (r < rows)
      tile_any((int)(rows - r), nv, L->k, a + r * lda, lda, w, (size_t)L->npad, b,
               c + r * ldc + W * v0, ldc, L->relu);
    v0 += nv;
  }
}

#define NACC 12
static double fma_spin_avx512(long iters, float *sink) {
  __m512 acc[NACC];
  for (int i = 0; i < NACC; i++) acc[i] = _mm512_set1_ps((float)i * 1e-3f);
  const __m512 m = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-7f);
  for (long it = 0; it < iters; it++) {
#pragma GCC unroll 16
    for (int i = 0; i < NACC; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, add);
  }
  __m512 s = acc[0];
  for (int i = 1; i < NACC; i++) s = _mm512_add_ps(s, acc[i]);
  *sink = _mm512_reduce_add_ps(s);
  return 2.0 * (double)iters * NACC * W;
}

const dnpu_kernels dnpu_kernels_avx512 = {layer_avx512, fma_spin_avx512};
