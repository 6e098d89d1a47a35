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
/* dst rows of kp bf16 (zero past n) from src rows of n floats */
void dnpu_f32_to_bf16_rows(size_t rows, int n, int kp, const float *src, size_t lds, uint16_t *dst,
                           size_t ldd);

/* act = relu(c + bias), a16 = bf16(act): the end of a hidden layer (see kernel_amx.c) */
void dnpu_amx_fwd_epilogue(size_t rows, int n, int kp, const float *c, const float *bias,
                           float *act, uint16_t *a16, size_t ldb);
/* a16 = bf16(g * (act > 0)): the gradient through a ReLU, ready for the next product */
void dnpu_amx_bwd_epilogue(size_t rows, int n, int kp, const float *g, const float *act,
                           uint16_t *a16, size_t ldb);

#endif
