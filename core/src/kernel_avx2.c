/* AVX2 + FMA kernels (compiled with -mavx2 -mfma for this file only; called only when the CPU
 * reports both).  Register tile: up to MR samples x NVMAX vectors of 8 output neurons
 * (12 ymm accumulators of the 16 registers). */
#include <immintrin.h>
#include "kernels.h"

#define MR 4
#define NVMAX 3
#define W 8

#define AI static inline __attribute__((always_inline))

AI void tile(int mr, int nv, int K, const float *restrict a, size_t lda, const float *restrict w,
             size_t ldw, const float *restrict b, float *restrict c, size_t ldc, int relu) {
  __m256 acc[MR][NVMAX];
#pragma GCC unroll 4
  for (int v = 0; v < nv; v++) {
    const __m256 bv = _mm256_load_ps(b + W * v);
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++) acc[r][v] = bv;
  }
  for (int k = 0; k < K; k++) {
    const float *restrict wk = w + (size_t)k * ldw;
    __m256 wv[NVMAX];
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) wv[v] = _mm256_load_ps(wk + W * v);
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++) {
      const __m256 x = _mm256_broadcast_ss(a + (size_t)r * lda + k);
#pragma GCC unroll 4
      for (int v = 0; v < nv; v++) acc[r][v] = _mm256_fmadd_ps(x, wv[v], acc[r][v]);
    }
  }
  if (relu) {
    const __m256 z = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
      for (int v = 0; v < nv; v++) acc[r][v] = _mm256_max_ps(z, acc[r][v]); /* NaN kept */
  }
#pragma GCC unroll 4
  for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) _mm256_storeu_ps(c + (size_t)r * ldc + W * v, acc[r][v]);
}

#define CASE(M, N)                                     \
  case (M)*4 + (N):                                    \
    tile(M, N, K, a, lda, w, ldw, b, c, ldc, relu);    \
    break;
#define CASES(M) CASE(M, 1) CASE(M, 2) CASE(M, 3)

static void tile_any(int mr, int nv, int K, const float *restrict a, size_t lda,
                     const float *restrict w, size_t ldw, const float *restrict b,
                     float *restrict c, size_t ldc, int relu) {
  switch (mr * 4 + nv) {
    CASES(1) CASES(2) CASES(3) CASES(4)
    default: break;
  }
}

static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static void dot_rows(const dnpu_layer *L, size_t rows, const float *a, size_t lda, float *c,
                     size_t ldc) {
  const int K = L->k;
  const float *restrict w = L->w;
  const float bias = L->b[0];
  const int kfull = K - K % W, rem = K % W;
  __m256i tail = _mm256_setzero_si256();
  if (rem) {
    int m[W];
    for (int i = 0; i < W; i++) m[i] = i < rem ? -1 : 0;
    tail = _mm256_loadu_si256((const __m256i *)m);
  }
  for (size_t r = 0; r < rows; r++) {
    const float *restrict ar = a + r * lda;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int k = 0;
    for (; k + 2 * W <= kfull; k += 2 * W) {
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(ar + k), _mm256_loadu_ps(w + k), s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(ar + k + W), _mm256_loadu_ps(w + k + W), s1);
    }
    if (k < kfull) {
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(ar + k), _mm256_loadu_ps(w + k), s0);
      k += W;
    }
    if (rem)
      s1 = _mm256_fmadd_ps(_mm256_maskload_ps(ar + k, tail), _mm256_maskload_ps(w + k, tail), s1);
    float y = hsum256(_mm256_add_ps(s0, s1)) + bias;
    if (L->relu) y = y < 0.0f ? 0.0f : y;
    c[r * ldc] = y;
  }
}

/* ---- inputs with many exact zeros (after a ReLU): skip them (see kernel_avx512.c) ------ */
#define KS_MAX 1024

static int compress_row(const float *restrict a, int K, int *restrict idx, float *restrict val) {
  int cnt = 0;
  for (int k = 0; k < K; k++) { /* branch-free: NaN != 0 is true, so NaN is kept */
    const float x = a[k];
    idx[cnt] = k;
    val[cnt] = x;
    cnt += x != 0.0f;
  }
  return cnt;
}

AI void sparse_tile(int mr, int nv, const int *cnt, const int *restrict idx,
                    const float *restrict val, size_t lds, const float *restrict w, size_t ldw,
                    const float *restrict b, float *restrict c, size_t ldc, int relu) {
  __m256 acc[MR][NVMAX];
#pragma GCC unroll 4
  for (int v = 0; v < nv; v++) {
    const __m256 bv = _mm256_load_ps(b + W * v);
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++) acc[r][v] = bv;
  }
  int common = cnt[0];
  for (int r = 1; r < mr; r++) common = cnt[r] < common ? cnt[r] : common;
  for (int i = 0; i < common; i++) {
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++) {
      const float *restrict wk = w + (size_t)idx[r * lds + i] * ldw;
      const __m256 x = _mm256_broadcast_ss(val + r * lds + i);
#pragma GCC unroll 4
      for (int v = 0; v < nv; v++) acc[r][v] = _mm256_fmadd_ps(x, _mm256_load_ps(wk + W * v), acc[r][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < mr; r++)
    for (int i = common; i < cnt[r]; i++) {
      const float *restrict wk = w + (size_t)idx[r * lds + i] * ldw;
      const __m256 x = _mm256_broadcast_ss(val + r * lds + i);
#pragma GCC unroll 4
      for (int v = 0; v < nv; v++) acc[r][v] = _mm256_fmadd_ps(x, _mm256_load_ps(wk + W * v), acc[r][v]);
    }
  if (relu) {
    const __m256 z = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
      for (int v = 0; v < nv; v++) acc[r][v] = _mm256_max_ps(z, acc[r][v]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) _mm256_storeu_ps(c + (size_t)r * ldc + W * v, acc[r][v]);
}

#define SCASE(M, N)                                                   \
  case (M)*4 + (N):                                                   \
    sparse_tile(M, N, cnt, idx, val, lds, w, ldw, b, c, ldc, relu);   \
    break;
#define SCASES(M) SCASE(M, 1) SCASE(M, 2) SCASE(M, 3)

static void sparse_tile_any(int mr, int nv, const int *cnt, const int *restrict idx,
                            const float *restrict val, size_t lds, const float *restrict w,
                            size_t ldw, const float *restrict b, float *restrict c, size_t ldc,
                            int relu) {
  switch (mr * 4 + nv) {
    SCASES(1) SCASES(2) SCASES(3) SCASES(4)
    default: break;
  }
}

static void sparse_layer(const dnpu_layer *L, size_t rows, const float *a, size_t lda, float *c,
                         size_t ldc) {
  const size_t lds = KS_MAX;
  _Alignas(32) int idx[MR * KS_MAX];
  _Alignas(32) float val[MR * KS_MAX];
  int cnt[MR];
  const int nvt = L->npad / W;
  for (size_t r0 = 0; r0 < rows; r0 += MR) {
    const int mr = rows - r0 < MR ? (int)(rows - r0) : MR;
    for (int r = 0; r < mr; r++)
      cnt[r] = compress_row(a + (r0 + r) * lda, L->k, idx + r * lds, val + r * lds);
    for (int v0 = 0; v0 < nvt; v0 += NVMAX) {
      const int nv = nvt - v0 < NVMAX ? nvt - v0 : NVMAX;
      sparse_tile_any(mr, nv, cnt, idx, val, lds, L->w + W * v0, (size_t)L->npad, L->b + W * v0,
                      c + r0 * ldc + W * v0, ldc, L->relu);
    }
  }
}

static void layer_avx2(const dnpu_layer *L, size_t rows, const float *a, size_t lda, float *c,
                       size_t ldc) {
  if (L->n == 1) {
    dot_rows(L, rows, a, lda, c, ldc);
    return;
  }
  /* with 16 registers the sparse tile pays off only on the latency path (a few samples) */
  if (L->sparse_in && L->k <= KS_MAX && rows < MR) {
    sparse_layer(L, rows, a, lda, c, ldc);
    return;
  }
  const int nvt = L->npad / W;
  for (int v0 = 0; v0 < nvt;) {
    const int nv = nvt - v0 < NVMAX ? nvt - v0 : NVMAX;
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

#define NACC 10
static double fma_spin_avx2(long iters, float *sink) {
  __m256 acc[NACC];
  for (int i = 0; i < NACC; i++) acc[i] = _mm256_set1_ps((float)i * 1e-3f);
  const __m256 m = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
  for (long it = 0; it < iters; it++) {
#pragma GCC unroll 16
    for (int i = 0; i < NACC; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, add);
  }
  __m256 s = acc[0];
  for (int i = 1; i < NACC; i++) s = _mm256_add_ps(s, acc[i]);
  *sink = hsum256(s);
  return 2.0 * (double)iters * NACC * W;
}

const dnpu_kernels dnpu_kernels_avx2 = {layer_avx2, fma_spin_avx2};
