/* Internal: the bfloat16 units of the training gradient (kernel_bf16.c; stubs in mlp.c where it
 * is not built).  Two units compute the same products: AMX tiles (Intel Sapphire Rapids and
 * later) and AVX512-BF16 dot products (AMD Zen 4 and later, Intel Cooper Lake); the epilogues
 * are AVX-512 for both. */
#ifndef DNPU_BF16_H
#define DNPU_BF16_H

#include <stddef.h>
#include <stdint.h>

#include "dnpu_core.h"

enum { DNPU_BF16_NONE = 0, DNPU_BF16_AMX = 1, DNPU_BF16_AVX512 = 2 };

/* The unit this process uses: AMX where the CPU has it and the OS granted the tile state, else
 * AVX512-BF16 where the CPU has it, else none.  DNPU_CORE_BF16=0 turns both off, =avx512 skips
 * AMX (the fallback's tests on an AMX machine).  Decided once per process. */
int dnpu_bf16_unit(void);
/* Per thread, around a run of dnpu_bf16_matmul16 calls (the AMX tile configuration). */
void dnpu_bf16_thread_begin(int unit);
void dnpu_bf16_thread_end(int unit);
/* c[16 x L->np] (float32, row stride ldc floats) = a[16 x L->kp] (bf16, row stride lda) . B */
void dnpu_bf16_matmul16(int unit, const dnpu_bf16_layer *L, const uint16_t *a, size_t lda, float *c,
                        size_t ldc);
/* h = relu(c + bias): ReLU masks per 16 columns, and bf16(h) for the next product (a16) or,
 * with w, the output layer's y = h . w + wb (see kernel_bf16.c) */
void dnpu_bf16_fwd_epilogue(size_t rows, int n, int kp, const float *c, size_t ldc,
                            const float *bias, uint16_t *mask, int nvm, uint16_t *a16, size_t lda,
                            const float *w, float wb, float *y);
/* a16 = bf16(g on the ReLU's mask): the gradient through a ReLU, ready for the next product */
void dnpu_bf16_bwd_epilogue(size_t rows, int n, int kp, const float *g, size_t ldg,
                            const uint16_t *mask, int nvm, uint16_t *a16, size_t lda);

#endif
