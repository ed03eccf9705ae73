# The Cython backend's sequence and projection kernels.  Included by
# _cy_avx512.pyx, _cy_avx2.pyx and _cy_generic.pyx, which are this same code
# compiled with different instruction-set flags (see setup.py).
#
# Three layers, as in the rest of fastlstm:
#   fastlstm_simd.h  pure C block micro-kernels (one block of 16 units, a few rows)
#   this file        nogil loops over steps, blocks and threads, writing into
#                    caller-owned buffers; no allocation, no validation
#   fastlstm/cython_glue.py  packing, workspaces, validation-free dispatch

cimport cython
cimport numpy as cnp
from cython.parallel cimport parallel
from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t
from libc.string cimport memcpy, memset

cdef extern from "fastlstm_simd.h" nogil:
    enum:
        FL_U
        FL_MAX_ROWS
        FL_LSTM
        FL_GRU
        FL_RNN_TANH
        FL_RNN_RELU
        FL_PROJ
        FL_GRU_RZ
        FL_GRU_N
        FL_AMX_ROWS
        FL_AMX_MIN_ROWS
        FL_AMX_PARTS
        FL_AMX_X_PARTS
        FL_X_ONE_PART_ROWS
        FL_BF16_H_PARTS
        FL_AMX_F32_MIN_ROWS
        FL_AMX_F32_PROJECT_ROWS
        FL_BF16DP_MAX_ROWS
        FL_VW
        FL_BF16_PAIRED
        FL_Q8_PANEL_ROWS
        FL_Q7_MIN_ROWS
    long fl_amx_lda16(long K2p)
    long FL_AMX_PROJECT_A16_ROWS(int w_parts)
    int FL_X_PARTS(long step_rows)
    ctypedef struct fl_block_args:
        const void *w
        int wt
        const float *wscale
        const float *hq
        long ldq
        const float *hscale
        const int8_t *wq
        const int32_t *wsum
        const uint8_t *hu8
        long ldu
        int q7
        long K
        const float *h
        long ldh
        const float *x
        long ldx
        float *c
        long ldc
        float *h_out
        long ldo
        const float *h_self
        const float *b_hn
        const float *peep
        int coupled
        int has_clip
        float clip
        float *rh
        float *z
        long ldr
        long ldr2
        const uint16_t *wp
        long K2p
        int wp_parts
        long wp_part
        const uint16_t *a16
        long lda16
        long a16_part
        int a16_parts
        const uint16_t *x16
        long ldx16
        long Kx2p
        const uint16_t *wxp
    void fl_block(int mode, long n_rows, const fl_block_args *args, float *scratch)
    void fl_block_amx(int mode, long n_rows, const fl_block_args *args, float *scratch)
    void fl_block_bf16dp(int mode, long n_rows, const fl_block_args *args)
    int fl_cpu_supports_bf16dp()
    void fl_project_amx(int G, const uint16_t *w_pairs, long K2p, int w_parts,
                        long n_blocks, long K, const float *bias, const float *x, long ldx,
                        float *out, long ldo, long row0, long row1, uint16_t *a16, float *stage,
                        int x_parts)
    void fl_bf16_split_rows(const float *x, long ldx, long K, long rows, uint16_t *out,
                            long part_stride, int n_parts, long lda)
    void fl_bf16_parts_sum_rows(const float *x, long ldx, long K, long rows, float *out, long ldo,
                                int n_parts)
    int fl_amx_usable()
    void fl_amx_begin()
    void fl_amx_end()
    void fl_project_rows(int G, int wt, const void *w_blocks, long n_blocks,
                         long K, const float *bias, const float *x, long ldx, float *out,
                         long ldo, long row0, long row1, int x_parts)
    void fl_quantize_rows(const float *h, long ldh, long K, long rows, float *hq, long ldq,
                          uint8_t *hu8, long ldu, float *hscale, float qmax)
    float FL_QMAX(int q7)
    long fl_q8_ldu(long K)
    long fl_q8_scratch_bytes(long K)
    void fl_q8_quantize_panel(const float *x, long ldx, long K, long rows, int as_bytes,
                              int q7, uint8_t *scratch)
    void fl_q8_panel_product(int G, const int8_t *w_blocks, const int8_t *wq,
                             const int32_t *wsum, const float *wscale, long n_blocks, long K,
                             const float *bias, const uint8_t *scratch, long rows, int q7,
                             float *out, long ldo)
    void fl_project_q8_rows(int G, const int8_t *w_blocks, const int8_t *wq,
                            const int32_t *wsum, const float *wscale, long n_blocks, long K,
                            const float *bias, const float *x, long ldx, float *out, long ldo,
                            long row0, long row1, int q7, uint8_t *scratch)
    int fl_cpu_supports_vnni()
    unsigned fl_ftz_enter()
    void fl_ftz_exit(unsigned old)
    ctypedef struct fl_barrier_state:
        int count
        int generation
    void fl_barrier_wait(fl_barrier_state *b, int tid, int n_threads)
    ctypedef struct fl_team_cpus:
        int n
    void fl_team_plan(fl_team_cpus *t, int n_threads)
    void fl_team_pin(const fl_team_cpus *t, int tid)
    int fl_num_threads()
    int fl_thread_id()
    int fl_openmp_enabled()
    int fl_cpu_supports_avx512()
    int fl_cpu_supports_avx2()

LSTM = FL_LSTM
GRU = FL_GRU
GRU_RESET_BEFORE = FL_GRU_RZ
RNN_TANH = FL_RNN_TANH
RNN_RELU = FL_RNN_RELU
UNITS_PER_BLOCK = FL_U
AMX_ROWS = FL_AMX_ROWS
AMX_PARTS = FL_AMX_PARTS
AMX_X_PARTS = FL_AMX_X_PARTS
AMX_F32_MIN_ROWS = FL_AMX_F32_MIN_ROWS
Q7_MIN_ROWS = FL_Q7_MIN_ROWS


def amx_row_elements(long K):
    """bf16 elements per row of a split activation of K columns in AMX scratch (K rounded
    up to whole 64-byte lines, an odd number of them: see fl_amx_lda16)."""
    return fl_amx_lda16((K + 31) // 32 * 16)


def amx_projection_scratch_rows():
    """Rows of split x a thread's AMX projection scratch needs for any weight type."""
    return max(FL_AMX_PROJECT_A16_ROWS(1), FL_AMX_PROJECT_A16_ROWS(FL_AMX_PARTS))

# Weight storage types: float32, bfloat16 bits, int8 (with float32 column scales)
ctypedef fused weight_t:
    float
    unsigned short
    signed char


def q8_scratch_bytes(long K):
    """Bytes of per-thread scratch int8's input projection needs for inputs of K columns
    (a panel of rows quantized per row)."""
    return fl_q8_scratch_bytes(K)


def openmp_enabled():
    """True when this module was built with OpenMP (threads available)."""
    return bool(fl_openmp_enabled())


def cpu_supports_avx512():
    return bool(fl_cpu_supports_avx512())


def cpu_supports_vnni():
    """True when this module has the AVX512-VNNI int8 path and the CPU runs it."""
    return bool(fl_cpu_supports_vnni())


def cpu_supports_bf16dp():
    """True when this module can multiply bf16 weights with vdpbf16ps (AVX512-BF16)."""
    return bool(fl_cpu_supports_bf16dp())


def cpu_supports_amx():
    """True when this module has the AMX paths and the CPU (and OS) runs them."""
    return bool(fl_amx_usable())


def bf16_split(const float[:, ::1] x, uint16_t[:, :, ::1] parts):
    """parts (P, N, >= K) bfloat16 bits = x (N, K) split in P parts: part 0 = RNE(x),
    part p = RNE(x - the parts before it), zero-filled beyond K; the activations the
    AMX bf16 products multiply."""
    if parts.shape[1] != x.shape[0] or parts.shape[2] < x.shape[1] or parts.shape[0] < 1:
        raise ValueError(f"bf16_split: parts must be (P, {x.shape[0]}, >= {x.shape[1]}), "
                         f"got ({parts.shape[0]}, {parts.shape[1]}, {parts.shape[2]})")
    if x.shape[0] == 0:
        return
    with nogil:
        fl_bf16_split_rows(&x[0, 0], x.shape[1], x.shape[1], x.shape[0], &parts[0, 0, 0],
                           parts.shape[1] * parts.shape[2], parts.shape[0], parts.shape[2])


def bf16_parts_sum(const float[:, ::1] x, float[:, ::1] out, int n_parts):
    """out (N, K) = the sums of the n_parts bf16 parts of x (N, K) that bf16_split
    writes: what bf16 and int8 weights multiply in the input projection (n_parts: 1
    from 16 rows a step, else AMX_X_PARTS; see project)."""
    if out.shape[0] != x.shape[0] or out.shape[1] != x.shape[1]:
        raise ValueError(f"bf16_parts_sum: out must be ({x.shape[0]}, {x.shape[1]}), "
                         f"got ({out.shape[0]}, {out.shape[1]})")
    if n_parts < 1:
        raise ValueError(f"bf16_parts_sum: n_parts must be >= 1, got {n_parts}")
    if x.shape[0] == 0:
        return
    with nogil:
        fl_bf16_parts_sum_rows(&x[0, 0], x.shape[1], x.shape[1], x.shape[0], &out[0, 0],
                               out.shape[1], n_parts)


def cpu_supports_avx2():
    return bool(fl_cpu_supports_avx2())


def bf16_pair_width():
    """bf16 weights' storage order in this build: w, so that each run of 2*w weights of a
    row is stored as pairs (weight i, weight w + i) in one 32-bit word; 0: plain order."""
    return FL_VW if FL_BF16_PAIRED else 0


ctypedef struct SeqArgs:
    int mode
    bint reverse
    bint has_proj
    long n_steps
    long batch              # this plan's rows: rows row0 .. row0 + batch of every step
    long step_rows          # rows of every step in xproj, out and the state arrays
    long row0
    float *xproj            # (T, step_rows, ldx) at row row0, written by the fused projection
    long ldx
    long xcol
    int wt                  # weight type: 0 float32, 1 bfloat16, 2 int8
    const void *w_hh        # (n_blk, K, width)
    const float *scale_hh   # (n_blk * width) int8 column scales, or NULL
    long n_blk
    long K
    long width
    long xwidth             # columns of a block in xproj (3*16 for either GRU)
    const void *w_hr        # (n_pblk, hidden, FL_U)
    const float *scale_hr
    long n_pblk
    long hidden
    const float *b_hn       # (n_blk * FL_U,)
    float *h_state          # (2, B, ld_state)
    long ld_state
    float *c_state          # (B, ldc)
    long ldc
    float *h_full           # (B, ld_full)
    long ld_full
    const long *n_active    # (T,)
    float *out              # (T, B, ldy)
    long ldy
    long out_col
    long hidden_out
    const float *peep       # (n_blk, 3, FL_U) or NULL
    bint coupled
    bint has_clip
    float clip
    const void *w_hn        # (n_blk, hidden, FL_U) original GRU's new-gate weights
    const float *scale_hn
    float *rh               # (B, ldr) original GRU scratch: r * h
    float *z                # (B, ldr) original GRU scratch: z
    long ldr
    float *scratch          # (threads, scratch_stride) per-thread partial gate sums
    int scratch_threads
    long scratch_stride
    bint quantize           # int8: the recurrent input h quantized per row and step
    bint q7                 # int8: h and x on the 7-bit grid (step_rows >= FL_Q7_MIN_ROWS)
                            # (bf16, s.wt == 1, rounds it to bf16)
    float *q_scratch        # (threads, q_stride) int8's quantized rows and their scales,
                            # bf16's rounded rows (on FMAs)
    long q_stride           # >= B * (K + 1)
    long ldq
    const int8_t *wq        # (n_blk, K4, width, 4) VNNI-ordered w_hh, or NULL
    const int32_t *wsum     # (n_blk, width) column sums of wq
    uint8_t *u8_scratch     # (threads, u8_stride) quantized rows + 128 for vpdpbusd
    long u8_stride          # >= B_pad * ldu
    long ldu
    bint amx                # products on AMX tiles: int8 at >= FL_AMX_MIN_ROWS rows, bf16
                            # always, fp32 at >= FL_AMX_F32_MIN_ROWS
    bint bf16dp             # bf16 off the tiles: products of up to FL_BF16DP_MAX_ROWS rows
                            # on vdpbf16ps (wp, a16_scratch)
    const uint16_t *wp      # bf16, fp32: w_hh in pair order, or NULL,
                            # (n_blk, wp_parts * K2p, width, 2)
    long K2p
    int wp_parts            # 1 (bf16) or FL_AMX_PARTS (fp32's bf16 parts)
    uint16_t *a16_scratch   # bf16, fp32: h split in wp_parts parts,
                            # (threads, wp_parts * B_pad * fl_amx_lda16(K2p))
    long a16_stride
    # The input projection, when the team runs it before the steps (p_rows > 0): each
    # thread projects the blocks whose steps it runs, so no barrier sits between the
    # two, and across calls a thread reads the same slices of W_ih and W_hh (its L2).
    long p_rows             # T*B rows of x, or 0: xproj is filled by the caller
    const float *p_x        # (p_rows, p_ldx) IN
    long p_ldx
    long p_K
    const void *p_w         # (n_blk, p_K, xwidth) this direction's input weights
    const float *p_scale    # (n_blk * xwidth,) int8 column scales, or NULL
    const float *p_bias     # (n_blk * xwidth,)
    const uint16_t *p_pairs # (n_blk, p_K2p, xwidth, 2) bf16 pair order for AMX, or NULL
    long p_K2p
    uint16_t *p_a16         # (threads, p_a16_stride) x split in bf16 parts
    long p_a16_stride
    float *p_stage          # (threads, p_stage_stride) AMX products of one panel
    long p_stage_stride
    int p_scratch_threads   # threads p_a16 and p_stage have rows for
    int p_x_parts           # bf16: x in FL_X_PARTS(step_rows) bf16 parts
    const int8_t *p_wq      # int8: p_w in VNNI order (n_blk, fl_q8_ldu(p_K) / 4, xwidth, 4),
    const int32_t *p_wsum   # and its column sums (n_blk, xwidth), or NULL
    uint8_t *p_q8           # int8: (p_q8_threads, p_q8_stride) x quantized a panel at a time
    long p_q8_stride
    int p_q8_threads
    bint fused_x            # bf16 on AMX: each step multiplies its x rows (row0 on) in the
                            # recurrent product's tiles (p_pairs, p_a16), no xproj
    int first_step_parity   # blocks run backwards at steps of this parity (see the loop)


cdef inline void _share(long n, int parts, int part, long *lo, long *hi) noexcept nogil:
    lo[0] = n * part // parts
    hi[0] = n * (part + 1) // parts


cdef inline long _round_rows(long n) noexcept nogil:
    """n rounded up to whole AMX tile pairs (FL_AMX_ROWS rows)."""
    return (n + FL_AMX_ROWS - 1) // FL_AMX_ROWS * FL_AMX_ROWS


cdef inline const void *_weights(int wt, const void *base, long elements) noexcept nogil:
    if wt == 0:
        return <const float *>base + elements
    if wt == 1:
        return <const unsigned short *>base + elements
    return <const signed char *>base + elements


cdef inline bint _project_on_tiles(const SeqArgs *s) noexcept nogil:
    return s.p_rows > 0 and s.p_pairs != NULL and s.p_rows >= (
        FL_AMX_F32_PROJECT_ROWS if s.wt == 0 else FL_AMX_MIN_ROWS)


cdef inline int _tile_parts(int wt) noexcept nogil:
    """Parts of the weights in AMX pair order: fp32 as FL_AMX_PARTS bf16 parts, else 1."""
    return FL_AMX_PARTS if wt == 0 else 1


cdef long _pairs_k2(const uint16_t[:, :, :, ::1] w_pairs, int wt, long n_blocks, long width,
                    long K):
    """K2p of weights in AMX pair order, (n_blocks, parts * K2p, width, 2) with weight type
    wt's parts, for blocks of K x width (2*K2p is K rounded up to a multiple of 32); 0 when
    their shape does not match."""
    cdef int parts = _tile_parts(wt)
    cdef long K2p = w_pairs.shape[1] // parts
    if (w_pairs.shape[0] != n_blocks or w_pairs.shape[1] != parts * K2p
            or w_pairs.shape[2] != width or K2p % 16 != 0 or not K <= 2 * K2p < K + 32):
        return 0
    return K2p


cdef long _projection_pairs_k2(const uint16_t[:, :, :, ::1] w_pairs, int wt, long n_blocks,
                               long width, long K, uint16_t[:, ::1] a16_scratch,
                               float[:, ::1] stage, int n_threads):
    """K2p of the AMX projection's pair-order weights (see _pairs_k2), or 0 when they or
    the per-thread scratch do not match weights of n_blocks blocks of K x width for
    n_threads threads."""
    cdef long K2p = _pairs_k2(w_pairs, wt, n_blocks, width, K)
    if (K2p == 0 or a16_scratch is None or stage is None
            or a16_scratch.shape[0] < n_threads or stage.shape[0] < n_threads
            or a16_scratch.shape[1] < FL_AMX_PROJECT_A16_ROWS(_tile_parts(wt)) * fl_amx_lda16(K2p)
            or stage.shape[1] < FL_AMX_ROWS * width):
        return 0
    return K2p


ctypedef struct Q8Projection:
    const int8_t *wq        # int8 weights in VNNI order, or NULL (no integer tiles)
    const int32_t *wsum     # their column sums, or NULL
    uint8_t *q8             # (q8_threads, q8_stride) per-thread scratch
    long q8_stride
    int q8_threads


cdef int _q8_projection(str caller, long n_blocks, long width, long K, int n_threads,
                        const int8_t[:, :, :, ::1] wq, const int32_t[:, ::1] wsum,
                        uint8_t[:, ::1] q8_scratch, Q8Projection *out) except -1:
    """int8 projection arguments of ``caller`` checked, then their pointers into ``out``:
    q8_scratch (>= n_threads, >= fl_q8_scratch_bytes(K)) uint8; wq (n_blocks,
    fl_q8_ldu(K) / 4, width, 4) int8 with wsum (n_blocks, width) int32, or neither (wq is
    left NULL where the CPU has no integer tiles)."""
    if q8_scratch is None or q8_scratch.shape[0] < n_threads \
            or q8_scratch.shape[1] < fl_q8_scratch_bytes(K) or q8_scratch.shape[1] % 4:
        got = None if q8_scratch is None else tuple(q8_scratch.shape)[:2]
        raise ValueError(f"{caller}: int8 needs q8_scratch of (>= {n_threads}, >= "
                         f"{fl_q8_scratch_bytes(K)}) bytes (a multiple of 4), got {got}")
    if (wq is None) != (wsum is None):
        raise ValueError(f"{caller}: wq and wsum go together")
    if wq is not None and (tuple(wq.shape)[:4] != (n_blocks, fl_q8_ldu(K) // 4, width, 4)
                           or tuple(wsum.shape)[:2] != (n_blocks, width)):
        raise ValueError(f"{caller}: wq, wsum: expected ({n_blocks}, {fl_q8_ldu(K) // 4}, "
                         f"{width}, 4) and ({n_blocks}, {width}), got "
                         f"{tuple(wq.shape)[:4]} and {tuple(wsum.shape)[:2]}")
    out.wq = NULL
    out.wsum = NULL
    if wq is not None and fl_cpu_supports_vnni():
        out.wq = &wq[0, 0, 0, 0]
        out.wsum = &wsum[0, 0]
    out.q8 = &q8_scratch[0, 0]
    out.q8_stride = q8_scratch.shape[1]
    out.q8_threads = q8_scratch.shape[0]
    return 0


cdef inline const int8_t *_wq_at(const int8_t *wq, long blk, long K, long width) noexcept nogil:
    """Block blk of int8 weights in VNNI order (n_blk, fl_q8_ldu(K) / 4, width, 4), or NULL."""
    return wq + blk * fl_q8_ldu(K) * width if wq != NULL else NULL


cdef inline const int32_t *_wsum_at(const int8_t *wq, const int32_t *wsum, long blk,
                                    long width) noexcept nogil:
    """Block blk's column sums of those weights, or NULL with them."""
    return wsum + blk * width if wq != NULL else NULL


cdef inline long _block_at(long j, long b0, long b1, bint backwards) noexcept nogil:
    """The j-th block of [b0, b1), counted from b1 - 1 when ``backwards``."""
    return b1 - 1 - j if backwards else b0 + j


cdef void _project_part(int G, int wt, const void *w, const float *wscale, const float *bias,
                       long K, long b0, long b1, const float *x, long ldx, float *out, long ldo,
                       long r0, long r1, const uint16_t *pairs, long K2p, uint16_t *a16,
                       float *stage, int x_parts, const int8_t *wq, const int32_t *wsum,
                       uint8_t *q8, bint q7) noexcept nogil:
    """out rows [r0, r1), columns of blocks [b0, b1) = x @ those blocks' weights + bias: on
    AMX tiles with ``pairs`` (the caller has configured the tiles), else FMAs.  w, wscale,
    bias, pairs and out point at block 0; ``a16``, ``stage`` are this thread's scratch;
    bf16 weights multiply x in ``x_parts`` bf16 parts (FL_X_PARTS).  int8 weights
    multiply x quantized per row (fl_project_q8_rows: on integer tiles with wq and wsum,
    at block 0 too, or NULL; on the 7-bit grid when q7), ``q8`` this thread's scratch."""
    cdef long width = G * FL_U
    cdef const float *ws = wscale + b0 * width if wscale != NULL else NULL
    cdef int w_parts = _tile_parts(wt)
    cdef long r_tiles = r0  # rows [r0, r_tiles) on tiles, the rest on FMAs
    if b1 <= b0 or r1 <= r0:
        return
    if wt == 2:
        fl_project_q8_rows(G, <const int8_t *>w + b0 * K * width, _wq_at(wq, b0, K, width),
                           _wsum_at(wq, wsum, b0, width), ws, b1 - b0, K, bias + b0 * width,
                           x, ldx, out + b0 * width, ldo, r0, r1, q7, q8)
        return
    if pairs != NULL and wt != 0:
        r_tiles = r1
    elif pairs != NULL and r1 - r0 >= FL_AMX_F32_PROJECT_ROWS:  # fp32: whole tile pairs
        r_tiles = r0 + (r1 - r0) // FL_AMX_ROWS * FL_AMX_ROWS
    if r_tiles > r0:
        fl_project_amx(G, pairs + b0 * w_parts * K2p * width * 2, K2p, w_parts, b1 - b0, K,
                       bias + b0 * width, x, ldx, out + b0 * width, ldo, r0, r_tiles, a16, stage,
                       x_parts)
    if r1 > r_tiles:
        fl_project_rows(G, wt, _weights(wt, w, b0 * K * width), b1 - b0, K,
                        bias + b0 * width, x, ldx, out + b0 * width, ldo, r_tiles, r1, x_parts)


cdef inline uint8_t *_q8_scratch(const SeqArgs *s, int slot) noexcept nogil:
    return s.p_q8 + slot * s.p_q8_stride if s.p_q8 != NULL else NULL


cdef inline void _project_own_blocks(const SeqArgs *s, long b0, long b1, int slot) noexcept nogil:
    """xproj columns of blocks [b0, b1) for all p_rows rows (the team's fused projection)."""
    cdef bint tiles = _project_on_tiles(s)
    _project_part(s.xwidth // FL_U, s.wt, s.p_w, s.p_scale, s.p_bias, s.p_K, b0, b1, s.p_x,
                  s.p_ldx, s.xproj + s.xcol, s.ldx, 0, s.p_rows, s.p_pairs if tiles else NULL,
                  s.p_K2p, s.p_a16 + slot * s.p_a16_stride if tiles else NULL,
                  s.p_stage + slot * s.p_stage_stride if tiles else NULL, s.p_x_parts,
                  s.p_wq, s.p_wsum, _q8_scratch(s, slot), s.q7)


cdef inline void _project_block(const SeqArgs *s, long blk, int slot) noexcept nogil:
    """xproj columns of block blk (a one-step call projecting block by block); int8's rows
    were quantized before the step (_quantize_projected_rows)."""
    cdef long width = s.xwidth
    if s.wt != 2:
        _project_own_blocks(s, blk, blk + 1, slot)
        return
    fl_q8_panel_product(width // FL_U, <const int8_t *>s.p_w + blk * s.p_K * width,
                        _wq_at(s.p_wq, blk, s.p_K, width),
                        _wsum_at(s.p_wq, s.p_wsum, blk, width),
                        s.p_scale + blk * width, 1, s.p_K, s.p_bias + blk * width,
                        _q8_scratch(s, slot), s.p_rows, s.q7, s.xproj + s.xcol + blk * width,
                        s.ldx)


cdef inline void _quantize_projected_rows(const SeqArgs *s, int slot) noexcept nogil:
    """int8, a one-step call projecting block by block: its (<= FL_Q8_PANEL_ROWS) rows of x
    quantized once for every block."""
    if s.wt == 2:
        fl_q8_quantize_panel(s.p_x, s.p_ldx, s.p_K, s.p_rows, s.p_wq != NULL, s.q7,
                             _q8_scratch(s, slot))


cdef void _sequence_thread(const SeqArgs *s, fl_barrier_state *barrier, int tid, int n_threads,
                           int slot) noexcept nogil:
    """Thread tid of a team of n_threads running s's steps (barrier: the team's), with the
    per-thread scratch rows ``slot``."""
    cdef long b0, b1, p0, p1, u0, u1, step, t, n_act, blk, i, j
    cdef bint backwards
    cdef float *h_cur
    cdef float *h_nxt
    cdef float *y
    cdef fl_block_args a
    cdef float *scratch = NULL
    cdef float *hq = NULL
    cdef float *hscale = NULL
    cdef uint8_t *hu8 = NULL
    cdef uint16_t *a16 = NULL
    cdef bint amx = s.amx and slot < s.scratch_threads
    cdef bint bf16dp = s.bf16dp and slot < s.scratch_threads
    cdef bint amx_step, dp_step
    # bf16's recurrent products run on tiles at every row count, int8's from
    # FL_AMX_MIN_ROWS, fp32's from FL_AMX_F32_MIN_ROWS (fastlstm_simd.h has why)
    cdef long amx_min_rows = 1 if s.wt == 1 else (
        FL_AMX_MIN_ROWS if s.wt == 2 else FL_AMX_F32_MIN_ROWS)
    # h in as many bf16 parts as the tiles multiply: fp32 three (exact), bf16 rounded
    cdef int h_parts = FL_AMX_PARTS if s.wt == 0 else FL_BF16_H_PARTS
    cdef long rows_pad = _round_rows(s.batch)
    cdef unsigned csr = fl_ftz_enter()
    if slot < s.scratch_threads:
        scratch = s.scratch + slot * s.scratch_stride
        if s.quantize or s.wt == 1:
            hq = s.q_scratch + slot * s.q_stride
        if s.quantize:
            hscale = hq + s.batch * s.ldq
            if s.wq != NULL:
                hu8 = s.u8_scratch + slot * s.u8_stride
    _share(s.n_blk, n_threads, tid, &b0, &b1)
    _share(s.n_pblk, n_threads, tid, &p0, &p1)
    # the state units this thread owns: its blocks, or its projection blocks
    if s.has_proj:
        u0 = p0 * FL_U
        u1 = p1 * FL_U
    else:
        u0 = b0 * FL_U
        u1 = b1 * FL_U
    if u1 > s.hidden_out:
        u1 = s.hidden_out
    if u0 > u1:
        u0 = u1
    if amx or _project_on_tiles(s):
        fl_amx_begin()
    if (amx or bf16dp) and s.wp != NULL:
        a16 = s.a16_scratch + slot * s.a16_stride
    # One step (and no tiles, which would split x again per block): each block is
    # projected just before its step, so the step reads W_ih and W_hh block by block
    # (and backwards on alternate calls, below).
    cdef bint project_per_block = (s.p_rows and s.n_steps == 1 and not _project_on_tiles(s)
                                   and not s.fused_x
                                   and (s.wt != 2 or s.p_rows <= FL_Q8_PANEL_ROWS))
    cdef uint16_t *x16 = s.p_a16 + slot * s.p_a16_stride if s.fused_x and amx else NULL
    if s.p_rows and not project_per_block and not s.fused_x:
        _project_own_blocks(s, b0, b1, slot)
    if project_per_block:
        _quantize_projected_rows(s, slot)
    memset(&a, 0, sizeof(a))
    a.wt = s.wt
    a.coupled = s.coupled
    a.has_clip = s.has_clip
    a.clip = s.clip
    a.a16 = a16
    a.lda16 = fl_amx_lda16(s.K2p)
    a.a16_part = rows_pad * a.lda16
    a.a16_parts = h_parts
    a.K2p = s.K2p
    a.wp_parts = s.wp_parts
    a.wp_part = s.K2p * s.width * 2
    a.x16 = x16
    a.ldx16 = fl_amx_lda16(s.p_K2p)
    a.Kx2p = s.p_K2p
    for step in range(s.n_steps):
        t = s.n_steps - 1 - step if s.reverse else step
        n_act = s.n_active[t]
        # Blocks run backwards on alternate steps (and calls): weights a little larger
        # than the L2 are then partly still there from the step before, where the same
        # order every step evicts each line just before it is read again.
        backwards = (step + s.first_step_parity) & 1
        h_cur = s.h_state + (step % 2) * s.batch * s.ld_state
        h_nxt = s.h_state + ((step + 1) % 2) * s.batch * s.ld_state
        amx_step = amx and n_act >= amx_min_rows
        dp_step = bf16dp and n_act <= FL_BF16DP_MAX_ROWS
        if s.quantize:
            fl_quantize_rows(h_cur, s.ld_state, s.K, n_act, hq, s.ldq, hu8, s.ldu, hscale,
                             FL_QMAX(s.q7))
        elif (amx_step or dp_step) and a16 != NULL:
            fl_bf16_split_rows(h_cur, s.ld_state, s.K, n_act, a16, a.a16_part, h_parts, a.lda16)
        elif s.wt == 1:  # bf16 on FMAs: h rounded, the values the tiles multiply
            fl_bf16_parts_sum_rows(h_cur, s.ld_state, s.K, n_act, hq, s.ldq, h_parts)
        if x16 != NULL:
            fl_bf16_split_rows(s.p_x + (t * s.step_rows + s.row0) * s.p_ldx, s.p_ldx, s.p_K,
                               n_act, x16, 0, 1, a.ldx16)
        a.hq = hq
        a.ldq = s.ldq
        a.hscale = hscale
        a.hu8 = hu8
        a.ldu = s.ldu
        a.q7 = s.q7
        for j in range(b1 - b0):
            blk = _block_at(j, b0, b1, backwards)
            if project_per_block:
                _project_block(s, blk, slot)
            a.w = _weights(s.wt, s.w_hh, blk * s.K * s.width)
            a.wscale = s.scale_hh + blk * s.width if s.scale_hh != NULL else NULL
            a.K = s.K
            a.h = h_cur
            a.ldh = s.ld_state
            if x16 != NULL:  # the tiles add x's product; every row adds the bias
                a.wxp = s.p_pairs + blk * s.p_K2p * s.xwidth * 2
                a.x = s.p_bias + blk * s.xwidth
                a.ldx = 0
            else:
                a.x = s.xproj + t * s.step_rows * s.ldx + s.xcol + blk * s.xwidth
                a.ldx = s.ldx
            a.c = s.c_state + blk * FL_U
            a.ldc = s.ldc
            if s.has_proj:
                a.h_out = s.h_full + blk * FL_U
                a.ldo = s.ld_full
            else:
                a.h_out = h_nxt + blk * FL_U
                a.ldo = s.ld_state
            a.h_self = h_cur + blk * FL_U
            a.b_hn = s.b_hn + blk * FL_U
            a.peep = s.peep + blk * 3 * FL_U if s.peep != NULL else NULL
            a.rh = s.rh + blk * FL_U if s.mode == FL_GRU_RZ else NULL
            a.z = s.z + blk * FL_U if s.mode == FL_GRU_RZ else NULL
            a.ldr = s.ldr
            a.wq = s.wq + blk * s.ldu * s.width if hu8 != NULL else NULL
            a.wsum = s.wsum + blk * s.width if hu8 != NULL else NULL
            a.wp = s.wp + blk * s.wp_parts * s.K2p * s.width * 2 if a16 != NULL else NULL
            if amx_step:
                fl_block_amx(s.mode, n_act, &a, scratch)
            elif dp_step:  # bf16dp binds wp, so a16 is set
                fl_block_bf16dp(s.mode, n_act, &a)
            else:
                fl_block(s.mode, n_act, &a, scratch)
        # the new-gate and projection products take float inputs
        a.hq = NULL
        a.hscale = NULL
        a.hu8 = NULL
        a.wq = NULL
        if s.mode == FL_GRU_RZ:
            fl_barrier_wait(barrier, tid, n_threads)  # every unit's r * h before the new-gate product
            for j in range(b1 - b0):
                blk = _block_at(j, b0, b1, backwards)
                a.w = _weights(s.wt, s.w_hn, blk * s.K * FL_U)
                a.wscale = s.scale_hn + blk * FL_U if s.scale_hn != NULL else NULL
                a.h = s.rh
                a.ldh = s.ldr
                a.x = s.xproj + t * s.step_rows * s.ldx + s.xcol + blk * 3 * FL_U
                a.h_self = h_cur + blk * FL_U
                a.ldr2 = s.ld_state
                a.z = s.z + blk * FL_U
                a.rh = NULL
                a.b_hn = s.b_hn + blk * FL_U
                a.h_out = h_nxt + blk * FL_U
                a.ldo = s.ld_state
                fl_block(FL_GRU_N, n_act, &a, scratch)
        if s.has_proj:
            fl_barrier_wait(barrier, tid, n_threads)  # h_full complete before any thread projects it
            for j in range(p1 - p0):
                blk = _block_at(j, p0, p1, backwards)
                a.w = _weights(s.wt, s.w_hr, blk * s.hidden * FL_U)
                a.wscale = s.scale_hr + blk * FL_U if s.scale_hr != NULL else NULL
                a.K = s.hidden
                a.h = s.h_full
                a.ldh = s.ld_full
                a.h_out = h_nxt + blk * FL_U
                a.ldo = s.ld_state
                fl_block(FL_PROJ, n_act, &a, scratch)
        if u1 > u0:
            for i in range(s.batch):
                y = s.out + (t * s.step_rows + i) * s.ldy + s.out_col + u0
                if i < n_act:
                    memcpy(y, h_nxt + i * s.ld_state + u0, (u1 - u0) * sizeof(float))
                else:  # finished sequence: state carried, output zero
                    memcpy(h_nxt + i * s.ld_state + u0, h_cur + i * s.ld_state + u0,
                           (u1 - u0) * sizeof(float))
                    memset(y, 0, (u1 - u0) * sizeof(float))
        fl_barrier_wait(barrier, tid, n_threads)  # h_nxt complete before the next step reads it
    if amx or _project_on_tiles(s):
        fl_amx_end()
    fl_ftz_exit(csr)


cnp.import_array()


cdef bint _plain_floats(object array, bint writeable) noexcept:
    """A float32, aligned, C-contiguous ndarray (writeable if asked)."""
    if not cnp.PyArray_Check(array):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>array
    return (cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32 and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISALIGNED(a) and (not writeable or cnp.PyArray_ISWRITEABLE(a)))


cdef float *_floats(object array, str name, int ndim, bint writeable,
                    cnp.npy_intp *shape) except NULL:
    """The data of ``array``, a float32, aligned, C-contiguous ndarray of ``ndim``
    dimensions (its shape into ``shape``); TypeError/ValueError naming it otherwise.
    Cheaper per call than a typed memoryview (measured: 0.14 us each on a one-step call)."""
    cdef cnp.ndarray a
    cdef int i
    if not cnp.PyArray_Check(array):
        raise TypeError(f"{name}: expected a numpy array, got {type(array).__name__}")
    a = <cnp.ndarray>array
    if not _plain_floats(array, writeable) or cnp.PyArray_NDIM(a) != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D float32 C-contiguous "
                         f"{'writeable ' if writeable else ''}array, got {array.dtype} "
                         f"{array.shape}")
    for i in range(ndim):
        shape[i] = cnp.PyArray_DIM(a, i)
    return <float *>cnp.PyArray_DATA(a)


cdef float *_state_rows(object array, str name, long state, const SeqArgs *s, long units,
                        bint writeable) except NULL:
    """The plan's first row (s.row0) of state ``state`` in an (S, s.step_rows, units)
    float32 state array."""
    cdef cnp.npy_intp shape[3]
    cdef float *data = _floats(array, name, 3, writeable, shape)
    if state < 0 or state >= shape[0] or shape[1] != s.step_rows or shape[2] != units:
        raise ValueError(f"{name}: expected (> {state}, {s.step_rows}, {units}) float32 for "
                         f"state {state}, got {(shape[0], shape[1], shape[2])}")
    return data + (state * s.step_rows + s.row0) * units


cdef inline void _carry_state(const SeqArgs *s) noexcept nogil:
    """After an odd number of steps the final h is in h_state[1]: the next call starts
    from h_state[0]."""
    if s.n_steps % 2:
        memcpy(s.h_state, s.h_state + s.batch * s.ld_state, s.batch * s.ld_state * sizeof(float))


cdef class SequencePlan:
    """One direction of one layer bound to its buffers (``bind_sequence``) and, when the
    team also runs the input projection, to that (``bind_projection``).

    run(x, out): project x (T*B, I) float32 into xproj (x None when the caller filled
    xproj) and run every step from h_state[0], writing out (T, B, Y) float32; the final
    h is left in h_state[0] for the next call.  Binding once and checking only x and out per
    call keeps a one-step call cheap: run_sequence's 30 arguments cost 2 us to parse.
    """
    cdef SeqArgs s
    cdef int n_threads
    cdef list refs             # the bound arrays, kept alive while the plan points into them
    cdef long cell_units       # LSTM: the cell state's units (H), else 0
    cdef list projection_refs

    def run(self, x, out, h0=None, c0=None, h_n=None, c_n=None, long state=0):
        """x (T*B, I) or None, out (T, B, Y) as above.  With h_n (S, B, H_out) (and c_n
        (S, B, H) for LSTM) the bound state is set from h0[state] and c0[state] (zeros
        when None) before the steps and copied to h_n[state], c_n[state] after them;
        without, the bound state carries over from the last call (streams)."""
        cdef SeqArgs s = self.s
        self._begin(&s, x, out, h0, c0, h_n, c_n, state)
        self._steps(&s)
        self._end(&s, h_n, c_n, state)

    cdef int _begin(self, SeqArgs *s, x, out, h0, c0, h_n, c_n, long state) except -1:
        """Check x and out into s, and set the bound state from h0, c0 (see run)."""
        cdef cnp.npy_intp shape[3]
        cdef long i
        cdef long units = self.cell_units
        cdef float *h0_rows = NULL
        cdef float *c0_rows = NULL
        if not self.refs:
            raise ValueError("run: the plan is not bound (call bind_sequence first)")
        s.out = _floats(out, "out", 3, True, shape)
        if shape[0] != s.n_steps or shape[1] != s.step_rows or shape[2] < s.out_col + s.hidden_out:
            raise ValueError(f"out: expected ({s.n_steps}, {s.step_rows}, >= "
                             f"{s.out_col + s.hidden_out}) float32, got {(shape[0], shape[1], shape[2])}")
        s.ldy = shape[2]
        s.out += s.row0 * s.ldy
        if (x is None) != (self.projection_refs is None):
            raise ValueError("x: expected the input rows exactly when a projection is bound")
        if x is not None:
            s.p_x = _floats(x, "x", 2, False, shape)
            if shape[0] != s.n_steps * s.step_rows or shape[1] != s.p_K:
                raise ValueError(f"x: expected ({s.n_steps * s.step_rows}, {s.p_K}) float32, "
                                 f"got {(shape[0], shape[1])}")
            s.p_ldx = shape[1]
            s.p_rows = shape[0]
        if h_n is None:
            return 0
        _state_rows(h_n, "h_n", state, s, s.hidden_out, True)
        if h0 is not None:
            h0_rows = _state_rows(h0, "h0", state, s, s.hidden_out, False)
        if units:
            if c_n is None:
                raise ValueError("c_n: the LSTM's final cell state needs a buffer")
            _state_rows(c_n, "c_n", state, s, units, True)
            if c0 is not None:
                c0_rows = _state_rows(c0, "c0", state, s, units, False)
        for i in range(s.batch):
            if h0_rows == NULL:
                memset(s.h_state + i * s.ld_state, 0, s.hidden_out * sizeof(float))
            else:
                memcpy(s.h_state + i * s.ld_state, h0_rows + i * s.hidden_out,
                       s.hidden_out * sizeof(float))
            if units and c0_rows == NULL:
                memset(s.c_state + i * s.ldc, 0, units * sizeof(float))
            elif units:
                memcpy(s.c_state + i * s.ldc, c0_rows + i * units, units * sizeof(float))
        return 0

    cdef int _end(self, SeqArgs *s, h_n, c_n, long state) except -1:
        """After the steps: the final state to h_n[state], c_n[state] (checked by _begin),
        or carried over to the next call when h_n is None."""
        cdef long i, final = s.n_steps % 2
        cdef long units = self.cell_units
        cdef float *hn_rows
        cdef float *cn_rows
        self.s.first_step_parity = (s.first_step_parity + s.n_steps) & 1
        if h_n is None:
            _carry_state(s)
            return 0
        hn_rows = _state_rows(h_n, "h_n", state, s, s.hidden_out, True)
        cn_rows = _state_rows(c_n, "c_n", state, s, units, True) if units else NULL
        for i in range(s.batch):
            memcpy(hn_rows + i * s.hidden_out, s.h_state + (final * s.batch + i) * s.ld_state,
                   s.hidden_out * sizeof(float))
            if units:
                memcpy(cn_rows + i * units, s.c_state + i * s.ldc, units * sizeof(float))
        return 0

    cdef void _steps(self, SeqArgs *s) noexcept:
        """Every step of s (this plan's arguments with the call's arrays), the GIL released."""
        cdef fl_barrier_state barrier
        cdef fl_team_cpus cpus
        memset(&barrier, 0, sizeof(barrier))
        if self.n_threads <= 1:
            with nogil:
                _sequence_thread(s, &barrier, 0, 1, 0)
        else:
            fl_team_plan(&cpus, self.n_threads)
            with nogil, parallel(num_threads=self.n_threads):
                fl_team_pin(&cpus, fl_thread_id())
                _sequence_thread(s, &barrier, fl_thread_id(), fl_num_threads(), fl_thread_id())


cdef void _side_by_side_thread(SeqArgs *first, SeqArgs *second, fl_barrier_state *barriers,
                               int team) noexcept nogil:
    """One thread of run_side_by_side: threads [0, team) run ``first``, [team, 2*team)
    ``second``, each team with its own barrier; a thread beyond 2*team (an odd count)
    idles; with one thread (OpenMP granted no more) it runs both, one after the other."""
    cdef int n = fl_num_threads()
    cdef int tid = fl_thread_id()
    if n < 2:
        _sequence_thread(first, &barriers[0], 0, 1, 0)
        _sequence_thread(second, &barriers[1], 0, 1, 0)
        return
    team = n // 2 if n // 2 < team else team
    if tid < team:
        _sequence_thread(first, &barriers[0], tid, team, tid)
    elif tid < 2 * team:
        _sequence_thread(second, &barriers[1], tid - team, team, tid)


def run_side_by_side(SequencePlan first not None, SequencePlan second not None, x, out, h0, c0,
                     h_n, c_n, long first_state, long second_state):
    """Two plans at once, each on its own team of ``first``'s thread count, with no
    barrier between the teams: ``first.run(x, out, h0, c0, h_n, c_n, first_state)`` and
    ``second.run(..., second_state)``.  The two directions of a bidirectional layer, or
    two halves of a batch (plans bound to row ranges).  The plans must be bound to
    separate state, scratch rows for 2 * teams threads, and disjoint parts of xproj and
    out (other columns or other rows)."""
    cdef SeqArgs s1 = first.s
    cdef SeqArgs s2 = second.s
    cdef fl_barrier_state barriers[2]
    cdef fl_team_cpus cpus
    cdef int team = first.n_threads
    cdef bint rows_overlap = s1.row0 < s2.row0 + s2.batch and s2.row0 < s1.row0 + s1.batch
    if second.n_threads != team:
        raise ValueError(f"run_side_by_side: the plans' teams differ ({team}, {second.n_threads})")
    if (s1.h_state == s2.h_state or (s1.c_state == s2.c_state and first.cell_units)
            or (s1.has_proj and s1.h_full == s2.h_full) or (s1.rh != NULL and s1.rh == s2.rh)
            or (rows_overlap and (s1.xcol == s2.xcol or s1.out_col == s2.out_col))):
        raise ValueError("run_side_by_side: the plans share their state, columns or rows")
    if (s1.scratch_threads < 2 * team or s2.scratch_threads < 2 * team
            or (s1.p_pairs != NULL and s1.p_scratch_threads < 2 * team)
            or (s2.p_pairs != NULL and s2.p_scratch_threads < 2 * team)
            or (s1.p_q8 != NULL and s1.p_q8_threads < 2 * team)
            or (s2.p_q8 != NULL and s2.p_q8_threads < 2 * team)):
        raise ValueError(f"run_side_by_side: scratch for {2 * team} threads needed")
    first._begin(&s1, x, out, h0, c0, h_n, c_n, first_state)
    second._begin(&s2, x, out, h0, c0, h_n, c_n, second_state)
    memset(barriers, 0, sizeof(barriers))
    fl_team_plan(&cpus, 2 * team)
    with nogil, parallel(num_threads=2 * team):
        fl_team_pin(&cpus, fl_thread_id())
        _side_by_side_thread(&s1, &s2, barriers, team)
    first._end(&s1, h_n, c_n, first_state)
    second._end(&s2, h_n, c_n, second_state)


cdef bint _same_dims(cnp.ndarray a, int ndim, const cnp.npy_intp *dims) noexcept:
    cdef int i
    if cnp.PyArray_NDIM(a) != ndim:
        return False
    for i in range(ndim):
        if cnp.PyArray_DIM(a, i) != dims[i]:
            return False
    return True


cdef class DirectCall:
    """A stream's steady step in C: its one-caller guard and, for chunks of the shape
    bound last, the checks, the output and the plan's run.

    DirectCall(threads_module, owner): the bound plan runs while
    ``threads_module._num_threads`` is the count it was bound at and ``owner._layers``
    is the object bound with it (weights not reloaded).
    bind(plan, chunk_shape, out_shape, threads, layers): a plan that projects its own
    input (bind_projection), for chunks (T*B rows of I, as 2 or 3 dims) and outputs
    (T*B rows of >= H_out floats, as 2 or 3 dims) of exactly these shapes.
    call(chunk, out=None): the result (out, or a new float32 array of out_shape), or
    None when the call is not one it can take (the caller's checked path then runs,
    under enter/leave): another shape, dtype or memory order, another thread count,
    reloaded weights, or the stream in use by another thread.
    enter(): False when another thread holds the stream, else takes it; leave() frees it.
    Measured on lat_med, one step, over the kernels alone (bench/streams.py): s(x, out=buf)
    +1.7 -> +0.8 us, s(x) +2.8 -> +0.9 us, against the same checks in Python.
    """
    cdef SequencePlan plan
    cdef bint busy
    cdef int in_ndim, out_ndim
    cdef cnp.npy_intp in_dims[3]
    cdef cnp.npy_intp out_dims[3]
    cdef long ldy
    cdef object threads_module, owner, layers, threads

    def __init__(self, threads_module, owner):
        self.threads_module = threads_module
        self.owner = owner
        self.plan = None
        self.busy = False

    def bind(self, SequencePlan plan not None, tuple chunk_shape, tuple out_shape, long threads,
             layers):
        cdef long rows = plan.s.n_steps * plan.s.step_rows
        cdef long held
        cdef int i, last
        if not plan.refs or plan.projection_refs is None:
            raise ValueError("bind: the plan must be bound, with its projection")
        for name, shape in (("chunk_shape", chunk_shape), ("out_shape", out_shape)):
            if not 2 <= len(shape) <= 3 or any(int(n) < 1 for n in shape):
                raise ValueError(f"bind: {name} must have 2 or 3 positive sizes, got {shape}")
            held = 1
            for i in range(len(shape) - 1):  # (no negative indices: wraparound is off)
                held *= int(shape[i])
            if held != rows:
                raise ValueError(f"bind: {name} {shape} does not hold the plan's {rows} rows")
        last = len(chunk_shape) - 1
        if chunk_shape[last] != plan.s.p_K:
            raise ValueError(f"bind: chunk_shape {chunk_shape} must end in {plan.s.p_K}")
        last = len(out_shape) - 1
        if out_shape[last] < plan.s.out_col + plan.s.hidden_out:
            raise ValueError(f"bind: out_shape {out_shape} must end in >= "
                             f"{plan.s.out_col + plan.s.hidden_out}")
        self.in_ndim = len(chunk_shape)
        self.out_ndim = len(out_shape)
        for i in range(self.in_ndim):
            self.in_dims[i] = chunk_shape[i]
        for i in range(self.out_ndim):
            self.out_dims[i] = out_shape[i]
        self.ldy = out_shape[last]
        self.threads = threads
        self.layers = layers
        self.plan = plan

    def unbind(self):
        self.plan = None
        self.layers = None

    def enter(self):
        if self.busy:
            return False
        self.busy = True
        return True

    def leave(self):
        self.busy = False

    def __call__(self, chunk, out=None):
        cdef SequencePlan plan = self.plan
        cdef cnp.ndarray result
        cdef SeqArgs s
        if (plan is None or self.busy or not _plain_floats(chunk, False)
                or not _same_dims(<cnp.ndarray>chunk, self.in_ndim, self.in_dims)):
            return None
        if (self.threads_module._num_threads != self.threads
                or self.owner._layers is not self.layers):
            return None
        if out is None:
            result = cnp.PyArray_EMPTY(self.out_ndim, self.out_dims, cnp.NPY_FLOAT32, 0)
        elif _plain_floats(out, True) and _same_dims(<cnp.ndarray>out, self.out_ndim, self.out_dims):
            result = <cnp.ndarray>out
        else:
            return None
        s = plan.s
        s.out = <float *>cnp.PyArray_DATA(result)
        s.ldy = self.ldy
        s.p_x = <const float *>cnp.PyArray_DATA(<cnp.ndarray>chunk)
        s.p_ldx = s.p_K
        s.p_rows = s.n_steps * s.step_rows
        self.busy = True
        try:
            plan._steps(&s)
            plan._end(&s, None, None, 0)
        finally:
            self.busy = False
        return result


def bind_sequence(SequencePlan plan, int mode, float[:, :, ::1] xproj, long xcol,
                 const weight_t[:, :, ::1] w_hh, bint has_proj, const weight_t[:, :, ::1] w_hr,
                 const float[::1] b_hn, float[:, :, ::1] h_state, float[:, ::1] c_state,
                 float[:, ::1] h_full, const long[::1] n_active, bint reverse,
                 long out_col, long hidden_out, int n_threads,
                 const float[:, :, ::1] peep, bint coupled, clip,
                 const weight_t[:, :, ::1] w_hn, float[:, ::1] rh, float[:, ::1] z,
                 float[:, ::1] scratch, const float[::1] scale_hh, const float[::1] scale_hr,
                 const float[::1] scale_hn, float[:, ::1] q_scratch=None,
                 const int8_t[:, :, :, ::1] wq=None, const int32_t[:, ::1] wsum=None,
                 uint8_t[:, ::1] u8_scratch=None, bint amx=False, bint bf16dp=False,
                 const uint16_t[:, :, :, ::1] wp=None, uint16_t[:, ::1] a16_scratch=None,
                 long cell_units=0, long row0=0):
    """Bind ``plan`` to one direction of one layer: its weights, state and scratch.
    Every check of the arguments happens here, once; ``plan.run`` checks only x and out.

    xproj    (T, B, X) float32 IN     input projection, blocked layout; this
                                      direction's columns start at ``xcol``; the plan
                                      runs rows row0 .. row0 + Bp of every step, Bp =
                                      h_state's rows (B unless the batch is split in
                                      plans run side by side, run_side_by_side)
    w_hh     (n_blk, K, G*16) IN      recurrent weights, blocked (K = H_out); float32,
                                      uint16 (bfloat16 bits) or int8; w_hr, w_hn alike
    scale_*  (n_blk*G*16,) IN         int8 column scales (None for float weights)
    q_scratch (threads, B*(K+1))      int8: per-thread quantized h rows and scales; bf16:
                                      h rows rounded to bf16 (required for both)
    wq       (n_blk, K4, G*16, 4) IN  int8: w_hh in VNNI order, K4*4 = K rounded up to a
                                      multiple of 64, to use vpdpbusd and AMX (optional)
    wsum     (n_blk, G*16) int32 IN   its column sums
    u8_scratch (threads, B_pad*K4*4)  per-thread h rows + 128 for vpdpbusd and AMX
    amx                               products on AMX tiles when the CPU has them: int8
                                      (needs wq) at >= 16 rows, bf16 (needs wp) always,
                                      fp32 (needs wp) at >= AMX_F32_MIN_ROWS rows
    bf16dp                            bf16 off the tiles: products of up to 2 rows on
                                      vdpbf16ps (needs wp and a16_scratch) when the CPU
                                      has AVX512-BF16
    wp       (n_blk, Q*K2, G*16, 2) IN  w_hh in pair order, 2*K2 = K rounded up to a
                                      multiple of 32: bf16 (Q = 1), or fp32 as Q = AMX_PARTS
                                      bf16 parts summing to it, each (K2, G*16, 2) (optional)
    a16_scratch (threads, P*B_pad*amx_row_elements(H_out))
                                      bf16, fp32: per-thread h split in P = Q bf16 parts
                                      (bf16: h rounded to bf16)
    w_hr     (n_pblk, H, 16) IN       projection, blocked (used when has_proj)
    b_hn     (n_blk*16,) IN           GRU recurrent new-gate bias, padded
    h_state  (2, B, ld) IN/OUT        [0] holds h0 (padded); ping-pong buffers
    c_state  (B, n_blk*16) IN/OUT     LSTM cell state, padded
    h_full   (B, n_blk*16)            scratch for the unprojected h
    n_active (T,) int64 IN            rows active at step t (rows sorted by length,
                                      longest first)
    out_col, hidden_out               ``run``'s out gets columns out_col:out_col+hidden_out
    peep     (n_blk, 3, 16) IN        LSTM peepholes i, f, o, blocked (optional)
    coupled                           LSTM f = 1 - i
    clip                              pre-activations bounded to [-clip, clip] (optional)
    w_hn     (n_blk, H, 16) IN        original GRU (mode GRU_RESET_BEFORE): new-gate
                                      weights; w_hh then holds r, z only (G*16 = 32)
    rh, z    (B, n_blk*16)            original GRU scratch
    cell_units                        LSTM: H, the units of c that ``run`` sets and reads
    scratch  (n_threads, B_pad*64)    per-thread partial sums for the K-chunked and AMX
                                      products at large batch (optional); B_pad is B
                                      rounded up to a multiple of 32
    All arrays non-empty, shapes consistent (checked by the caller).
    """
    cdef SeqArgs s
    memset(&s, 0, sizeof(s))
    s.mode = mode
    s.reverse = reverse
    s.has_proj = has_proj
    s.n_steps = xproj.shape[0]
    s.step_rows = xproj.shape[1]
    s.batch = h_state.shape[1]
    s.row0 = row0
    if row0 < 0 or row0 + s.batch > s.step_rows or n_active.shape[0] < s.n_steps:
        raise ValueError(f"row0, h_state, n_active: rows {row0} .. {row0 + s.batch} of "
                         f"{s.step_rows} and {n_active.shape[0]} steps' counts for "
                         f"{s.n_steps} steps")
    s.xproj = &xproj[0, row0, 0] if s.batch else &xproj[0, 0, 0]
    s.ldx = xproj.shape[2]
    s.xcol = xcol
    s.wt = 0 if weight_t is float else (1 if weight_t is cython.ushort else 2)
    s.w_hh = &w_hh[0, 0, 0]
    s.scale_hh = &scale_hh[0] if scale_hh is not None else NULL
    s.scale_hr = &scale_hr[0] if scale_hr is not None else NULL
    s.scale_hn = &scale_hn[0] if scale_hn is not None else NULL
    if s.wt == 2 and (scale_hh is None or (has_proj and scale_hr is None)):
        raise ValueError("int8 weights need their column scales")
    s.n_blk = w_hh.shape[0]
    s.K = w_hh.shape[1]
    s.width = w_hh.shape[2]
    s.xwidth = 3 * FL_U if mode == FL_GRU_RZ else s.width
    s.w_hr = &w_hr[0, 0, 0]
    s.n_pblk = w_hr.shape[0] if has_proj else 0
    s.hidden = w_hr.shape[1]
    s.b_hn = &b_hn[0]
    s.h_state = &h_state[0, 0, 0]
    s.ld_state = h_state.shape[2]
    s.c_state = &c_state[0, 0]
    s.ldc = c_state.shape[1]
    s.h_full = &h_full[0, 0]
    s.ld_full = h_full.shape[1]
    s.n_active = &n_active[0]
    s.out_col = out_col
    s.hidden_out = hidden_out
    s.peep = &peep[0, 0, 0] if peep is not None else NULL
    s.coupled = coupled
    s.has_clip = clip is not None
    s.clip = clip if clip is not None else 0.0
    s.w_hn = &w_hn[0, 0, 0] if w_hn is not None and mode == FL_GRU_RZ else NULL
    s.rh = &rh[0, 0] if rh is not None else NULL
    s.z = &z[0, 0] if z is not None else NULL
    s.ldr = rh.shape[1] if rh is not None else 0
    cdef long rows_pad = _round_rows(s.batch)
    s.scratch = &scratch[0, 0] if scratch is not None else NULL
    s.scratch_threads = scratch.shape[0] if scratch is not None else 0
    s.scratch_stride = scratch.shape[1] if scratch is not None else 0
    if scratch is not None and scratch.shape[1] < rows_pad * 4 * FL_U:
        raise ValueError("scratch: expected at least B_pad*64 floats per thread")
    s.quantize = s.wt == 2
    s.q7 = s.step_rows >= FL_Q7_MIN_ROWS
    s.q_scratch = NULL
    s.ldq = s.K
    s.wq = NULL
    s.wsum = NULL
    s.u8_scratch = NULL
    s.ldu = (s.K + 63) // 64 * 64
    s.amx = False
    s.wp = NULL
    s.K2p = 0
    s.a16_scratch = NULL
    s.a16_stride = 0
    if s.quantize or s.wt == 1:
        if q_scratch is None or q_scratch.shape[1] < s.batch * (s.K + 1) or scratch is None \
                or q_scratch.shape[0] < scratch.shape[0]:
            raise ValueError("int8, bf16: q_scratch must hold B*(K+1) floats per scratch thread")
        s.q_scratch = &q_scratch[0, 0]
        s.q_stride = q_scratch.shape[1]
    if s.quantize:
        if wq is not None and fl_cpu_supports_vnni():
            if (wq.shape[0] != s.n_blk or wq.shape[1] * 4 != s.ldu or wq.shape[2] != s.width
                    or wsum is None or wsum.shape[0] != s.n_blk or wsum.shape[1] != s.width
                    or u8_scratch is None or u8_scratch.shape[0] < scratch.shape[0]
                    or u8_scratch.shape[1] < rows_pad * s.ldu):
                raise ValueError("int8: wq, wsum or u8_scratch do not match w_hh")
            s.wq = &wq[0, 0, 0, 0]
            s.wsum = &wsum[0, 0]
            s.u8_scratch = &u8_scratch[0, 0]
            s.u8_stride = u8_scratch.shape[1]
            s.amx = amx and fl_amx_usable()
    s.bf16dp = False
    cdef bint tiles = amx and fl_amx_usable()
    cdef bint dot = s.wt == 1 and bf16dp and fl_cpu_supports_bf16dp()
    if s.wt != 2 and wp is not None and (tiles or dot):
        s.wp_parts = _tile_parts(s.wt)
        s.K2p = _pairs_k2(wp, s.wt, s.n_blk, s.width, s.K)
        if (s.K2p == 0 or scratch is None or a16_scratch is None
                or a16_scratch.shape[0] < scratch.shape[0]
                or a16_scratch.shape[1] < s.wp_parts * rows_pad * fl_amx_lda16(s.K2p)):
            raise ValueError("wp, a16_scratch or scratch do not match w_hh")
        s.amx = tiles
        s.bf16dp = not tiles
        s.wp = &wp[0, 0, 0, 0]
        s.a16_scratch = &a16_scratch[0, 0]
        s.a16_stride = a16_scratch.shape[1]
    if mode == FL_GRU_RZ and (w_hn is None or rh is None or z is None):
        raise ValueError("the original GRU needs w_hn, rh and z")
    if n_threads < 1 or (scratch is not None and scratch.shape[0] < n_threads):
        raise ValueError("n_threads: expected 1 <= n_threads <= the scratch's threads")
    if h_state.shape[0] != 2 or h_state.shape[1] != s.batch or s.ld_state < hidden_out \
            or (mode == FL_LSTM and c_state.shape[0] != s.batch):
        raise ValueError(f"h_state, c_state: expected (2, {s.batch}, >= {hidden_out}) and "
                         f"({s.batch}, H), got {tuple(h_state.shape)[:3]}, {tuple(c_state.shape)[:2]}")
    if cell_units < 0 or cell_units > s.ldc or (mode == FL_LSTM and cell_units == 0):
        raise ValueError(f"cell_units: expected the LSTM's hidden size (<= {s.ldc}), got {cell_units}")
    plan.s = s
    plan.n_threads = n_threads
    plan.cell_units = cell_units if mode == FL_LSTM else 0
    plan.refs = [xproj, w_hh, w_hr, b_hn, h_state, c_state, h_full, n_active, peep, w_hn, rh, z,
                 scratch, scale_hh, scale_hr, scale_hn, q_scratch, wq, wsum, u8_scratch, wp,
                 a16_scratch]
    plan.projection_refs = None


def bind_projection(SequencePlan plan, const weight_t[:, :, ::1] w_blocks, const float[::1] bias,
                    const float[::1] scale=None, const uint16_t[:, :, :, ::1] w_pairs=None,
                    uint16_t[:, ::1] a16_scratch=None, float[:, ::1] stage=None,
                    bint fused=False, const int8_t[:, :, :, ::1] wq=None,
                    const int32_t[:, ::1] wsum=None, uint8_t[:, ::1] q8_scratch=None):
    """Have ``plan``'s team run the input projection before the steps (``plan.run(x, out)``).

    w_blocks (n_blk, I, X) IN     this direction's input weights, blocked, X = the
                                  direction's xproj columns per block; the plan's weight type
    bias, scale (n_blk*X,) IN     bias, and int8 column scales
    w_pairs, a16_scratch, stage   as for ``project``: AMX at >= 16 rows (optional)
    x is multiplied in ``project``'s parts for steps of the plan's rows.
    fused                         bf16 LSTM or RNN on AMX (the plan bound with amx and wp,
                                  w_pairs given), x in one part: no projection pass; each
                                  step rounds its rows of x (row0 on, so also a plan of some
                                  of the rows) to bf16 in a16_scratch, which must hold
                                  B_pad rows, and multiplies them in the tiles of its
                                  recurrent product
    wq, wsum, q8_scratch          int8 (required: q8_scratch): as for ``project``, for the
                                  plan's threads (2 * its team's run side by side)
    """
    cdef SeqArgs *s = &plan.s
    cdef int wt = 0 if weight_t is float else (1 if weight_t is cython.ushort else 2)
    if not plan.refs:
        raise ValueError("bind_projection: bind the sequence first")
    if s.batch != s.step_rows and not fused:
        raise ValueError("bind_projection: a plan of some of the rows takes xproj from the caller")
    if wt != s.wt or w_blocks.shape[0] != s.n_blk or w_blocks.shape[2] != s.xwidth:
        raise ValueError(f"w_blocks: expected ({s.n_blk}, I, {s.xwidth}) of the recurrent "
                         f"weights' type, got {tuple(w_blocks.shape)[:3]}")
    if bias.shape[0] != s.n_blk * s.xwidth or (scale is not None and scale.shape[0] != bias.shape[0]):
        raise ValueError(f"bias, scale: expected ({s.n_blk * s.xwidth},)")
    if wt == 2 and scale is None:
        raise ValueError("int8 weights need their column scales")
    if s.xcol + s.n_blk * s.xwidth > s.ldx:
        raise ValueError("xproj: too narrow for this direction's projection")
    s.p_w = &w_blocks[0, 0, 0]
    s.p_K = w_blocks.shape[1]
    s.p_bias = &bias[0]
    s.p_scale = &scale[0] if scale is not None else NULL
    s.p_x_parts = FL_X_PARTS(s.step_rows)
    s.p_pairs = NULL
    s.p_wq = NULL
    s.p_wsum = NULL
    s.p_q8 = NULL
    s.p_q8_threads = 0
    cdef Q8Projection q
    if wt == 2:
        _q8_projection("bind_projection", s.n_blk, s.xwidth, s.p_K, plan.n_threads, wq, wsum,
                       q8_scratch, &q)
        s.p_wq = q.wq
        s.p_wsum = q.wsum
        s.p_q8 = q.q8
        s.p_q8_stride = q.q8_stride
        s.p_q8_threads = q.q8_threads
    elif w_pairs is not None and fl_amx_usable():
        s.p_K2p = _projection_pairs_k2(w_pairs, wt, s.n_blk, s.xwidth, s.p_K, a16_scratch,
                                       stage, plan.n_threads)
        if s.p_K2p == 0:
            raise ValueError("bind_projection: w_pairs, a16_scratch or stage do not match w_blocks")
        s.p_pairs = &w_pairs[0, 0, 0, 0]
        s.p_a16 = &a16_scratch[0, 0]
        s.p_a16_stride = a16_scratch.shape[1]
        s.p_stage = &stage[0, 0]
        s.p_stage_stride = stage.shape[1]
        s.p_scratch_threads = min(a16_scratch.shape[0], stage.shape[0])
    s.fused_x = False
    if fused:
        if not (wt == 1 and s.amx and s.wp != NULL and s.p_pairs != NULL and s.p_x_parts == 1
                and s.mode in (FL_LSTM, FL_RNN_TANH, FL_RNN_RELU)):
            raise ValueError("bind_projection: fused needs bf16 LSTM or RNN plans on AMX tiles "
                             f"(pair-order weights given) of >= {FL_X_ONE_PART_ROWS} rows a step")
        if a16_scratch.shape[1] < _round_rows(s.batch) * fl_amx_lda16(s.p_K2p):
            raise ValueError(f"a16_scratch: expected >= {_round_rows(s.batch)} rows of "
                             f"{fl_amx_lda16(s.p_K2p)} per thread for fused, got "
                             f"{a16_scratch.shape[1]} elements")
        s.fused_x = True
    plan.projection_refs = [w_blocks, bias, scale, w_pairs, a16_scratch, stage, wq, wsum,
                            q8_scratch]


cdef void _project_thread(int G, int wt, const void *w, const float *wscale, long n_blocks, long K,
                          const float *bias, const float *x, long ldx, float *out, long ldo,
                          long n_rows, const uint16_t *w_pairs, long K2p, uint16_t *a16,
                          long a16_stride, float *stage, long stage_stride,
                          int x_parts, const int8_t *wq, const int32_t *wsum, uint8_t *q8,
                          long q8_stride, bint q7) noexcept nogil:
    cdef long lo, hi
    cdef int tid = fl_thread_id()
    cdef long tile = FL_AMX_ROWS if w_pairs != NULL else FL_MAX_ROWS
    cdef unsigned csr = fl_ftz_enter()
    # split rows in whole tiles so no tile straddles two threads
    _share((n_rows + tile - 1) // tile, fl_num_threads(), tid, &lo, &hi)
    lo *= tile
    hi *= tile
    if hi > n_rows:
        hi = n_rows
    if hi > lo and w_pairs != NULL:
        fl_amx_begin()
        _project_part(G, wt, w, wscale, bias, K, 0, n_blocks, x, ldx, out, ldo, lo, hi, w_pairs,
                      K2p, a16 + tid * a16_stride, stage + tid * stage_stride, x_parts, NULL,
                      NULL, NULL, False)
        fl_amx_end()
    elif hi > lo:
        _project_part(G, wt, w, wscale, bias, K, 0, n_blocks, x, ldx, out, ldo, lo, hi, NULL, 0,
                      NULL, NULL, x_parts, wq, wsum, q8 + tid * q8_stride if q8 != NULL else NULL,
                      q7)
    fl_ftz_exit(csr)


def project(int gates, const weight_t[:, :, ::1] w_blocks, const float[::1] bias,
            const float[:, ::1] x, float[:, ::1] out, int n_threads, long step_rows,
            const float[::1] scale=None, const uint16_t[:, :, :, ::1] w_pairs=None,
            uint16_t[:, ::1] a16_scratch=None, float[:, ::1] stage=None,
            const int8_t[:, :, :, ::1] wq=None, const int32_t[:, ::1] wsum=None,
            uint8_t[:, ::1] q8_scratch=None):
    """out (N, >= n_blocks*G*16) = x (N, K) @ blocked weights (* scale) + bias; out's
    columns past n_blocks*G*16 are left as they are.  x holds steps of step_rows rows
    (the batch; N a multiple of it).

    w_blocks (n_blocks, K, G*16) float32, uint16 (bfloat16 bits) or int8 IN;
    bias and scale (int8 column scales) (n_blocks*G*16,) IN; out OUT.
    bf16 weights multiply x as the sum of its leading bf16 parts on every path (see
    bf16_parts_sum): one part from 16 rows a step (FL_X_PARTS), else AMX_X_PARTS.
    With w_pairs (n_blocks, K2, G*16, 2) (the same weights as bfloat16 bits in pair
    order, 2*K2 = K rounded up to a multiple of 32), a16_scratch (threads,
    amx_projection_scratch_rows() * amx_row_elements(K)) and stage (threads, 32*G*16),
    and at least 16 rows on a CPU with AMX, the product runs on AMX tiles with x split in
    those parts (fp32 weights: x in AMX_PARTS parts, from FL_AMX_F32_PROJECT_ROWS rows a
    thread).
    int8 weights multiply x quantized per row (symmetric, max|x| / 127 as h in the
    steps, or / 63 from Q7_MIN_ROWS rows a step), in q8_scratch (threads, >=
    q8_scratch_bytes(K)) uint8 (required); with wq (n_blocks, K4, G*16, 4) int8 (the
    same weights, 4 consecutive k of a column adjacent, 4*K4 = K rounded up to a
    multiple of 64) and wsum (n_blocks, G*16) int32 (their
    column sums) on integer tiles where the CPU has them: the same results.
    """
    cdef long n_rows = x.shape[0]
    cdef int wt = 0 if weight_t is float else (1 if weight_t is cython.ushort else 2)
    cdef const void *w = &w_blocks[0, 0, 0]
    cdef const float *ws = &scale[0] if scale is not None else NULL
    cdef const float *b = &bias[0]
    cdef const float *xp = &x[0, 0]
    cdef float *op = &out[0, 0]
    cdef long n_blocks = w_blocks.shape[0], K = w_blocks.shape[1], ldx = x.shape[1], ldo = out.shape[1]
    cdef const uint16_t *pairs = NULL
    cdef uint16_t *a16 = NULL
    cdef float *st = NULL
    cdef long K2p = 0, a16_stride = 0, stage_stride = 0
    cdef long columns = n_blocks * gates * FL_U
    cdef int x_parts = FL_X_PARTS(step_rows)
    if w_blocks.shape[2] != gates * FL_U or x.shape[1] != K:
        raise ValueError(f"project: w_blocks must be (n_blocks, {x.shape[1]}, {gates * FL_U}) "
                         f"for x's {x.shape[1]} columns and {gates} gates, "
                         f"got {tuple(w_blocks.shape)[:3]}")
    if bias.shape[0] != columns or (scale is not None and scale.shape[0] != columns):
        raise ValueError(f"project: bias and scale must be ({columns},)")
    if out.shape[0] != n_rows or ldo < columns:
        raise ValueError(f"project: out must be ({n_rows}, >= {columns}), "
                         f"got ({out.shape[0]}, {ldo})")
    if wt == 2 and scale is None:
        raise ValueError("int8 weights need their column scales")
    if step_rows < 1 or n_rows % step_rows != 0:
        raise ValueError(f"step_rows: expected a positive divisor of x's {n_rows} rows, "
                         f"got {step_rows}")
    cdef bint q7 = step_rows >= FL_Q7_MIN_ROWS
    cdef Q8Projection q
    memset(&q, 0, sizeof(q))
    if wt == 2:
        _q8_projection("project", n_blocks, gates * FL_U, K, n_threads, wq, wsum, q8_scratch,
                       &q)
    elif w_pairs is not None and n_rows >= FL_AMX_MIN_ROWS and fl_amx_usable():
        K2p = _projection_pairs_k2(w_pairs, wt, n_blocks, gates * FL_U, K, a16_scratch, stage,
                                   n_threads)
        if K2p == 0:
            raise ValueError("project: w_pairs, a16_scratch or stage do not match w_blocks")
        pairs = &w_pairs[0, 0, 0, 0]
        a16 = &a16_scratch[0, 0]
        a16_stride = a16_scratch.shape[1]
        st = &stage[0, 0]
        stage_stride = stage.shape[1]
    if n_threads <= 1:
        with nogil:
            _project_thread(gates, wt, w, ws, n_blocks, K, b, xp, ldx, op, ldo, n_rows,
                            pairs, K2p, a16, a16_stride, st, stage_stride, x_parts, q.wq, q.wsum,
                            q.q8, q.q8_stride, q7)
    else:
        with nogil, parallel(num_threads=n_threads):
            _project_thread(gates, wt, w, ws, n_blocks, K, b, xp, ldx, op, ldo, n_rows,
                            pairs, K2p, a16, a16_stride, st, stage_stride, x_parts, q.wq, q.wsum,
                            q.q8, q.q8_stride, q7)
