/* AMX tile products of the Cython backend: bf16 and int8 recurrent weights at batch
 * >= 16, bf16 input projections, and fp32 weights as three bf16 parts (fl_amx_gates's
 * b_parts) at batch >= 32 and in projections of >= 64 rows.  Included by
 * fastlstm_simd.h; compiled into the AVX-512 module only, and entered only when
 * fl_amx_usable() says the CPU has AMX-BF16/INT8 and Linux granted the tile state
 * (arch_prctl).
 *
 * One tile: 16 rows of 64 bytes.  A product tile C (16 rows x 16 fp32 or int32
 * columns) += A (16 rows x 32 bf16 or 64 int8 of K) . B (16 rows of K pairs or
 * quads x 16 columns).  Tiles 0-3 hold C for two row tiles x two gates, 4-5 A,
 * 6-7 B, so every B tile loaded serves 32 rows.
 *
 * B layouts (packed once by fastlstm/cython_glue.py), per block of G*16 columns:
 *   bf16 "pairs": (K2p, G*16, 2), K zero-padded to a multiple of 32; fp32 weights
 *                 as three such parts one after the other
 *   int8 "quads": (K4p, G*16, 4), K zero-padded to a multiple of 64 (also the
 *                 vpdpbusd layout of fastlstm_simd.h)
 * A rows are padded the same way; row counts are padded to FL_AMX_ROWS by the
 * caller's buffers (the extra rows compute values nobody reads).
 *
 * Activations are split in bf16 parts (fl_bf16_split_rows) and every part is
 * multiplied: h in FL_AMX_PARTS for fp32 weights (they sum to the float), rounded to
 * bf16 (FL_BF16_H_PARTS) for bf16 weights, and x in FL_X_PARTS, whose sum the
 * other paths multiply too (fl_bf16_parts_sum_rows).  So the products are those of
 * the vector paths up to fp32 rounding.  Measured (h and x then in one part against
 * h in three, before x took two parts and h one, fastlstm_simd.h has those) on a bf16
 * LSTM 256/256, batch 64, 100 steps, 1 thread (median of 7 calls): the AVX-512 path
 * widening weights 59.5 ms; AMX with 1 part 13.6 ms; 3 parts 29.9 ms.
 */
#ifndef FASTLSTM_AMX_H
#define FASTLSTM_AMX_H

typedef uint32_t fl_vfu32 __attribute__((vector_size(FL_VW * 4)));
typedef uint16_t fl_vfu16 __attribute__((vector_size(FL_VW * 2)));

/* float32 bits rounded to the nearest bfloat16 (ties to even), low half cleared */
FL_INLINE fl_vfu32 fl_bf16_round(fl_vfu32 bits)
{
    return (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
}

FL_INLINE uint32_t fl_bf16_round1(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, 4);
    return (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
}

/* The next bf16 part of *rest (as float bits, low half clear): RNE(*rest), which is
 * then taken out of *rest.  Each part takes 8 more bits of the float's mantissa. */
FL_INLINE fl_vfu32 fl_bf16_take(vf *rest)
{
    const fl_vfu32 part = fl_bf16_round((fl_vfu32)*rest);
    *rest -= (vf)part;
    return part;
}

FL_INLINE uint32_t fl_bf16_take1(float *rest)
{
    const uint32_t part = fl_bf16_round1(*rest);
    float value;
    memcpy(&value, &part, 4);
    *rest -= value;
    return part;
}

/* x -> n_parts bf16 rows whose sum is x: part 0 = RNE(x), part p = RNE(x - the
 * parts before it); three take all 24 bits of the mantissa.  Rows of K floats
 * (stride ldx) to rows of lda bf16 (part p at out + p * part_stride), K..lda
 * zero-filled. */
static void fl_bf16_split_rows(const float *x, long ldx, long K, long rows, uint16_t *out,
                               long part_stride, int n_parts, long lda)
{
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        uint16_t *row = out + r * lda;
        long k = 0;
        for (; k + FL_VW <= K; k += FL_VW) {
            vf rest = v_load(xr + k);
            for (int p = 0; p < n_parts; p++) {
                const fl_vfu16 part16 = __builtin_convertvector(fl_bf16_take(&rest) >> 16,
                                                                fl_vfu16);
                memcpy(row + p * part_stride + k, &part16, sizeof part16);
            }
        }
        for (; k < K; k++) {
            float rest = xr[k];
            for (int p = 0; p < n_parts; p++)
                row[p * part_stride + k] = (uint16_t)(fl_bf16_take1(&rest) >> 16);
        }
        for (; k < lda; k++)
            for (int p = 0; p < n_parts; p++) row[p * part_stride + k] = 0;
    }
}

/* Rows of K floats x (stride ldx) -> rows of the sums of their n_parts bf16 parts
 * (out, stride ldo): the values fl_bf16_split_rows's parts stand for.  The sum is
 * exact (x with its low bits rounded off), and a bf16 or int8 weight times it is
 * exact in fp32 for n_parts <= 2, so FMAs on these floats and AMX products of the
 * parts differ only in the order of the fp32 sums. */
static void fl_bf16_parts_sum_rows(const float *x, long ldx, long K, long rows, float *out,
                                   long ldo, int n_parts)
{
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        float *o = out + r * ldo;
        long k = 0;
        for (; k + FL_VW <= K; k += FL_VW) {
            vf rest = v_load(xr + k), sum = v_splat(0.0f);
            for (int p = 0; p < n_parts; p++) sum += (vf)fl_bf16_take(&rest);
            v_store(o + k, sum);
        }
        for (; k < K; k++) {
            float rest = xr[k], sum = 0.0f;
            for (int p = 0; p < n_parts; p++) {
                const uint32_t bits = fl_bf16_take1(&rest);
                float part;
                memcpy(&part, &bits, 4);
                sum += part;
            }
            o[k] = sum;
        }
    }
}

/* bf16 elements per row of a tile product's A (h or x split in parts) for K2p pairs
 * of K: whole 64-byte lines, an odd number of them.  With an even number the 32 rows a
 * tile pair loads fall in a few L1 sets (K = 512: 1 KiB rows, 4 of 64 sets) and evict
 * each other between the gate tiles that reuse them.  This loop alone in a standalone
 * C harness (64 rows, 1 thread, TFLOP/s of bf16 work, best of 20): bf16 weights (h in
 * 3 parts) K = 256 1.48-1.57 -> 2.53-2.78, K = 512 1.57 -> 1.73; fp32 (six products)
 * K = 256 1.69-1.79 -> 2.00-2.12, K = 512 1.38 -> 1.62-1.64.  Two lines of padding (an even
 * count) gave back most of it; software prefetch of the next chunk's tiles lost. */
static inline long fl_amx_lda16(long K2p)
{
    return (K2p / 16 | 1) * 32;
}

#if defined(__AVX512F__) && defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>

#define FL_HAVE_AMX 1
#define FL_AMX_TARGET __attribute__((target("amx-tile,amx-bf16,amx-int8")))

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} fl_tile_config;

static int fl_amx_state = -1;

/* 1 when AMX-BF16 and AMX-INT8 run here: CPU flags, and the kernel's permission
 * for the tile data state (asked once per process). */
static inline int fl_amx_usable(void)
{
    int state = __atomic_load_n(&fl_amx_state, __ATOMIC_ACQUIRE);
    if (state < 0) {
        __builtin_cpu_init();
        state = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16")
                && __builtin_cpu_supports("amx-int8")
                && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                           18 /* XFEATURE_XTILEDATA */) == 0;
        __atomic_store_n(&fl_amx_state, state, __ATOMIC_RELEASE);
    }
    return state;
}

/* Tile configuration is per thread: every thread entering AMX code calls this. */
static FL_AMX_TARGET void fl_amx_begin(void)
{
    fl_tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    /* GCC 12's _tile_loadconfig tells the compiler it reads 8 bytes, so the stores
     * filling the rest of cfg can be dropped: name the whole struct instead */
    __asm__ volatile("ldtilecfg %0" : : "m"(cfg));
}

static FL_AMX_TARGET void fl_amx_end(void) { _tile_release(); }

/* Both products: one tile row of 64 bytes holds 32 bf16 of K (pairs) or 64 int8
 * (quads), so the two layouts have the same byte geometry and differ only in the
 * instruction.  The tile numbers must be constants, hence the macro. */
#define FL_AMX_DP(int8, c, x, y) \
    do { if (int8) _tile_dpbusd(c, x, y); else _tile_dpbf16ps(c, x, y); } while (0)

/* Tiles 0-3 (row tiles a, a + 16 rows x gates g, g + 1 of G) += the products of
 * n_chunks chunks of K: A_p (row stride lda bytes, part p at a + p * part bytes) .
 * B_q (bg: the gate pair's columns of (n_chunks * 16, G*16, 4 bytes), part q at
 * bg + q * b_part bytes) for p + q < parts.  ``pair`` 0: gate g alone (tiles 0, 2). */
FL_INLINE FL_AMX_TARGET void fl_amx_accumulate(int int8, int pair, const uint8_t *a, long lda,
                                               long part, int parts, long n_chunks,
                                               const uint8_t *bg, int b_parts, long b_part,
                                               long ldb)
{
    for (long k = 0; k < n_chunks; k++)
        for (int q = 0; q < b_parts; q++) {
            const uint8_t *bk = bg + q * b_part + k * 16 * ldb;
            _tile_loadd(6, bk, ldb);
            if (pair) _tile_loadd(7, bk + 64, ldb);
            for (int p = 0; p + q < parts; p++) {
                const uint8_t *ak = a + p * part + k * 64;
                _tile_loadd(4, ak, lda);
                _tile_loadd(5, ak + 16 * lda, lda);
                FL_AMX_DP(int8, 0, 4, 6);
                FL_AMX_DP(int8, 2, 5, 6);
                if (pair) {
                    FL_AMX_DP(int8, 1, 4, 7);
                    FL_AMX_DP(int8, 3, 5, 7);
                }
            }
        }
}

/* Tiles 0-3 (see fl_amx_accumulate) to o (32 rows, stride ldg_bytes) */
FL_INLINE FL_AMX_TARGET void fl_amx_store(int pair, float *o, long ldg_bytes)
{
    _tile_stored(0, o, ldg_bytes);
    _tile_stored(2, (uint8_t *)o + 16 * ldg_bytes, ldg_bytes);
    if (pair) {
        _tile_stored(1, o + FL_U, ldg_bytes);
        _tile_stored(3, (uint8_t *)(o + FL_U) + 16 * ldg_bytes, ldg_bytes);
    }
}

/* gates (rows, G*16), stride ldg floats = sum over parts p of A and q of B with
 * p + q < parts of A_p . B_q, one block.
 * A_p: rows of n_chunks * 64 bytes, row stride lda bytes, part p at a + p * part
 * bytes; B_q: (n_chunks * 16, G*16, 64/16 bytes) in pair (bf16) or quad (int8) order,
 * part q at b + q * b_part bytes.  b_parts 1: bf16 or int8 weights times every part
 * of A; 3 (with 3 parts of A): fp32 weights, A_p . B_q for the six p + q <= 2, whose
 * sum leaves out terms below 2^-24 of the product (so fp32 accuracy).
 * bf16 (int8 = 0): fp32 sums.  int8: A holds q + 128 as u8 and B int8 (one part);
 * the int32 sums, less 128 * wsum, are converted to floats, so the result is the
 * exact integer sum of q * w.  bias (G*16 floats, bf16 only) or NULL: added to every
 * row (the tiles start from it).  rows: a multiple of FL_AMX_ROWS. */
static FL_AMX_TARGET void fl_amx_gates(int G, long rows, int int8, const uint8_t *a, long lda,
                                       long part, int parts, long n_chunks, const uint8_t *b,
                                       int b_parts, long b_part, const int32_t *wsum,
                                       const float *bias, float *gates, long ldg)
{
    const long width = (long)G * FL_U, ldb = width * 4;
    for (long r0 = 0; r0 < rows; r0 += FL_AMX_ROWS) {
        for (int g = 0; g < G; g += 2) {
            const int pair = g + 1 < G;
            if (bias) {  /* stride 0: every row of the tile starts as the bias */
                _tile_loadd(0, bias + g * FL_U, 0);
                _tile_loadd(2, bias + g * FL_U, 0);
                _tile_loadd(1, bias + (g + pair) * FL_U, 0);
                _tile_loadd(3, bias + (g + pair) * FL_U, 0);
            } else {
                _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            }
            fl_amx_accumulate(int8, pair, a + r0 * lda, lda, part, parts, n_chunks, b + g * 64,
                              b_parts, b_part, ldb);
            fl_amx_store(pair, gates + r0 * ldg + g * FL_U, ldg * 4);
        }
        if (!int8) continue;
        for (long r = r0; r < r0 + FL_AMX_ROWS; r++)
            for (long c = 0; c < width; c += FL_U) {
                float *row = gates + r * ldg + c;
                v16i sums, offset;
                memcpy(&sums, row, sizeof sums);
                memcpy(&offset, wsum + c, sizeof offset);
                v_store(row, __builtin_convertvector(sums - (offset << 7), v16));
            }
    }
}

/* gates (rows, G*16), stride ldg floats = X . Wx + H . Wh, one block of bf16 weights:
 * a step's input product taken in the tiles of its recurrent product, so the input
 * projection is never stored.  X, H: bf16 rows (strides ldx, ldh bytes) of x_chunks,
 * h_chunks * 64 bytes; Wx, Wh: the block's weights in pair order.  rows: a multiple
 * of FL_AMX_ROWS. */
static FL_AMX_TARGET void fl_amx_gates_xh(int G, long rows, const uint8_t *x, long ldx,
                                          long x_chunks, const uint8_t *wx, const uint8_t *h,
                                          long ldh, long h_chunks, const uint8_t *wh,
                                          float *gates, long ldg)
{
    const long ldb = (long)G * FL_U * 4;
    for (long r0 = 0; r0 < rows; r0 += FL_AMX_ROWS)
        for (int g = 0; g < G; g += 2) {
            const int pair = g + 1 < G;
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            fl_amx_accumulate(0, pair, x + r0 * ldx, ldx, 0, 1, x_chunks, wx + g * 64, 1, 0, ldb);
            fl_amx_accumulate(0, pair, h + r0 * ldh, ldh, 0, 1, h_chunks, wh + g * 64, 1, 0, ldb);
            fl_amx_store(pair, gates + r0 * ldg + g * FL_U, ldg * 4);
        }
}

/* gates (16, G*16), stride ldg floats = A . B for one tile of 16 rows of bf16 A (row
 * stride lda bytes, n_chunks * 64 bytes each) and one block's B in pair order: bf16's
 * recurrent product at up to 16 rows, which the 2x2-tile pass of fl_amx_gates would
 * pad to 32.  Tile 4 holds A, 5-7 B. */
static FL_AMX_TARGET void fl_amx_gates16(int G, const uint8_t *a, long lda, long n_chunks,
                                         const uint8_t *b, float *gates, long ldg)
{
    const long ldb = (long)G * FL_U * 4, chunk = 16 * ldb, ldg_bytes = ldg * 4;
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (long k = 0; k < n_chunks; k++) {
        const uint8_t *bk = b + k * chunk;
        _tile_loadd(4, a + k * 64, lda);
        _tile_loadd(5, bk, ldb);
        if (G > 1) _tile_loadd(6, bk + 64, ldb);
        if (G > 2) _tile_loadd(7, bk + 128, ldb);
        _tile_dpbf16ps(0, 4, 5);
        if (G > 1) _tile_dpbf16ps(1, 4, 6);
        if (G > 2) _tile_dpbf16ps(2, 4, 7);
        if (G > 3) {
            _tile_loadd(5, bk + 192, ldb);
            _tile_dpbf16ps(3, 4, 5);
        }
    }
    _tile_stored(0, gates, ldg_bytes);
    if (G > 1) _tile_stored(1, gates + FL_U, ldg_bytes);
    if (G > 2) _tile_stored(2, gates + 2 * FL_U, ldg_bytes);
    if (G > 3) _tile_stored(3, gates + 3 * FL_U, ldg_bytes);
}

#else
#define FL_HAVE_AMX 0
static inline int fl_amx_usable(void) { return 0; }
#endif

#endif
