/* dnpu_core: plain C11 kernels for DNPU surrogate MLPs and time-multiplexed DNPU networks.
 *
 * One layout for every instruction set: a dense layer y = act(W x + b) with K inputs and
 * N outputs is packed at load time as Wp[k][j] (K rows of npad floats, npad = N rounded up to
 * DNPU_LANES, zero padded, 64-byte aligned) and a padded bias.  A layer with N == 1 is packed
 * as one row of K floats instead, and evaluated as a dot product per sample.
 *
 * Kernels exist per instruction set (kernel_generic.c, kernel_avx2.c, kernel_avx512.c), all with
 * the signature of dnpu_layer_fn; the set is chosen once from CPU features (or the environment
 * variable DNPU_CORE_ISA) and can be forced per call.  No function here touches Python.
 */
#ifndef DNPU_CORE_H
#define DNPU_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DNPU_LANES 16      /* padding unit of packed weights and activations (floats) */
#define DNPU_MAX_LAYERS 32 /* layers per MLP */
#define DNPU_MAX_THREADS 256

typedef enum { DNPU_ISA_GENERIC = 0, DNPU_ISA_AVX2 = 1, DNPU_ISA_AVX512 = 2, DNPU_ISA_COUNT = 3 } dnpu_isa;

/* Error codes (0 = success). */
enum {
  DNPU_OK = 0,
  DNPU_ERR_NOMEM = 1,    /* allocation failed */
  DNPU_ERR_ARG = 2,      /* invalid argument (size, thread count, null pointer) */
  DNPU_ERR_ISA = 3,      /* instruction set not supported by this CPU */
  DNPU_ERR_THREAD = 4    /* pthread_create failed */
};

/* One packed dense layer.  The memory behind w and b is owned by whoever packed it. */
typedef struct dnpu_layer {
  int k, n;       /* inputs, outputs */
  int npad;       /* n rounded up to DNPU_LANES (row stride of w, length of b) */
  int relu;       /* 1: ReLU after the affine map */
  int sparse_in;  /* 1: inputs come from a ReLU (many exact zeros): kernels may skip them */
  float *w;       /* n > 1: k * npad floats, w[kk * npad + j] = W[j][kk];  n == 1: k floats */
  float *b;       /* npad floats (zeros when the layer has no bias) */
} dnpu_layer;

/* A chain of layers; layers may share packed memory with another chain (struct copies). */
typedef struct dnpu_mlp {
  int n_layers;
  dnpu_layer layer[DNPU_MAX_LAYERS];
} dnpu_mlp;

/* Packs W (row-major [n][k], the torch/ONNX layout) and b (n floats, or NULL) into L.
 * Allocates L->w and L->b; free them with dnpu_layer_free. */
int dnpu_layer_pack(dnpu_layer *L, int k, int n, const float *W, const float *b, int relu);
void dnpu_layer_free(dnpu_layer *L);

/* Evaluates the chain on n samples: x is n rows of m->layer[0].k floats (row stride ldx),
 * y is n rows of the last layer's n floats (row stride ldy).  n_threads >= 1 threads (fewer
 * are used for small n).  Safe to call from several threads at once on the same mlp. */
int dnpu_mlp_eval(const dnpu_mlp *m, int isa, int n_threads, size_t n, const float *x,
                  size_t ldx, float *y, size_t ldy);

/* Value and input gradient of a single-output ReLU chain (the surrogate: volts -> nA), for
 * training through a frozen surrogate: y[r] = f(x_r) and g[r * ldg + i] = df/dx_i at x_r.
 * m: every layer but the last has a ReLU, the last has one output and none.
 * back: the transposed layers 0..L-2 of m, back->layer[l] = W_l^T packed with k = m->layer[l].n,
 * n = m->layer[l].k, no bias, no ReLU (dnpu_layer_pack of W_l^T, which is [k_l][n_l]).
 * The gradient of ReLU at exactly 0 is taken as 0 (as torch does).  x: n rows (stride ldx). */
int dnpu_mlp_value_grad(const dnpu_mlp *m, const dnpu_mlp *back, int isa, int n_threads, size_t n,
                        const float *x, size_t ldx, float *y, float *g, size_t ldg);

/* The same gradient with bfloat16 products in AMX tiles (float32 sums; the first layer, which
 * sees the volts, and the last stay float32): several times the float32 rate, at bf16 accuracy
 * (about 3 significant digits in activations and gradients).  For training only.
 * A layer packed for the tiles: out[r][j] = sum_kk a[r][kk] W[j][kk], W given as a packed
 * dnpu_layer; kp = k rounded up to 32, np = n rounded up to 16 (at most 96). */
typedef struct dnpu_bf16_layer {
  int k, n, kp, np;
  unsigned short *bp; /* kp/32 x np/16 tiles of 16 x 32 bf16 (VNNI pairs), 64-byte aligned */
} dnpu_bf16_layer;

typedef struct dnpu_bf16_chain {
  int n_layers;                          /* of the float32 chain it was packed from */
  dnpu_bf16_layer fwd[DNPU_MAX_LAYERS];  /* layers 1..L-2 (hidden to hidden) */
  dnpu_bf16_layer back[DNPU_MAX_LAYERS]; /* layers 0..L-2 of `back` */
} dnpu_bf16_chain;

/* 1 if this CPU and OS run the bf16 gradient: AMX-BF16 tiles or AVX512-BF16 dot products. */
int dnpu_bf16_supported(void);
/* Which of them this process uses: "amx", "avx512bf16" or "none" (DNPU_CORE_BF16: bf16.h). */
const char *dnpu_bf16_unit_name(void);
/* Packs m (and its transposed chain, as for dnpu_mlp_value_grad) for the tiles; every product
 * has at most 96 outputs, so the input and hidden widths must be at most 96 (a lone hidden layer
 * may be wider; DNPU_ERR_ARG otherwise).  Free with dnpu_bf16_chain_free. */
int dnpu_bf16_chain_pack(dnpu_bf16_chain *c, const dnpu_mlp *m, const dnpu_mlp *back);
void dnpu_bf16_chain_free(dnpu_bf16_chain *c);
/* As dnpu_mlp_value_grad, bf16 products; DNPU_ERR_ISA where dnpu_bf16_supported() is 0. */
int dnpu_mlp_value_grad_bf16(const dnpu_mlp *m, const dnpu_bf16_chain *c, int n_threads, size_t n,
                             const float *x, size_t ldx, float *y, float *g, size_t ldg);

/* ---- time-multiplexed DNPU networks ---------------------------------------------------- */

/* One DNPU node: reads n_data features of the layer input (indices in_index), maps each into
 * its electrode range v = clip(x * in_scale + in_offset, lo, hi), evaluates its MLP (whose first
 * layer has n_data inputs and the control-voltage contribution folded into its bias) and emits
 * y * out_scale + out_offset. */
typedef struct dnpu_node {
  const dnpu_mlp *mlp;
  int n_data;
  const int *in_index;
  const float *in_scale, *in_offset, *lo, *hi;
  float out_scale, out_offset;
} dnpu_node;

typedef enum { DNPU_OP_LINEAR = 0, DNPU_OP_AFFINE = 1, DNPU_OP_DNPU = 2 } dnpu_op_kind;

typedef struct dnpu_op {
  int kind;
  int n_in, n_out;
  dnpu_layer lin;            /* LINEAR: packed weights (relu = 0) */
  const float *scale, *shift; /* AFFINE: y[j] = x[j] * scale[j] + shift[j], n_in == n_out */
  int n_nodes;               /* DNPU: n_out == n_nodes */
  const dnpu_node *nodes;
} dnpu_op;

typedef struct dnpu_net {
  int n_ops;
  const dnpu_op *ops;
  int n_in, n_out;
} dnpu_net;

/* Evaluates the network on n samples: x is n rows of n_in floats, y n rows of n_out floats
 * (both contiguous).  One call per batch; the batch is split over n_threads threads. */
int dnpu_net_eval(const dnpu_net *net, int isa, int n_threads, size_t n, const float *x, float *y);

/* ---- CPU features and dispatch --------------------------------------------------------- */

/* 1 if this CPU (and OS) can run the given instruction set. */
int dnpu_isa_supported(int isa);
/* The instruction set chosen once per process: DNPU_CORE_ISA if set and valid, else the best
 * supported.  dnpu_isa_env_status() is 0 if DNPU_CORE_ISA was unset or honoured, 1 if it named
 * an unknown set, 2 if it named a set this CPU cannot run (the best supported set is used). */
int dnpu_default_isa(void);
int dnpu_isa_env_status(void);
const char *dnpu_isa_name(int isa);

/* Measured FMA throughput (GFLOP/s, 2 flops per lane per FMA) of n_threads threads running
 * independent FMA chains with the given instruction set for about `seconds`. */
double dnpu_fma_peak_gflops(int isa, int n_threads, double seconds);

/* ---- DAC quantisation (quantise.c) --------------------------------------------------------- */

/* Volts to DAC codes in one pass: v is n rows of w values (w <= 64), column c inside
 * [lo_v[c], hi_v[c]] (NaN is not), its code rint((v - v0[c]) / per_code[c]) clamped to
 * [lo_code[c], hi_code[c]] (codes within 0..65535). Returns -1 when every value was inside (out,
 * n rows of w codes, is then written), else the flat index of the first value outside (out is
 * then partly written); -2 for a width or code range it cannot take (nothing written). The same
 * arithmetic as numpy's subtract, divide, rint, maximum, minimum. */
long long dnpu_volts_to_codes(size_t n, int w, const double *v, const double *v0, const double *per_code,
                              const double *lo_v, const double *hi_v, const double *lo_code,
                              const double *hi_code, uint16_t *out);

#ifdef __cplusplus
}
#endif
#endif
