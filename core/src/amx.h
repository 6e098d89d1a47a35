/* Internal: bfloat16 tiles for the training gradient (kernel_amx.c; stubs elsewhere). */
#ifndef DNPU_AMX_H
#define DNPU_AMX_H

#include <stddef.h>
#include <stdint.h>

#include "dnpu_core.h"

/* 1 if this CPU has AMX-BF16 and AVX512-BF16 and the OS granted the tile state. */
int dnpu_amx_available(void);
/* Per thread, around a run of dnpu_amx_matmul16 calls: tile configuration / release. */
void dnpu_amx_thread_begin(void);
void dnpu_amx_thread_end(void);
/* c[16 x L->np] (float32, row stride ldc floats) = a[16 x L->kp] (bf16, row stride lda) . B */
void dnpu_amx_matmul16(const dnpu_bf16_layer *L, const uint16_t *a, size_t lda, float *c,
                       size_t ldc);
/* h = relu(c + bias): ReLU masks per 16 columns, and bf16(h) for the next product (a16) or,
 * with w, the output layer's y = h . w + wb (see kernel_amx.c) */
void dnpu_amx_fwd_epilogue(size_t rows, int n, int kp, const float *c, size_t ldc,
                           const float *bias, uint16_t *mask, int nvm, uint16_t *a16, size_t lda,
                           const float *w, float wb, float *y);
/* a16 = bf16(g on the ReLU's mask): the gradient through a ReLU, ready for the next product */
void dnpu_amx_bwd_epilogue(size_t rows, int n, int kp, const float *g, size_t ldg,
                           const uint16_t *mask, int nvm, uint16_t *a16, size_t lda);

#endif
