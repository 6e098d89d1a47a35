/* AVX-512F kernels (compiled with -mavx512f -mfma for this file only; called only when the CPU
 * reports AVX-512F).  Register tile: up to MR samples x NVMAX vectors of 16 output neurons, i.e.
 * 4 x 96 accumulators in 24 zmm registers, weights streamed row by row from L1/L2. */
#include <immintrin.h>
#include "kernels.h"

#include <stdint.h>

#define W 16
#define MR 4
#define NVMAX 6
#define VEC __m512
#define V_LOAD(p) _mm512_load_ps(p)
#define V_STOREU(p, v) _mm512_storeu_ps((p), (v))
#define V_SET1(x) _mm512_set1_ps(x)
#define V_ZERO() _mm512_setzero_ps()
#define V_FMADD(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define V_MAX(a, b) _mm512_max_ps((a), (b))
#define V_ADD(a, b) _mm512_add_ps((a), (b))
#define V_HSUM(v) _mm512_reduce_add_ps(v)
#define V_LOADU(p) _mm512_loadu_ps(p)
/* the last K % W inputs of a dot product: a lane mask and a masked load */
#define TAIL_T __mmask16
#define TAIL_MASK(rem) ((__mmask16)((1u << (rem)) - 1u))
#define V_LOAD_TAIL(p, t) _mm512_maskz_loadu_ps((t), (p))
#define SPARSE_ROWS SIZE_MAX

/* register-form compress + full store (compress-to-memory is slow on some cores): writes up
 * to W entries past the count, which the padded lists of kernel_simd.inc allow */
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

#include "kernel_simd.inc"

const dnpu_kernels dnpu_kernels_avx512 = {simd_layer, simd_fma_spin};
