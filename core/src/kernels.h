/* Internal: one kernel signature for every instruction set (see dnpu_core.h for the layout). */
#ifndef DNPU_KERNELS_H
#define DNPU_KERNELS_H

#include <stddef.h>
#include "dnpu_core.h"

/* Applies the packed layer L to `rows` samples.
 *   a: rows of L->k floats with row stride lda (only the first L->k floats of a row are read);
 *   c: L->n > 1: rows of L->npad floats (row stride ldc, padding lanes are written too);
 *      L->n == 1: c[r * ldc] receives the single output of sample r.
 * ReLU (when L->relu) maps x < 0 to 0 and keeps NaN: non-finite inputs propagate. */
typedef void (*dnpu_layer_fn)(const dnpu_layer *L, size_t rows, const float *a, size_t lda,
                              float *c, size_t ldc);

/* Runs `iters` iterations of independent FMA chains; returns the flops performed
 * (2 per lane per FMA).  `sink` receives a value so the work cannot be optimised away. */
typedef double (*dnpu_fma_spin_fn)(long iters, float *sink);

typedef struct dnpu_kernels {
  dnpu_layer_fn layer;
  dnpu_fma_spin_fn fma_spin;
} dnpu_kernels;

extern const dnpu_kernels dnpu_kernels_generic;
extern const dnpu_kernels dnpu_kernels_avx2;
extern const dnpu_kernels dnpu_kernels_avx512;

#endif
