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
/* with 16 registers the sparse tile pays off only on the latency path (a few samples) */
#define SPARSE_ROWS MR

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
