/* AVX2 + FMA kernels (compiled with -mavx2 -mfma for this file only; called only when the CPU
 * reports both).  Register tile: up to MR samples x NVMAX vectors of 8 output neurons
 * (12 ymm accumulators of the 16 registers). */
#include <immintrin.h>
#include "kernels.h"

#define W 8
#define MR 4
#define NVMAX 3
#define VEC __m256
#define V_LOAD(p) _mm256_load_ps(p)
#define V_STOREU(p, v) _mm256_storeu_ps((p), (v))
#define V_SET1(x) _mm256_set1_ps(x)
#define V_ZERO() _mm256_setzero_ps()
#define V_FMADD(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define V_MAX(a, b) _mm256_max_ps((a), (b))
#define V_ADD(a, b) _mm256_add_ps((a), (b))
#define V_HSUM(v) hsum256(v)
#define V_LOADU(p) _mm256_loadu_ps(p)
/* the last K % W inputs of a dot product: a lane mask and a masked load */
#define TAIL_T __m256i
#define TAIL_MASK(rem) tail_mask256(rem)
#define V_LOAD_TAIL(p, t) _mm256_maskload_ps((p), (t))
/* with 16 registers the sparse tile pays off only on the latency path (a few samples) */
#define SPARSE_ROWS MR

static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline __m256i tail_mask256(int rem) {
  int m[W];
  for (int i = 0; i < W; i++) m[i] = i < rem ? -1 : 0;
  return _mm256_loadu_si256((const __m256i *)m);
}

/* branch-free: every input is written, the count advances past non-zeros (NaN != 0 holds) */
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

#include "kernel_simd.inc"

const dnpu_kernels dnpu_kernels_avx2 = {simd_layer, simd_fma_spin};
