/* Portable kernels: the reference every instruction-set kernel is tested against.
 * Compiled without any -m flag; written so that the compiler vectorises the column loops with
 * whatever the baseline ISA offers (SSE2 on x86-64, NEON on aarch64). */
#include "kernels.h"

#define MR 4 /* samples per register tile */
#define NB 16 /* output columns per tile */

static inline float relu1(float v) { return v < 0.0f ? 0.0f : v; } /* keeps NaN */

/* c[r][0..NB) = act(b + sum_k a[r][k] * w[k][0..NB)) for r < mr (rows past mr repeat the
 * first row and are not stored). */
static void tile(int mr, int K, const float *restrict a, size_t lda, const float *restrict w,
                 size_t ldw, const float *restrict b, float *restrict c, size_t ldc, int relu) {
  float acc0[NB], acc1[NB], acc2[NB], acc3[NB];
  const float *a0 = a, *a1 = a + (mr > 1 ? 1 : 0) * lda, *a2 = a + (mr > 2 ? 2 : 0) * lda,
              *a3 = a + (mr > 3 ? 3 : 0) * lda;
  for (int j = 0; j < NB; j++) acc0[j] = acc1[j] = acc2[j] = acc3[j] = b[j];
  for (int k = 0; k < K; k++) {
    const float *restrict wk = w + (size_t)k * ldw;
    const float x0 = a0[k], x1 = a1[k], x2 = a2[k], x3 = a3[k];
    for (int j = 0; j < NB; j++) {
      acc0[j] += x0 * wk[j];
      acc1[j] += x1 * wk[j];
      acc2[j] += x2 * wk[j];
      acc3[j] += x3 * wk[j];
    }
  }
  if (relu)
    for (int j = 0; j < NB; j++) { /* if-converted to compare + blend: NaN is kept */
      acc0[j] = acc0[j] < 0.0f ? 0.0f : acc0[j];
      acc1[j] = acc1[j] < 0.0f ? 0.0f : acc1[j];
      acc2[j] = acc2[j] < 0.0f ? 0.0f : acc2[j];
      acc3[j] = acc3[j] < 0.0f ? 0.0f : acc3[j];
    }
  const float *accs[MR] = {acc0, acc1, acc2, acc3};
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < NB; j++) c[(size_t)r * ldc + j] = accs[r][j];
}

/* one sample: the latency path (the 4-row tile would do 4x the work) */
static void tile1(int K, const float *restrict a, const float *restrict w, size_t ldw,
                  const float *restrict b, float *restrict c, int relu) {
  float acc[NB];
  for (int j = 0; j < NB; j++) acc[j] = b[j];
  for (int k = 0; k < K; k++) {
    const float *restrict wk = w + (size_t)k * ldw;
    const float x = a[k];
    for (int j = 0; j < NB; j++) acc[j] += x * wk[j];
  }
  if (relu)
    for (int j = 0; j < NB; j++) acc[j] = acc[j] < 0.0f ? 0.0f : acc[j];
  for (int j = 0; j < NB; j++) c[j] = acc[j];
}

static void layer_generic(const dnpu_layer *L, size_t rows, const float *a, size_t lda,
                          float *c, size_t ldc) {
  const int K = L->k;
  if (L->n == 1) {
    const float *restrict w = L->w;
    for (size_t r = 0; r < rows; r++) {
      const float *restrict ar = a + r * lda;
      float s = 0.0f;
      for (int k = 0; k < K; k++) s += ar[k] * w[k];
      s += L->b[0];
      c[r * ldc] = L->relu ? relu1(s) : s;
    }
    return;
  }
  for (int j0 = 0; j0 < L->npad; j0 += NB)
    for (size_t r = 0; r < rows; r += MR) {
      if (rows - r == 1)
        tile1(K, a + r * lda, L->w + j0, (size_t)L->npad, L->b + j0, c + r * ldc + j0, L->relu);
      else
        tile(rows - r < MR ? (int)(rows - r) : MR, K, a + r * lda, lda, L->w + j0,
             (size_t)L->npad, L->b + j0, c + r * ldc + j0, ldc, L->relu);
    }
}

#define NACC 8
static double fma_spin_generic(long iters, float *sink) {
  float acc[NACC][4];
  for (int i = 0; i < NACC; i++)
    for (int j = 0; j < 4; j++) acc[i][j] = (float)(i + j) * 1e-3f;
  const float m = 0.999999f, add = 1e-7f;
  for (long it = 0; it < iters; it++)
    for (int i = 0; i < NACC; i++)
      for (int j = 0; j < 4; j++) acc[i][j] = acc[i][j] * m + add;
  float s = 0.0f;
  for (int i = 0; i < NACC; i++)
    for (int j = 0; j < 4; j++) s += acc[i][j];
  *sink = s;
  return 2.0 * (double)iters * NACC * 4;
}

const dnpu_kernels dnpu_kernels_generic = {layer_generic, fma_spin_generic};
