# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin Cython layer over the C kernels in core/src (no numpy C API: buffers via PEP 3118).

Public Python API lives in core/surrogate.py and core/network.py; this module holds the packed
weights, checks arguments at the boundary and releases the GIL around the C calls.
"""
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_C_CONTIGUOUS,
                             PyBUF_FORMAT, PyBUF_WRITABLE)
from libc.stdlib cimport calloc, free
from libc.string cimport memset

import numpy as np

cdef extern from "dnpu_core.h" nogil:
    int DNPU_MAX_LAYERS
    int DNPU_MAX_THREADS
    int DNPU_ISA_COUNT
    ctypedef struct dnpu_layer:
        int k, n, npad, relu, sparse_in
        float *w
        float *b
    ctypedef struct dnpu_mlp:
        int n_layers
        dnpu_layer layer[32]
    ctypedef struct dnpu_node:
        const dnpu_mlp *mlp
        int n_data
        const int *in_index
        const float *in_scale
        const float *in_offset
        const float *lo
        const float *hi
        float out_scale, out_offset
    ctypedef struct dnpu_op:
        int kind
        int n_in, n_out
        dnpu_layer lin
        const float *scale
        const float *shift
        int n_nodes
        const dnpu_node *nodes
    ctypedef struct dnpu_net:
        int n_ops
        const dnpu_op *ops
        int n_in, n_out
    int dnpu_layer_pack(dnpu_layer *L, int k, int n, const float *W, const float *b, int relu)
    void dnpu_layer_free(dnpu_layer *L)
    int dnpu_mlp_eval(const dnpu_mlp *m, int isa, int n_threads, size_t n, const float *x,
                      size_t ldx, float *y, size_t ldy)
    int dnpu_net_eval(const dnpu_net *net, int isa, int n_threads, size_t n, const float *x,
                      float *y)
    ctypedef struct dnpu_bf16_chain:
        int n_layers
    int dnpu_bf16_supported()
    const char *dnpu_bf16_unit_name()
    int dnpu_bf16_chain_pack(dnpu_bf16_chain *c, const dnpu_mlp *m, const dnpu_mlp *back)
    void dnpu_bf16_chain_free(dnpu_bf16_chain *c)
    int dnpu_mlp_value_grad_bf16(const dnpu_mlp *m, const dnpu_bf16_chain *c, int n_threads,
                                 size_t n, const float *x, size_t ldx, float *y, float *g,
                                 size_t ldg)
    int dnpu_mlp_value_grad(const dnpu_mlp *m, const dnpu_mlp *back, int isa, int n_threads,
                            size_t n, const float *x, size_t ldx, float *y, float *g, size_t ldg)
    int dnpu_isa_supported(int isa)
    int dnpu_default_isa()
    int dnpu_isa_env_status()
    const char *dnpu_isa_name(int isa)
    double dnpu_fma_peak_gflops(int isa, int n_threads, double seconds)
    long long dnpu_volts_to_codes(size_t n, int w, const double *v, const double *v0,
                                  const double *per_code, const double *lo_v, const double *hi_v,
                                  const double *lo_code, const double *hi_code, unsigned short *out)

cdef enum:
    OP_LINEAR = 0
    OP_AFFINE = 1
    OP_DNPU = 2

ISA_NAMES = ("generic", "avx2", "avx512")
cdef dict _ISA_INDEX = {name: i for i, name in enumerate(ISA_NAMES)}
cdef object _empty = np.empty
cdef object _f32 = np.dtype(np.float32)
# Work below this many multiply-adds runs without releasing the GIL (releasing costs more).
cdef size_t _NOGIL_MACS = 200000


def supported_isas() -> list:
    """Instruction sets this CPU can run, portable first (e.g. ['generic', 'avx2', 'avx512'])."""
    return [ISA_NAMES[i] for i in range(DNPU_ISA_COUNT) if dnpu_isa_supported(i)]


def bf16_supported() -> bool:
    """True if this CPU (and OS) runs the bfloat16 training gradient (AMX-BF16 tiles or
    AVX512-BF16 dot products; DNPU_CORE_BF16=0 turns it off)."""
    return dnpu_bf16_supported() != 0


def bf16_unit() -> str:
    """The unit of the bfloat16 products in this process: "amx", "avx512bf16" (no AMX, or
    DNPU_CORE_BF16=avx512) or "none"."""
    return dnpu_bf16_unit_name().decode()


def default_isa() -> str:
    """The set chosen once per process: DNPU_CORE_ISA if valid and supported, else the best."""
    return ISA_NAMES[dnpu_default_isa()]


def isa_env_status() -> int:
    """0: DNPU_CORE_ISA unset or honoured; 1: unknown name; 2: not supported by this CPU."""
    return dnpu_isa_env_status()


cdef int _isa_index(object isa) except -1:
    if isa is None:
        return dnpu_default_isa()
    i = _ISA_INDEX.get(isa, -1) if isinstance(isa, str) else -1
    if i < 0:
        raise ValueError(f"isa must be one of {list(ISA_NAMES)} or None, got {isa!r}")
    if not dnpu_isa_supported(i):
        raise ValueError(f"isa {isa!r} is not supported by this CPU (supported: {supported_isas()})")
    return i


cdef inline int _check_threads(int threads) except -1:
    if threads < 1 or threads > DNPU_MAX_THREADS:
        raise ValueError(f"threads must be in [1, {DNPU_MAX_THREADS}], got {threads}")
    return 0


cdef _raise_status(int rc):
    if rc == 1:
        raise MemoryError("dnpu core: out of memory")
    if rc == 3:
        raise ValueError("dnpu core: instruction set not supported by this CPU")
    raise RuntimeError(f"dnpu core: internal error {rc}")


def fma_peak_gflops(int threads=1, isa=None, double seconds=0.2) -> float:
    """Measured FMA throughput in GFLOP/s (2 flops per multiply-add) on `threads` threads."""
    _check_threads(threads)
    cdef int i = _isa_index(isa)
    cdef double g
    with nogil:
        g = dnpu_fma_peak_gflops(i, threads, seconds)
    if g < 0:
        raise ValueError("fma_peak_gflops: invalid arguments")
    return g


def volts_to_codes(const double[:, ::1] v, const double[::1] v0, const double[::1] per_code,
                   const double[::1] lo_v, const double[::1] hi_v, const double[::1] lo_code,
                   const double[::1] hi_code, unsigned short[:, ::1] out) -> int:
    """DAC codes of volts [n, w] into out [n, w] (uint16) in one pass, each column checked
    against [lo_v, hi_v] and its codes clamped to [lo_code, hi_code]: -1 when every value was
    inside, else the flat index of the first value outside (NaN included; out is then partial)."""
    cdef Py_ssize_t w = v.shape[1]
    if out.shape[0] != v.shape[0] or out.shape[1] != w:
        raise ValueError(f"volts_to_codes: out has shape {tuple(out.shape)[:2]}, volts {tuple(v.shape)[:2]}")
    for name, col in (("v0", v0), ("per_code", per_code), ("lo_v", lo_v), ("hi_v", hi_v),
                      ("lo_code", lo_code), ("hi_code", hi_code)):
        if col.shape[0] != w:
            raise ValueError(f"volts_to_codes: {name} has {col.shape[0]} values for {w} columns")
    if v.shape[0] == 0:
        return -1
    cdef long long rc
    with nogil:
        rc = dnpu_volts_to_codes(<size_t>v.shape[0], <int>w, &v[0, 0], &v0[0], &per_code[0],
                                 &lo_v[0], &hi_v[0], &lo_code[0], &hi_code[0], &out[0, 0])
    if rc == -2:
        raise ValueError(f"volts_to_codes: {w} columns or codes outside 0..65535 not supported")
    return rc


cdef object _as_f32_2d(object x, Py_ssize_t ncols, str what):
    """Slow path: converts x to a C-contiguous float32 [n, ncols] array or raises."""
    a = np.asarray(x)
    if a.dtype.kind not in "f":
        raise TypeError(f"{what}: expected a floating-point array (float32, converted from "
                        f"float16/float64), got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[1] != ncols:
        raise ValueError(f"{what}: expected shape (n, {ncols}), got {tuple(a.shape)}")
    return np.ascontiguousarray(a, dtype=np.float32)


cdef class Mlp:
    """A packed chain of dense layers (weights owned here, or shared with a parent Mlp)."""
    cdef dnpu_mlp m
    cdef int owned[32]
    cdef readonly int n_inputs
    cdef readonly int n_outputs
    cdef readonly size_t macs
    cdef object _parent
    cdef dnpu_mlp back   # transposed layers for value_and_grad
    cdef dnpu_bf16_chain *chain16  # the same for bfloat16 tiles (NULL where too wide for them)

    def __cinit__(self, *args, **kwargs):
        memset(&self.m, 0, sizeof(self.m))
        memset(&self.back, 0, sizeof(self.back))
        self.chain16 = NULL
        memset(self.owned, 0, sizeof(self.owned))

    def __dealloc__(self):
        cdef int l
        for l in range(self.m.n_layers):
            if self.owned[l]:
                dnpu_layer_free(&self.m.layer[l])
        for l in range(self.back.n_layers):
            dnpu_layer_free(&self.back.layer[l])
        if self.chain16 != NULL:
            dnpu_bf16_chain_free(self.chain16)
            free(self.chain16)

    cdef _pack_layer(self, int l, object W, object b, int relu):
        cdef const float[:, ::1] w = np.ascontiguousarray(W, dtype=np.float32)
        cdef const float[::1] bb
        cdef const float *bp = NULL
        if b is not None:
            bb = np.ascontiguousarray(b, dtype=np.float32).reshape(-1)
            bp = &bb[0]
        rc = dnpu_layer_pack(&self.m.layer[l], w.shape[1], w.shape[0], &w[0, 0], bp, relu)
        if rc:
            _raise_status(rc)
        self.owned[l] = 1

    cdef _finish(self):
        self.n_inputs = self.m.layer[0].k
        self.n_outputs = self.m.layer[self.m.n_layers - 1].n
        self.macs = 0
        for l in range(self.m.n_layers):
            self.macs += <size_t>self.m.layer[l].k * self.m.layer[l].n

    def _init_layers(self, list weights, list biases, list relu):
        """weights[l]: float32 [n_out, n_in] (already validated), biases[l]: [n_out] or None."""
        cdef int L = len(weights)
        if self.m.n_layers:
            raise RuntimeError("this model is already initialised")
        if L < 1 or L > DNPU_MAX_LAYERS:
            raise ValueError(f"between 1 and {DNPU_MAX_LAYERS} layers are supported, got {L}")
        for l in range(L):
            self.m.n_layers = l  # layers packed so far are freed on error
            self._pack_layer(l, weights[l], biases[l], 1 if relu[l] else 0)
        self.m.n_layers = L
        self._set_skip_zeros(True)
        self._finish()

    def _init_derived(self, Mlp parent, object W0, object b0):
        """Own first layer (W0, b0), the other layers shared with `parent`."""
        if self.m.n_layers:
            raise RuntimeError("this model is already initialised")
        if parent.m.n_layers < 1:
            raise ValueError("parent model is empty")
        self._parent = parent
        self.m = parent.m
        memset(&self.m.layer[0], 0, sizeof(dnpu_layer))
        self.m.n_layers = 0
        self._pack_layer(0, W0, b0, parent.m.layer[0].relu)
        self.m.n_layers = parent.m.n_layers
        self.m.layer[0].sparse_in = 0
        self._finish()

    def _set_skip_zeros(self, bint on):
        """Lets kernels skip exact-zero inputs of layers that follow a ReLU (default on; the
        benchmark turns it off to measure the dense kernel).  Layer 0 always runs dense."""
        cdef int l
        for l in range(1, self.m.n_layers):
            self.m.layer[l].sparse_in = 1 if (on and self.m.layer[l - 1].relu) else 0

    cdef const dnpu_mlp *ptr(self):
        return &self.m

    def _init_back(self, list weights_t):
        """weights_t[l]: W_l^T as float32 [n_in_l, n_out_l] for the layers before the last."""
        cdef const float[:, ::1] w
        cdef int l, rc
        if self.back.n_layers or len(weights_t) != self.m.n_layers - 1:
            raise RuntimeError("backward layers already packed or of the wrong count")
        for l in range(len(weights_t)):
            w = np.ascontiguousarray(weights_t[l], dtype=np.float32)
            rc = dnpu_layer_pack(&self.back.layer[l], w.shape[1], w.shape[0], &w[0, 0], NULL, 0)
            if rc:
                _raise_status(rc)
            self.back.n_layers = l + 1
        # packed whether or not this CPU runs it: asking the CPU (and the OS for the AMX tile
        # state) waits until bf16 is wanted, so inference processes never touch AMX
        if self.m.n_layers >= 2:
            self.chain16 = <dnpu_bf16_chain *>calloc(1, sizeof(dnpu_bf16_chain))
            if self.chain16 == NULL:
                raise MemoryError("dnpu core: out of memory")
            rc = dnpu_bf16_chain_pack(self.chain16, &self.m, &self.back)
            if rc:  # layers too wide for the tiles: float32 only
                free(self.chain16)
                self.chain16 = NULL
                if rc != 2:
                    _raise_status(rc)

    @property
    def bf16_ready(self) -> bool:
        """True if value_and_grad(precision="bf16") runs for this model on this machine."""
        return self.chain16 != NULL and dnpu_bf16_supported() != 0

    def _value_and_grad(self, x, int threads, isa, bint bf16=False):
        """float32 [n, n_inputs] -> (y [n], dy/dx [n, n_inputs]); shapes checked by the caller."""
        cdef int isa_i
        cdef int rc
        cdef size_t n
        _check_threads(threads)
        isa_i = _isa_index(isa)
        cdef const float[:, ::1] xv = _as_f32_2d(x, self.n_inputs, "value_and_grad(x)")
        n = <size_t>xv.shape[0]
        y = _empty(n, _f32)
        g = _empty((n, self.n_inputs), _f32)
        if n == 0:
            return y, g
        cdef float[::1] yv = y
        cdef float[:, ::1] gv = g
        if bf16 and (self.chain16 == NULL or not dnpu_bf16_supported()):
            raise ValueError("bf16 gradients need AMX-BF16 or AVX512-BF16 (this CPU or model does not allow them)")
        with nogil:
            if bf16:
                rc = dnpu_mlp_value_grad_bf16(&self.m, self.chain16, threads, n, &xv[0, 0],
                                              <size_t>self.n_inputs, &yv[0], &gv[0, 0],
                                              <size_t>self.n_inputs)
            else:
                rc = dnpu_mlp_value_grad(&self.m, &self.back, isa_i, threads, n, &xv[0, 0],
                                         <size_t>self.n_inputs, &yv[0], &gv[0, 0],
                                         <size_t>self.n_inputs)
        if rc == 2:
            raise ValueError("value_and_grad needs ReLU after every layer but the last and one output")
        if rc:
            _raise_status(rc)
        return y, g

    def evaluate(self, x, *, int threads=1, isa=None):
        """float32 [n, n_inputs] -> float32 [n] (one output) or [n, n_outputs]."""
        cdef Py_buffer xb
        cdef Py_buffer yb
        cdef int isa_i
        cdef int rc
        cdef size_t n
        cdef bint fast
        if threads != 1:
            _check_threads(threads)
        isa_i = dnpu_default_isa() if isa is None else _isa_index(isa)
        # fast path: a C-contiguous float32 [n, n_inputs] buffer is used in place
        try:
            PyObject_GetBuffer(x, &xb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
            fast = True
        except (BufferError, TypeError, ValueError):
            fast = False
        if fast and (xb.ndim != 2 or xb.itemsize != 4 or xb.format[0] != b'f'
                     or xb.format[1] != 0 or xb.shape[1] != self.n_inputs):
            PyBuffer_Release(&xb)
            fast = False
        if not fast:
            x = _as_f32_2d(x, self.n_inputs, "evaluate(x)")
            PyObject_GetBuffer(x, &xb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
        n = <size_t>xb.shape[0]
        if self.n_outputs == 1:
            y = _empty(n, _f32)
        else:
            y = _empty((n, self.n_outputs), _f32)
        try:
            PyObject_GetBuffer(y, &yb, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE)
        except BaseException:
            PyBuffer_Release(&xb)
            raise
        if n * self.macs >= _NOGIL_MACS:
            with nogil:
                rc = dnpu_mlp_eval(&self.m, isa_i, threads, n, <const float *>xb.buf,
                                   <size_t>self.n_inputs, <float *>yb.buf, <size_t>self.n_outputs)
        else:
            rc = dnpu_mlp_eval(&self.m, isa_i, threads, n, <const float *>xb.buf,
                               <size_t>self.n_inputs, <float *>yb.buf, <size_t>self.n_outputs)
        PyBuffer_Release(&yb)
        PyBuffer_Release(&xb)
        if rc:
            _raise_status(rc)
        return y


cdef class Net:
    """A network of linear, affine and DNPU ops evaluated by one C call per batch."""
    cdef dnpu_net net
    cdef dnpu_op *ops
    cdef dnpu_node *nodes
    cdef int n_ops_packed
    cdef list _keep   # arrays and Mlp objects whose memory the C structs point into
    cdef readonly int n_inputs
    cdef readonly int n_outputs

    def __cinit__(self, *args, **kwargs):
        self.ops = NULL
        self.nodes = NULL
        self.n_ops_packed = 0
        self._keep = []
        memset(&self.net, 0, sizeof(self.net))

    def __dealloc__(self):
        cdef int o
        if self.ops != NULL:
            for o in range(self.n_ops_packed):
                if self.ops[o].kind == OP_LINEAR:
                    dnpu_layer_free(&self.ops[o].lin)
            free(self.ops)
        free(self.nodes)

    cdef const float *_fptr(self, object a) except NULL:
        cdef const float[::1] v = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
        self._keep.append(v)
        return &v[0]

    cdef const int *_iptr(self, object a) except NULL:
        cdef const int[::1] v = np.ascontiguousarray(a, dtype=np.intc).reshape(-1)
        self._keep.append(v)
        return &v[0]

    def _init(self, int n_inputs, list ops):
        """ops (validated by core.network): ("linear", W [n_out, n_in], b | None),
        ("affine", scale [n], shift [n]), ("dnpu", [(Mlp, in_index, in_scale, in_offset, lo, hi,
        out_scale, out_offset), ...])."""
        cdef int n_nodes = 0
        cdef int o, q, width = n_inputs
        if self.ops != NULL:
            raise RuntimeError("this network is already initialised")
        cdef dnpu_op *op
        cdef dnpu_node *nd
        cdef Mlp mlp
        cdef const float[:, ::1] w
        cdef const float *bp
        for spec in ops:
            if spec[0] == "dnpu":
                n_nodes += len(spec[1])
        self.ops = <dnpu_op *>calloc(max(len(ops), 1), sizeof(dnpu_op))
        self.nodes = <dnpu_node *>calloc(max(n_nodes, 1), sizeof(dnpu_node))
        if self.ops == NULL or self.nodes == NULL:
            raise MemoryError()
        nd = self.nodes
        for o in range(len(ops)):
            spec = ops[o]
            op = &self.ops[o]
            op.n_in = width
            if spec[0] == "linear":
                w = np.ascontiguousarray(spec[1], dtype=np.float32)
                bp = NULL
                if spec[2] is not None:
                    bp = self._fptr(spec[2])
                rc = dnpu_layer_pack(&op.lin, w.shape[1], w.shape[0], &w[0, 0], bp, 0)
                if rc:
                    _raise_status(rc)
                # dense: the shipped networks' inputs are centred (no exact zeros), and the
                # zero scan would cost the linear layer about 15 % for nothing
                op.lin.sparse_in = 0
                op.kind = OP_LINEAR
                op.n_out = w.shape[0]
            elif spec[0] == "affine":
                op.kind = OP_AFFINE
                op.n_out = width
                op.scale = self._fptr(spec[1])
                op.shift = self._fptr(spec[2])
            elif spec[0] == "dnpu":
                op.kind = OP_DNPU
                op.n_out = len(spec[1])
                op.n_nodes = op.n_out
                op.nodes = nd
                for node in spec[1]:
                    mlp = node[0]
                    self._keep.append(mlp)
                    nd.mlp = mlp.ptr()
                    nd.n_data = mlp.n_inputs
                    nd.in_index = self._iptr(node[1])
                    nd.in_scale = self._fptr(node[2])
                    nd.in_offset = self._fptr(node[3])
                    nd.lo = self._fptr(node[4])
                    nd.hi = self._fptr(node[5])
                    nd.out_scale = node[6]
                    nd.out_offset = node[7]
                    nd += 1
            else:
                raise ValueError(f"unknown op kind {spec[0]!r}")
            self.n_ops_packed = o + 1
            width = op.n_out
        self.net.n_ops = len(ops)
        self.net.ops = self.ops
        self.net.n_in = n_inputs
        self.net.n_out = width
        self.n_inputs = n_inputs
        self.n_outputs = width

    def evaluate(self, x, *, int threads=1, isa=None):
        """float32 [n, n_inputs] -> float32 [n, n_outputs]; one C call, GIL released."""
        _check_threads(threads)
        cdef int isa_i = _isa_index(isa)
        cdef Py_buffer xb
        cdef Py_buffer yb
        cdef int rc
        cdef size_t n
        xa = _as_f32_2d(x, self.n_inputs, "evaluate(x)")
        n = <size_t>xa.shape[0]
        y = _empty((n, self.n_outputs), _f32)
        PyObject_GetBuffer(xa, &xb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
        try:
            PyObject_GetBuffer(y, &yb, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE)
        except BaseException:
            PyBuffer_Release(&xb)
            raise
        with nogil:
            rc = dnpu_net_eval(&self.net, isa_i, threads, n, <const float *>xb.buf, <float *>yb.buf)
        PyBuffer_Release(&yb)
        PyBuffer_Release(&xb)
        if rc:
            _raise_status(rc)
        return y
