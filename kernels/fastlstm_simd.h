/* Block micro-kernels of the Cython backend.
 *
 * One source for every instruction set: GCC vector extensions of 16 floats.
 * Built with -mavx512f each vector is one zmm register; with -mavx2 two ymm;
 * with the x86-64 baseline four xmm.  The extension modules _cy_avx512,
 * _cy_avx2 and _cy_generic include this file under different flags, and the
 * Python side imports the best one the CPU supports.
 *
 * Packed layout (see fastlstm/cython_glue.py): hidden units are grouped in
 * blocks of FL_U = 16; a block's weights are (K, G, 16) contiguous, so one pass
 * over K computes every gate of 16 units into G vector accumulators per row,
 * and the pointwise update runs while they are still in registers.
 *
 * Every function works on caller-owned memory and never allocates.
 */
#ifndef FASTLSTM_SIMD_H
#define FASTLSTM_SIMD_H

#include <sched.h>
#include <stdio.h>
#include <unistd.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE__)
#include <xmmintrin.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__AVX__)
#include <immintrin.h>
#endif

#define FL_U 16
#define FL_MAX_ROWS 4
/* rows of the input projection handled per pass over all blocks: a panel of x
 * stays in L2 while every block's weights stream past it once */
#define FL_PANEL_ROWS 96
/* K rows of a block's weights per pass: 128 x 64 floats = 32 KiB, inside L1; 64 rows
 * on narrow builds, whose tiles walk the chunk once per column pair (Zen 3, L1 of 32
 * KiB, LSTM 256/256 batch 64 x 100 steps, 1 thread, best ms of three alternations:
 * 91.6-93.6 with 128, 89.5-90.3 with 64) */
#define FL_KCHUNK (FL_VW < 16 ? 64 : 128)
/* ... and of bf16 weights in the input projection, whose chunk is half the bytes: bf16
 * projection alone, 100 x 512 @ 512 x 2048 (lat_large's), Zen 3, 1 thread, four
 * alternations, min ms: 64 rows 3.49-3.72, 128 3.09, 256 2.76-4.31; 100 x 256 @ 256 x
 * 1024 0.84-1.31 / 0.69-0.96 / 0.64-0.83. */
#define FL_KCHUNK_BF16 128
/* AMX (fastlstm_amx.h): rows per pass (two tiles of 16), and the fewest rows worth
 * it for int8's recurrent products and the projections (a pass costs the same for 1
 * or 32 rows; measured on stack_bi, batch 8, bf16, 1 thread: 23.9 ms with the
 * recurrent products widened, 26.9 ms on 32-row tiles).  bf16's recurrent products
 * run on tiles at every row count, up to 16 rows in one tile (fl_block_amx): LSTM
 * 256/256, 100 steps, 1 thread, when h took three parts stacked as tile rows: batch 1
 * 0.74 ms vs 1.22 widened, batch 5 1.83 vs 4.51. */
#define FL_AMX_ROWS 32
#define FL_AMX_MIN_ROWS 16
/* fp32 weights and activations on AMX: three bf16 parts each (see FL_AMX_F32_MIN_ROWS) */
#define FL_AMX_PARTS 3
/* x, the input projection's activations of bf16 weights, in two bf16 parts
 * (16 significant bits, a relative change of at most 2^-17 against the 2^-9 of the
 * weights' rounding) below FL_X_ONE_PART_ROWS rows a step, else in one (x rounded to
 * bf16, as the peers multiply).  Two parts against three: 1 thread, median ms (AMX),
 * builds alternated: bf16 LSTM 256/256 batch 64 x 100 steps 22.8 -> 17.6-18.4, GRU
 * 15.1 -> 12.2; lat_med bf16 0.667-0.704 -> 0.584-0.586 (int8, which then took x in
 * parts too, 0.426-0.427 -> 0.355-0.358).  One part everywhere raised step1's error to torch-bf16's (1.0e-3 vs
 * 1.0e-3 in `fastlstm bench --precision bf16`, 7.3e-4 with two), so batches of a few
 * rows keep two; at batch 64, where the projection's tile products bound the run,
 * one part took thr_med on 1 thread from 0.81x torch-bf16 to 0.99x (same-run bench),
 * at errors below the peers' (3.1e-3 vs 3.7e-3).  FL_AMX_X_PARTS is the most parts, which the scratch holds. */
#define FL_AMX_X_PARTS 2
#define FL_X_ONE_PART_ROWS 16
#define FL_X_PARTS(step_rows) ((step_rows) >= FL_X_ONE_PART_ROWS ? 1 : FL_AMX_X_PARTS)
/* bf16 weights multiply h rounded to bf16 (one part), on every path: the rounding
 * vdpbf16ps and the peers apply.  Against three parts (h exact), bf16 LSTM 256/256
 * batch 64 x 100 steps, 1 thread, median ms, builds alternated twice: 18.4-18.7 ->
 * 13.1-13.6, GRU 256 13.2-13.3 -> 8.3-8.9, LSTM 512/512 79.0-80.9 -> 58.9-59.1; the
 * bench's max abs error from fp32 unchanged (thr_med 2.0e-3, lat_med 1.3e-3 -> 1.4e-3,
 * gru_med 2.3e-3 -> 2.5e-3; torch-bf16 3.7e-3, 2.5e-3, 8.2e-3).  The price: where two
 * paths' fp32 h differ in the last bit (AVX-512 vs AVX2 builds, tiles vs FMAs, a short
 * chunk's projection on FMAs vs a long one's on tiles) h can round to neighbouring bf16
 * values, so such results agree to a bf16 step of h (tests: 1e-4) rather than 1e-6. */
#define FL_BF16_H_PARTS 1
/* fp32 on AMX: weights and activations in three bf16 parts, and the six products of
 * parts whose orders sum to <= 2 (fastlstm_amx.h), 4-9e-7 from PyTorch fp32 where the
 * FMAs are 3-7e-7.  Recurrent products from FL_AMX_F32_MIN_ROWS rows.  Measured, 1
 * thread, 100 steps, median ms, tiles vs FMAs (FASTLSTM_AMX=0) alternated twice:
 * LSTM 256/256 batch 16 12.3-12.5 vs 11.3-11.4; 24: 15.6-15.8 vs 17.6, but 512/512
 * 71-78 vs 71.3-71.5 and GRU 512 57-61 vs 52.5-52.8; 32: 256 18.5-19.1 vs 22.9-23.8,
 * 512 84.4 vs 95-96. */
#define FL_AMX_F32_MIN_ROWS 32
/* The fp32 input projection on AMX: panels of FL_AMX_F32_PANEL_ROWS rows of split x,
 * when a thread projects at least FL_AMX_F32_PROJECT_ROWS rows (its last rows short of
 * a tile pair run on FMAs).  With 256 (before split rows had an odd number of cache
 * lines, fl_amx_lda16) the gain below was at most 3%.  Since, 64 against 256, 100 steps
 * at batch 1, median ms, builds alternated twice: 1 thread LSTM 256/256 1.12-1.17 ->
 * 1.07-1.09, GRU 256 0.86-0.88 -> 0.81, LSTM 64/128 0.24-0.25 either way; 2 threads
 * LSTM 256 0.62-0.63 -> 0.58, GRU 0.48-0.49 -> 0.45-0.46, LSTM 64/128 0.18-0.19 ->
 * 0.19, LSTM 512 1 thread 11.0 -> 11.2.  32 was no better than 64.  Panels of 32, 64,
 * 128 rows (before the padding): 34.9, 37.5, 36.2 ms on LSTM 256/256 batch 64, 157.9,
 * 150.5, 154.3 on 512/512, within noise; after it 64 vs 256: 256/256 39-40 vs 43, GRU
 * 26.7 vs 28-32, 512/512 136-140 vs 129-134.  The last rows short of a tile pair
 * through a padded pair (stage) instead of FMAs: lat_med 1.00-1.04 ms either way,
 * gru_med 0.76 either way (1 thread; 2 threads alike), so FMAs kept.  Per panel the
 * projection costs about 2.1 us a row at K = 256 (64 rows 137 us, 96 rows 207 us), the
 * same with panels of 96 or 128 rows: the products, not the weight reads, bound it. */
#define FL_AMX_F32_PANEL_ROWS 64
#define FL_AMX_F32_PROJECT_ROWS 64
/* bf16 and int8 input projections on AMX take panels of FL_AMX_ROWS rows, or of
 * FL_AMX_WIDE_PANEL_ROWS when the weights a thread projects with exceed
 * FL_AMX_WIDE_PANEL_BYTES: every panel streams all of them, from L3 once they
 * outgrow the L2 (2 MiB here).  Projection alone, 6400 rows, 2 x parts, 1 thread,
 * best of 7, ms, panels of 32 / 256 rows: K 512 x 32 blocks (2 MiB of bf16
 * weights) 24.2-25.9 / 18.8-20.6, K 1024 x 16 (2 MiB) 25.3 / 19.6; but K 512 x 16
 * (1 MiB) 9.4 / 10.8, K 384 x 24 (1.2 MiB) 10.6 / 11.6, K 256 x 32 (1 MiB) 7.9 /
 * 9.5, K 256 x 16 3.6-3.8 / 4.2-4.8.  Panels of 512 rows: 22.3 on K 512 x 32. */
#define FL_AMX_WIDE_PANEL_ROWS 256
#define FL_AMX_WIDE_PANEL_BYTES (3L << 19)
/* The AMX projection's split x for weights in w_parts bf16 parts: x in as many parts
 * (fp32) or at most FL_AMX_X_PARTS, panels of up to FL_AMX_F32_PANEL_ROWS or
 * FL_AMX_WIDE_PANEL_ROWS rows; a thread's a16 scratch holds FL_AMX_PROJECT_A16_ROWS of
 * them. */
#define FL_AMX_PROJECT_X_PARTS(w_parts) ((w_parts) > 1 ? (w_parts) : FL_AMX_X_PARTS)
#define FL_AMX_PROJECT_PANEL_ROWS(w_parts) \
    ((w_parts) > 1 ? FL_AMX_F32_PANEL_ROWS : FL_AMX_WIDE_PANEL_ROWS)
#define FL_AMX_PROJECT_A16_ROWS(w_parts) \
    (FL_AMX_PROJECT_X_PARTS(w_parts) * FL_AMX_PROJECT_PANEL_ROWS(w_parts))

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

/* The kernels' own vector: one register of the build's widest kind, FL_VW floats.
 * A block's 16 units are FL_NH such vectors, so a row of G gates is G * FL_NH
 * vectors, contiguous in every (G, 16) layout: vector j covers columns
 * [j * FL_VW, (j + 1) * FL_VW), gate j / FL_NH.  GCC keeps a 16-float generic vector
 * in memory where no register holds it whole: with -mavx2 every operation on one went
 * through the stack (lat_med fp32, 1 thread, 15.8 ms as 16-float vectors on Zen 3,
 * ONNX Runtime 4.4 ms; see fl_tile_rows for what replaced it). */
#if defined(__AVX512F__)
#define FL_VW 16
#elif defined(__AVX__)
#define FL_VW 8
#else
#define FL_VW 4
#endif
#define FL_NH (FL_U / FL_VW)
#define FL_ACC (4 * FL_NH)   /* the most vectors in a row of gates (LSTM) */
/* Narrow builds' chunk products (fl_chunk_cols): tiles of FL_COL_ROWS rows x FL_PAIR
 * vectors, 12 accumulators */
#define FL_COL_ROWS (FL_VW < 16 ? 6 : FL_MAX_ROWS)
#define FL_PAIR 2
typedef float vf __attribute__((vector_size(FL_VW * 4)));
typedef int32_t vfi __attribute__((vector_size(FL_VW * 4)));

#define FL_INLINE static inline __attribute__((always_inline))

/* FL_GRU is PyTorch's GRU (linear before reset); the original GRU (reset
 * applied to h before the matmul) takes two phases per step: FL_GRU_RZ computes
 * r and z and writes r*h, then FL_GRU_N multiplies r*h by the new-gate weights. */
enum { FL_LSTM = 0, FL_GRU = 1, FL_RNN_TANH = 2, FL_RNN_RELU = 3, FL_PROJ = 4,
       FL_GRU_RZ = 5, FL_GRU_N = 6 };

FL_INLINE vf v_load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }

/* Weight storage: float32, bfloat16 (the upper half of a float32) or int8 with
 * one float32 scale per output column, applied to the finished sums.  Reduced
 * weights are widened to float32 in registers; products accumulate in float32.
 * (This module is compiled for CPUs with and without AVX512-BF16/VNNI, and the
 * widening path gives the same result on each up to float32 rounding.) */
enum { FL_F32 = 0, FL_BF16 = 1, FL_I8 = 2 };
/* bf16 weights on narrow builds are stored in pair order: in each run of 2 * FL_VW
 * weights of a row (rows are multiples of 16 long), 32-bit word i holds weight i in its
 * low half and weight FL_VW + i in its high half (cython_glue packs them so, asking
 * bf16_pair_width()).  A shift and a mask of one load then make two float32 vectors,
 * where widening each vector took a vpmovzxwd and a shift (on Zen 3 the loop waited on
 * the vpmovzxwd).  bf16 LSTM, batch 1, input size 1 (the recurrent product alone), Zen 3,
 * 1 thread, alternated runs, min / median ms, plain -> pair order: H 256 x 100 steps
 * 1.60-1.73 / 1.72-1.96 -> 1.11-1.46 / 1.32-1.60; H 1024 x 50 steps 12.3-12.8 /
 * 14.6-14.7 -> 8.6-9.1 / 12.0-12.6.  AVX-512 keeps the plain order: a run of 2 * 16
 * would span two gates of a GRU block's 48 columns, and its vdpbf16ps and AMX paths
 * read their own order. */
#define FL_BF16_PAIRED (FL_VW < 16)
typedef int8_t vfi8 __attribute__((vector_size(FL_VW)));

FL_INLINE const void *fl_wptr(const int wt, const void *w, long elements)
{
    const long size = wt == FL_F32 ? 4 : wt == FL_BF16 ? 2 : 1;
    return (const char *)w + elements * size;
}

/* Widening FL_VW reduced weights to float32.  GCC scalarises the generic vector
 * conversions (measured: int8 at 4 GB/s), so AVX-512 and AVX2 get intrinsics.
 * Vector j (of FL_VW weights) of a row of bf16 weights in pair order, j & 1 the half
 * of the pair: one load, then a shift or a mask (plain order: vector j as it is) */
#if FL_BF16_PAIRED
FL_INLINE vf w_bf16_vector(const uint16_t *row, const int j)
{
    const uint16_t *p = row + (j & ~1) * FL_VW;
#if defined(__AVX2__)
    const __m256i v = _mm256_loadu_si256((const __m256i *)p);
    return (vf)_mm256_castsi256_ps(j & 1 ? _mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000))
                                         : _mm256_slli_epi32(v, 16));
#else
    vfi v;
    memcpy(&v, p, sizeof v);
    return (vf)(j & 1 ? v & (int)0xFFFF0000 : v << 16);
#endif
}
#else  /* AVX-512 */
FL_INLINE vf w_bf16_vector(const uint16_t *row, const int j)
{
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(row + j * FL_VW)));
    return (vf)_mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
#endif

FL_INLINE vf w_widen_int8(const int8_t *p)
{
#if defined(__AVX512F__)
    return (vf)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
#elif defined(__AVX2__)
    return (vf)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
#else
    vfi8 q;
    memcpy(&q, p, sizeof q);
    return __builtin_convertvector(q, vf);
#endif
}

/* Vector j of the weights from element ``row`` (a multiple of 16), as float32 */
FL_INLINE vf w_load(const int wt, const void *w, long row, int j)
{
    if (wt == FL_F32) return v_load((const float *)w + row + j * FL_VW);
    if (wt == FL_BF16) return w_bf16_vector((const uint16_t *)w + row, j);
    return w_widen_int8((const int8_t *)w + row + j * FL_VW);
}
FL_INLINE void v_store(float *p, vf v) { memcpy(p, &v, sizeof v); }
FL_INLINE vf v_splat(float x)  /* x in every lane */
{
#if defined(__AVX512F__)
    return (vf)_mm512_set1_ps(x);
#elif defined(__AVX__)
    return (vf)_mm256_set1_ps(x);
#else
    return (vf){x, x, x, x};
#endif
}
FL_INLINE vf v_select(vfi mask, vf a, vf b)  /* mask ? a : b, lane-wise */
{
    return (vf)(((vfi)a & mask) | ((vfi)b & ~mask));
}

/* exp(x): 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2], p the degree-5 polynomial with
 * p(0) = p'(0) = 1 whose other coefficients minimise the largest relative error on that
 * interval (fitted in float64: 1.05e-7; the whole float32 exp 4.0e-7 relative where
 * |x| < 87, sigmoid 9.2e-8 and tanh 1.9e-7 absolute over [-100, 100], checked in a
 * C harness against the double functions).  One constant for ln2 leaves r off by up to
 * |n| * 2^-25: relative error in exp only where |n| is large, where sigmoid and tanh
 * have saturated.  Against the former degree-6 Taylor polynomial and two-constant ln2
 * (exp 2.3e-7, sigmoid 1.0e-7, tanh 2.0e-7), the pointwise pass is 13% faster for LSTM
 * (1.53-1.62 -> 1.36-1.37 ns a unit, harness, H 256, batch 64, 1 thread) and 8% for GRU
 * (0.99 -> 0.91): two fewer operations in each exp, on a pass bound by its operations
 * (a faster reciprocal, vrcp14ps and a Newton step, changed nothing).  Inputs are
 * clamped to [lo, hi] (v_exp: where 2^n stays a normal number); NaN passes through
 * the clamps and the polynomial as NaN.  With AVX-512 the clamps are vmaxps/vminps
 * (they return their second operand, x, for NaN; vrangeps would clamp in one
 * instruction but turns NaN into the bound) and vscalefps applies 2^n: the same
 * values bit for bit as the shifts (checked over a million floats across the whole
 * range), and the LSTM pass 12-14% faster (harness: batch 64 2.05 -> 1.76 ns a unit). */
FL_INLINE vf v_exp_within(vf x, const float lo, const float hi)
{
#if defined(__AVX512F__)
    x = (vf)_mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), (__m512)x));
#else
    x = v_select(x > hi, v_splat(hi), x);
    x = v_select(x < lo, v_splat(lo), x);
#endif
    const vf shifter = v_splat(12582912.0f); /* 1.5 * 2^23: rounds to nearest */
    vf t = x * 1.44269504088896341f + shifter;
    vf fn = t - shifter;
    vf r = x - fn * 0.693147180559945f;
    vf p = v_splat(8.31253e-3f);
    p = p * r + 4.189011e-2f;
    p = p * r + 0.16667114f;
    p = p * r + 0.49999232f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
#if defined(__AVX512F__)
    return (vf)_mm512_scalef_ps((__m512)p, (__m512)fn);
#else
    vfi n = (vfi)t - 0x4B400000;
    return p * (vf)((n + 127) << 23);
#endif
}

/* Plain division.  A 14-bit vrcp14ps estimate plus a Newton step was tried: the
 * pointwise part of a lat_med step stayed at 0.45 us (the step is bound by
 * reading W_hh, 6.5 us from L2), and it made AVX-512 and AVX2 results differ in
 * the last bit, which int8's per-step quantization of h can amplify. */
FL_INLINE vf v_recip(vf d)
{
#if defined(__AVX512F__) && defined(FL_FAST_RECIP)
    const __m512 r = _mm512_rcp14_ps((__m512)d);
    return (vf)_mm512_mul_ps(r, _mm512_fnmadd_ps((__m512)d, r, _mm512_set1_ps(2.0f)));
#else
    return 1.0f / d;
#endif
}

FL_INLINE vf v_exp(vf x) { return v_exp_within(x, -87.3f, 88.3f); }
FL_INLINE vf v_sigmoid(vf x) { return v_recip(1.0f + v_exp(-x)); }
FL_INLINE vf v_tanh(vf x) { return 2.0f * v_recip(1.0f + v_exp(-2.0f * x)) - 1.0f; }
/* sigmoid(a) * tanh(b) as one quotient, (1 - e^-2b) / ((1 + e^-a)(1 + e^-2b)), its
 * exponents bounded to +-43 so the denominator stays below float's largest (e^86);
 * the bounds move the result by under 1e-18.  The LSTM pass takes two of these where
 * it took four divisions: harness, H 256, batch 64, 1 thread, 1.31-1.33 -> 1.16-1.17
 * ns a unit; largest error over [-60, 60]^2 2.4e-7 (separately 2.5e-7). */
FL_INLINE vf v_sigmoid_tanh(vf a, vf b)
{
    const vf ea = v_exp_within(-a, -43.0f, 43.0f), eb = v_exp_within(-2.0f * b, -43.0f, 43.0f);
    return (1.0f - eb) / ((1.0f + ea) * (1.0f + eb));
}
FL_INLINE vf v_relu(vf x) { return v_select(x > 0.0f, x, v_splat(0.0f)); }
/* ONNX clip: pre-activations bounded to [-clip, clip]; NaN passes through. */
FL_INLINE vf v_clip(vf x, float clip)
{
    x = v_select(x > clip, v_splat(clip), x);
    return v_select(x < -clip, v_splat(-clip), x);
}

/* Rows per register tile for G gates: R rows x G * FL_NH accumulators, one weight
 * vector and R broadcasts of h must fit the 32 zmm (AVX-512) or 16 ymm/xmm registers.
 * With AVX2 an LSTM tile is one row of 8 accumulators; with more, GCC spills them. */
FL_INLINE int fl_tile_rows(const int G)
{
#if FL_VW == 16
    (void)G;
    return FL_MAX_ROWS;
#elif FL_VW == 8
    return G >= 4 ? 1 : G == 3 ? 2 : G == 2 ? 3 : 4;
#else
    return G >= 2 ? 1 : 2;
#endif
}
/* One row splits its FMA chains over even and odd k (to hide their latency) where
 * twice its accumulators still fit the registers.  An LSTM row on AVX2 (8 vectors)
 * does not split, and need not for bf16: its loop issues 16 FP operations a k (8 FMAs,
 * 8 shifts or masks widening the pairs) on Zen 3's four FP pipes, which bind before
 * the 8 chains do.  Harness, one block of K 256 x 64 bf16 (32 KiB, in L1), 1 thread,
 * GMAC/s over runs: 8 accumulators 24-32; 12 (halves of 4 vectors x 3 phases of k)
 * 20-25; pairs of products summed before the accumulator (mul, FMA, add) 26 vs 29.
 * From L2 or L3 (16-32 blocks) the 8-accumulator loop gives 22-28; the FMA peak is
 * 44.8 (2 x 8 lanes at 2.8 GHz, measured). */
#define FL_SPLIT_VECTORS (FL_VW == 16 ? 16 : FL_VW == 8 ? 12 : 8)

/* acc[r][j] (+)= sum_k h[r*ldh + k] * w[k*ldw + j*FL_VW ...]  for R rows and NV
 * vectors j.  w: K rows of ldw weights of type wt; h: R rows of K values, stride ldh. */
FL_INLINE void fl_tile_nv(const int NV, const long ldw, const int R, const int wt,
                          const void *restrict w, const float *restrict h, long ldh, long K,
                          vf acc[FL_MAX_ROWS][FL_ACC], const int accumulate)
{
    vf a[FL_COL_ROWS][FL_ACC], b[FL_ACC];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 16
        for (int j = 0; j < NV; j++) a[r][j] = accumulate ? acc[r][j] : v_splat(0.0f);
    const int split = R == 1 && 2 * NV <= FL_SPLIT_VECTORS;
#pragma GCC unroll 16
    for (int j = 0; j < NV; j++) b[j] = v_splat(0.0f);
    long k = 0;
    if (split) {
        for (; k + 1 < K; k += 2) {
            const vf h0 = v_splat(h[k]), h1 = v_splat(h[k + 1]);
#pragma GCC unroll 16
            for (int j = 0; j < NV; j++) {
                a[0][j] += h0 * w_load(wt, w, k * ldw, j);
                b[j] += h1 * w_load(wt, w, (k + 1) * ldw, j);
            }
        }
    }
    for (; k < K && NV <= FL_PAIR; k++) {  /* few vectors: each row's h broadcast once */
        vf wv[FL_PAIR];
#pragma GCC unroll 16
        for (int j = 0; j < NV; j++) wv[j] = w_load(wt, w, k * ldw, j);
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            const vf hr = v_splat(h[r * ldh + k]);
#pragma GCC unroll 16
            for (int j = 0; j < NV; j++) a[r][j] += hr * wv[j];
        }
    }
    for (; k < K; k++) {  /* many: each weight vector loaded once */
        vf hr[FL_COL_ROWS];
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) hr[r] = v_splat(h[r * ldh + k]);
#pragma GCC unroll 16
        for (int j = 0; j < NV; j++) {
            const vf wv = w_load(wt, w, k * ldw, j);
#pragma GCC unroll 16
            for (int r = 0; r < R; r++) a[r][j] += hr[r] * wv;
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 16
        for (int j = 0; j < NV; j++)
            acc[r][j] = a[r][j] + (r == 0 && split ? b[j] : v_splat(0.0f));
}

/* The G * FL_NH vectors of G gates: w (K, G, 16) one block. */
FL_INLINE void fl_tile(const int G, const int R, const int wt, const void *restrict w,
                       const float *restrict h, long ldh, long K, vf acc[FL_MAX_ROWS][FL_ACC],
                       const int accumulate)
{
    fl_tile_nv(G * FL_NH, (long)G * FL_U, R, wt, w, h, ldh, K, acc, accumulate);
}

/* Per-block arguments of one step.  Row r of each operand is at base + r * ld. */
typedef struct {
    const void *w;       /* (K, G, 16) this block's recurrent (or projection) weights */
    int wt;              /* FL_F32, FL_BF16 or FL_I8 */
    const float *wscale; /* (G, 16) int8 column scales of this block, or NULL */
    /* The recurrent product's input h as reduced: int8 quantized (integer-valued floats
     * and a scale per row), bf16 rounded to bf16 (no scale); NULL: h as it is */
    const float *hq;     /* (R, ldq) */
    long ldq;
    const float *hscale; /* (R,) per-row scale of int8's hq, or NULL */
    const int8_t *wq;    /* (K4, G, 16, 4) this block's weights in VNNI order, or NULL */
    const int32_t *wsum; /* (G*16,) column sums of wq */
    const uint8_t *hu8;  /* (R, ldu) hq + 128, K padded to a multiple of 4 */
    long ldu;
    int q7;              /* hq on the 7-bit grid (FL_QMAX) */
    long K;
    const float *h;      /* (R, ldh) previous state rows (or h_full rows for FL_PROJ) */
    long ldh;
    const float *x;      /* (R, ldx) input projection at this block's (G, 16) columns */
    long ldx;
    float *c;            /* (R, ldc) LSTM cell state at this block's units */
    long ldc;
    float *h_out;        /* (R, ldo) new state at this block's units */
    long ldo;
    const float *h_self; /* (R, ldh) previous state at this block's units (GRU) */
    const float *b_hn;   /* (16,) GRU recurrent new-gate bias of this block */
    const float *peep;   /* (3, 16) LSTM peepholes i, f, o of this block, or NULL */
    int coupled;         /* LSTM: f = 1 - i (ONNX input_forget) */
    int has_clip;
    float clip;
    float *rh;           /* (R, ldr) original GRU: r * h at this block's units (FL_GRU_RZ writes) */
    float *z;            /* (R, ldr) original GRU: z at this block's units */
    long ldr;
    long ldr2;           /* FL_GRU_N: row stride of h_self (the state), as a->ldh is r*h's */
    /* bf16 and fp32 on AMX (fastlstm_amx.h): weights in pair order (fp32 as three bf16
     * parts) and h split into bf16 parts */
    const uint16_t *wp;  /* (wp_parts, K2p, G, 16, 2) this block's weights, or NULL */
    long K2p;
    int wp_parts;        /* 1 (bf16) or FL_AMX_PARTS (fp32) */
    long wp_part;        /* elements from one part of wp to the next */
    const uint16_t *a16; /* (parts, rows, lda16) h as bf16 hi (and lo) parts */
    long lda16;
    long a16_part;       /* elements from one part to the next */
    int a16_parts;
    /* bf16 on AMX, the input product in the step's tiles (fl_amx_gates_xh): x rounded
     * to bf16 and this block's input weights in pair order; x then holds the bias */
    const uint16_t *x16; /* (rows, ldx16) this step's x, or NULL */
    long ldx16;
    long Kx2p;
    const uint16_t *wxp; /* (Kx2p, G, 16, 2) */
} fl_block_args;

/* GRU's reset and update pre-activations of row r, slice n (clipped where asked) */
FL_INLINE void fl_gru_rz(const fl_block_args *a, vf acc[FL_MAX_ROWS][FL_ACC], const int r,
                         const int n, vf *pr, vf *pz)
{
    const float *x = a->x + r * a->ldx + n * FL_VW;
    *pr = acc[r][n] + v_load(x);
    *pz = acc[r][FL_NH + n] + v_load(x + FL_U);
    if (a->has_clip) { *pr = v_clip(*pr, a->clip); *pz = v_clip(*pz, a->clip); }
}

/* The pointwise half of a block: gate pre-activations acc -> new state, one
 * FL_VW-lane slice o of the block's 16 units at a time (gate g's at acc[r][g * FL_NH + n]). */
FL_INLINE void fl_pointwise(const int mode, const int R, const fl_block_args *a,
                            vf acc[FL_MAX_ROWS][FL_ACC])
{
#pragma GCC unroll 4
    for (int n = 0; n < FL_NH; n++) {
        const int o = n * FL_VW;
        switch (mode) {
        case FL_LSTM:
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                const float *x = a->x + r * a->ldx + o;
                float *c = a->c + r * a->ldc + o;
                const vf cp = v_load(c);
                vf pi = acc[r][n] + v_load(x), pf = acc[r][FL_NH + n] + v_load(x + FL_U);
                vf pg = acc[r][2 * FL_NH + n] + v_load(x + 2 * FL_U);
                vf po = acc[r][3 * FL_NH + n] + v_load(x + 3 * FL_U);
                if (a->peep) {
                    pi += v_load(a->peep + o) * cp;
                    pf += v_load(a->peep + FL_U + o) * cp;
                }
                if (a->has_clip) {
                    pi = v_clip(pi, a->clip); pf = v_clip(pf, a->clip); pg = v_clip(pg, a->clip);
                }
                vf cn;
                if (a->coupled) {
                    const vf gi = v_sigmoid(pi);
                    cn = (1.0f - gi) * cp + gi * v_tanh(pg);
                } else {
                    cn = v_sigmoid(pf) * cp + v_sigmoid_tanh(pi, pg);
                }
                v_store(c, cn);
                if (a->peep) po += v_load(a->peep + 2 * FL_U + o) * cn;
                if (a->has_clip) po = v_clip(po, a->clip);
                v_store(a->h_out + r * a->ldo + o, v_sigmoid_tanh(po, cn));
            }
            break;
        case FL_GRU:
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                vf pr, pz;
                fl_gru_rz(a, acc, r, n, &pr, &pz);
                vf gr = v_sigmoid(pr), gz = v_sigmoid(pz);
                vf pn = v_load(a->x + r * a->ldx + o + 2 * FL_U)
                        + gr * (acc[r][2 * FL_NH + n] + v_load(a->b_hn + o));
                if (a->has_clip) pn = v_clip(pn, a->clip);
                vf gn = v_tanh(pn);
                vf hp = v_load(a->h_self + r * a->ldh + o);
                v_store(a->h_out + r * a->ldo + o, gn + gz * (hp - gn));
            }
            break;
        case FL_GRU_RZ:
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                vf pr, pz;
                fl_gru_rz(a, acc, r, n, &pr, &pz);
                v_store(a->rh + r * a->ldr + o, v_sigmoid(pr) * v_load(a->h_self + r * a->ldh + o));
                v_store(a->z + r * a->ldr + o, v_sigmoid(pz));
            }
            break;
        case FL_GRU_N:  /* the product was of r*h */
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                vf pn = v_load(a->x + r * a->ldx + 2 * FL_U + o) + acc[r][n] + v_load(a->b_hn + o);
                if (a->has_clip) pn = v_clip(pn, a->clip);
                vf gn = v_tanh(pn);
                vf gz = v_load(a->z + r * a->ldr + o);
                vf hp = v_load(a->h_self + r * a->ldr2 + o);
                v_store(a->h_out + r * a->ldo + o, gn + gz * (hp - gn));
            }
            break;
        case FL_RNN_TANH:
        case FL_RNN_RELU:
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                vf pre = acc[r][n] + v_load(a->x + r * a->ldx + o);
                if (a->has_clip) pre = v_clip(pre, a->clip);
                v_store(a->h_out + r * a->ldo + o, mode == FL_RNN_RELU ? v_relu(pre) : v_tanh(pre));
            }
            break;
        case FL_PROJ:
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) v_store(a->h_out + r * a->ldo + o, acc[r][n]);
            break;
        }
    }
}

/* Number of gate vectors per block row for each mode. */
FL_INLINE int fl_gates(const int mode)
{
    switch (mode) {
    case FL_LSTM: return 4;
    case FL_GRU: return 3;
    case FL_GRU_RZ: return 2;
    default: return 1;
    }
}

FL_INLINE void fl_tile_typed(const int G, const int R, const int wt, const void *w,
                             const float *h, long ldh, long K, vf acc[FL_MAX_ROWS][FL_ACC],
                             const int accumulate)
{
    switch (G) {
    case 4: fl_tile(4, R, wt, w, h, ldh, K, acc, accumulate); break;
    case 3: fl_tile(3, R, wt, w, h, ldh, K, acc, accumulate); break;
    case 2: fl_tile(2, R, wt, w, h, ldh, K, acc, accumulate); break;
    default: fl_tile(1, R, wt, w, h, ldh, K, acc, accumulate); break;
    }
}

/* The tile for G gate vectors and weight type wt, both known only at run time. */
FL_INLINE void fl_tile_g(const int G, const int R, const int wt, const void *w,
                         const float *h, long ldh, long K, vf acc[FL_MAX_ROWS][FL_ACC],
                         const int accumulate)
{
    switch (wt) {
    case FL_BF16: fl_tile_typed(G, R, FL_BF16, w, h, ldh, K, acc, accumulate); break;
    case FL_I8: fl_tile_typed(G, R, FL_I8, w, h, ldh, K, acc, accumulate); break;
    default: fl_tile_typed(G, R, FL_F32, w, h, ldh, K, acc, accumulate); break;
    }
}

FL_INLINE void fl_tile_mode(const int mode, const int R, const int wt, const void *w,
                            const float *h, long ldh, long K, vf acc[FL_MAX_ROWS][FL_ACC],
                            const int accumulate)
{
    fl_tile_g(fl_gates(mode), R, wt, w, h, ldh, K, acc, accumulate);
}

/* int8 weights: the sums times each column's scale */
FL_INLINE void fl_scale(const int G, const int R, const float *wscale,
                         vf acc[FL_MAX_ROWS][FL_ACC])
{
    if (!wscale) return;
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 16
        for (int j = 0; j < G * FL_NH; j++) acc[r][j] *= v_load(wscale + j * FL_VW);
}

/* The largest |x[k]| of a row of K floats (0 for none; NaN never wins, as in a
 * scalar loop of m > peak) */
FL_INLINE float fl_row_peak(const float *x, long K)
{
    vf peaks = v_splat(0.0f);
    long k = 0;
    for (; k + FL_VW <= K; k += FL_VW) {
        const vf v = v_load(x + k);
        const vf m = v_select(v < 0.0f, -v, v);
        peaks = v_select(m > peaks, m, peaks);
    }
    float peak = 0.0f;
    for (int i = 0; i < FL_VW; i++) peak = peaks[i] > peak ? peaks[i] : peak;
    for (; k < K; k++) {
        const float m = x[k] < 0 ? -x[k] : x[k];
        peak = m > peak ? m : peak;
    }
    return peak;
}

/* FL_VW integer-valued floats in [-127, 127], each + 128, as bytes at u */
FL_INLINE void fl_store_u8(uint8_t *u, vf q)
{
#if defined(__AVX512F__)
    const __m512i i = _mm512_add_epi32(_mm512_cvtps_epi32((__m512)q), _mm512_set1_epi32(128));
    _mm_storeu_si128((__m128i *)u, _mm512_cvtepi32_epi8(i));
#elif defined(__AVX2__)
    const __m256i i = _mm256_cvtps_epi32((__m256)q);
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    const __m128i bytes = _mm_xor_si128(_mm_packs_epi16(words, words), _mm_set1_epi8((char)0x80));
    _mm_storel_epi64((__m128i *)u, bytes);
#else
    for (int i = 0; i < FL_VW; i++) u[i] = (uint8_t)((int)q[i] + 128);
#endif
}

/* int8 layers quantize the recurrent input h per step and per row, symmetric:
 * scale = max|h| / 127, q = rint(h / scale) in [-127, 127].  The product q . w_q is
 * then an exact integer: vpdpbusd computes it where the CPU has AVX512-VNNI
 * (with q + 128 as u8 and the column sums taking the 128 back out), and the
 * portable path sums integer-valued floats, exact below 2^24, so both give the
 * same result.  Measured on lat_med's recurrent product (1 thread): 1.8 us/step
 * with vpdpbusd against 7.4 us widening int8 weights against float h, 6.5 us
 * fp32; with weights beyond L2 all are bound by the bytes (H=1024: 133 vs 142
 * us/step).  Output error vs fp32 over 100 steps (numpy, lat_med): 4.6e-3 with
 * h quantized, 4.4e-3 without: the weights' rounding dominates.  fp-contract off:
 * h * inverse is rounded to float before the rounding to an integer on every build
 * (an FMA, where the build has one, would round the exact product and decide a
 * near-tie otherwise than the baseline build).  The input projection quantizes each
 * row of x the same way (fl_project_q8_rows).  Calls of FL_Q7_MIN_ROWS sequences or
 * more quantize both to 7 bits, q in [-63, 63] (FL_QMAX): there the integer products
 * bound the run, and q + 64 in [1, 127] times an int8 weight cannot saturate
 * vpmaddubsw's int16 pairs, so the AVX2 tiles skip the sign trick (its vpsignb runs on
 * the multiply pipes: LSTM block tile, K in L1, Zen 3, 63 -> 90 GMAC/s); the int8 peer
 * quantizes x to 7 bits for the same reason (PyTorch's reduce_range).  Every build
 * uses the same grid, so results agree across CPUs as before.  Out: q as floats (hq,
 * or NULL), q + 128 as bytes padded with 128 (q = 0) to ldu (hu8, or NULL), each row's
 * scale (hscale). */
#define FL_Q7_MIN_ROWS 16
#define FL_QMAX(q7) ((q7) ? 63.0f : 127.0f)
__attribute__((optimize("fp-contract=off")))
static void fl_quantize_rows(const float *h, long ldh, long K, long rows, float *hq, long ldq,
                             uint8_t *hu8, long ldu, float *hscale, float qmax)
{
    const vf shifter = v_splat(12582912.0f);
    for (long r = 0; r < rows; r++) {
        const float *x = h + r * ldh;
        const float peak = fl_row_peak(x, K);
        const float scale = peak > 0.0f ? peak / qmax : 1.0f;
        const float inverse = 1.0f / scale;
        float *q = hq ? hq + r * ldq : NULL;
        uint8_t *u = hu8 ? hu8 + r * ldu : NULL;
        long k = 0;
        for (; k + FL_VW <= K; k += FL_VW) {
            vf v = (v_load(x + k) * inverse + shifter) - shifter;  /* round half to even */
            v = v_select(v > qmax, v_splat(qmax), v);
            v = v_select(v < -qmax, v_splat(-qmax), v);
            if (q) v_store(q + k, v);
            if (u) fl_store_u8(u + k, v);
        }
        for (; k < K; k++) {
            float v = (x[k] * inverse + 12582912.0f) - 12582912.0f;
            v = v > qmax ? qmax : (v < -qmax ? -qmax : v);
            if (q) q[k] = v;
            if (u) u[k] = (uint8_t)((int)v + 128);
        }
        if (u)
            for (; k < ldu; k++) u[k] = 128;
        hscale[r] = scale;
    }
}

#if defined(__AVX512F__)
#define FL_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))
FL_INLINE FL_VNNI_TARGET void fl_tile_vnni_g(const int G, const int R, const int q7,
                                             const int8_t *w, const int32_t *wsum,
                                             const uint8_t *hu8, long ldu, long K4,
                                             vf acc[FL_MAX_ROWS][FL_ACC])
{
    (void)q7;  /* vpdpbusd takes q + 128 whatever the grid */
    __m512i a[FL_MAX_ROWS][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) a[r][g] = _mm512_setzero_si512();
    for (long k4 = 0; k4 < K4; k4++) {
        __m512i wv[4];
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) wv[g] = _mm512_loadu_si512(w + (k4 * G + g) * 64);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            int32_t quad;
            memcpy(&quad, hu8 + r * ldu + 4 * k4, 4);
            const __m512i hv = _mm512_set1_epi32(quad);
#pragma GCC unroll 4
            for (int g = 0; g < G; g++) a[r][g] = _mm512_dpbusd_epi32(a[r][g], hv, wv[g]);
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < G; g++) {
        const __m512i offset = _mm512_slli_epi32(_mm512_loadu_si512(wsum + g * FL_U), 7);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            acc[r][g] = (vf)_mm512_cvtepi32_ps(_mm512_sub_epi32(a[r][g], offset));
    }
}
#define FL_HAVE_VNNI 1
#define FL_VNNI_FEATURE "avx512vnni"
FL_INLINE int fl_vnni_tile_rows(const int G) { return fl_tile_rows(G); }
#elif defined(__AVX2__)
/* vpdpbusd on AVX2, the same exact integer sums, by the sign trick: q = hu8 - 128 as
 * s8 (a xor), |q| as u8, each weight times the sign of its q (vpsignb), then vpmaddubsw
 * sums pairs |q| * (sign(q) w) = q w into int16, which cannot saturate (|q|, |w| <= 127:
 * 2 * 127 * 127 < 2^15), and vpmaddwd by ones sums each column's two pairs into int32.
 * Four operations per 8 columns x 4 k, columns in order, no column sums to take out.
 * Against the former form (weights sign-extended to int16, two vpmaddwd and a vphaddd:
 * eight), int8 LSTM, input size 1 (the recurrent product alone), Zen 3, 1 thread,
 * alternated runs, min / median ms: H 1024 x 50 steps 6.75-6.85 / 7.4-9.0 -> 4.43-4.59
 * / 5.5-6.8; H 256 x 100, batch 1 0.96-1.00 / 1.51-1.54 -> 0.62-0.64 / 0.70-0.71,
 * batch 4 3.8-4.0 / 4.3-4.7 -> 2.5-2.6 / 3.0-4.2.  One int32 accumulator per 8
 * columns and row: 8 output vectors per pass over K for one row, 4 for two, 2 for more,
 * so one pass reads every weight of an LSTM block at batch 1.
 * On the 7-bit grid (q7: |q| <= 63, FL_QMAX) q + 64 is in [1, 127] and vpmaddubsw takes
 * it as it is, with no sign: three operations per 8 columns x 4 k, and the column sums
 * (wsum) times 64 taken out at the end. */
#define FL_VNNI_TARGET
/* In the tile the empty asm keeps each accumulator in its register: without it GCC
 * issued every product of a k4 step first and then kept an accumulator and a constant
 * on the stack.  int8 projection 6400 x 256 @ 256 x 1024, Zen 3, 1 thread, alternated,
 * min ms: 7-bit grid 36-42 -> 26.5-27.7; 8-bit 38-41 -> 34; LSTM 256/256 batch 8 x 100
 * steps 8.9-9.8 -> 8.75-8.8, batch 1 unchanged (1.03-1.07).  q7 is a constant in each
 * instance (fl_tile_vnni's cases). */
FL_INLINE void fl_tile_vnni_g(const int G, const int R, const int q7, const int8_t *w,
                              const int32_t *wsum, const uint8_t *hu8, long ldu, long K4,
                              vf acc[FL_MAX_ROWS][FL_ACC])
{
    const int NV = G * FL_NH, V = R == 1 ? 8 : R == 2 ? 4 : 2;
    const long ldw = (long)G * FL_U * 4;
    const __m256i bias = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);
    const __m256i half = _mm256_set1_epi8(64);
    for (int j0 = 0; j0 < NV; j0 += V) {
        const int nv = NV - j0 < V ? NV - j0 : V;
        __m256i a[FL_MAX_ROWS][8];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
#pragma GCC unroll 8
            for (int v = 0; v < nv; v++) a[r][v] = _mm256_setzero_si256();
        for (long k4 = 0; k4 < K4; k4++) {
            __m256i q[FL_MAX_ROWS], u[FL_MAX_ROWS];  /* q's sign; the unsigned operand */
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                int32_t quad;
                memcpy(&quad, hu8 + r * ldu + 4 * k4, 4);
                q[r] = _mm256_xor_si256(_mm256_set1_epi32(quad), bias);
                u[r] = q7 ? _mm256_sub_epi8(_mm256_set1_epi32(quad), half) : _mm256_abs_epi8(q[r]);
            }
#pragma GCC unroll 8
            for (int v = 0; v < nv; v++) {
                const __m256i wv = _mm256_loadu_si256(
                    (const __m256i *)(w + k4 * ldw + (long)(j0 + v) * 32));
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) {
                    const __m256i signed_w = q7 ? wv : _mm256_sign_epi8(wv, q[r]);
                    a[r][v] = _mm256_add_epi32(a[r][v], _mm256_madd_epi16(
                        _mm256_maddubs_epi16(u[r], signed_w), ones));
                    __asm__("" : "+x"(a[r][v]));
                }
            }
        }
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++) {
            const __m256i offset = q7 ? _mm256_slli_epi32(_mm256_loadu_si256(
                (const __m256i *)(wsum + (j0 + v) * 8)), 6) : _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int r = 0; r < R; r++)
                acc[r][j0 + v] = (vf)_mm256_cvtepi32_ps(_mm256_sub_epi32(a[r][v], offset));
        }
    }
}
#define FL_HAVE_VNNI 1
#define FL_VNNI_FEATURE "avx2"
/* Rows of the integer tile: as many as keep a block's G * FL_NH vectors in one pass over
 * K (8 for one row, 4 for two, 2 for more).  Int8 GRU 256/256, batch 64 x 100 steps, Zen
 * 3, 1 thread, alternated, min ms, 2 rows (two passes) / 1 row: input size 1 40.2-52.1 /
 * 34.9-35.7, input 256 73.4-74.1 / 66.1-71.0 (medians, a busier hour: 113-128 / 93-99;
 * batch 8 13.6-14.6 / 11.9-12.3). */
FL_INLINE int fl_vnni_tile_rows(const int G)
{
    const int NV = G * FL_NH;
    return NV > 4 ? 1 : NV > 2 ? 2 : 4;
}
#else
#define FL_HAVE_VNNI 0
#endif

#if FL_HAVE_VNNI
static FL_VNNI_TARGET void fl_tile_vnni(int G, int R, int q7, const int8_t *w,
                                        const int32_t *wsum, const uint8_t *hu8, long ldu,
                                        long K4, vf acc[FL_MAX_ROWS][FL_ACC])
{
#if defined(__AVX512F__)
    q7 = 0;  /* vpdpbusd takes q + 128 on either grid */
#endif
    switch ((q7 ? 64 : 0) + G * 8 + R) {
#define FL_VNNI_CASE(Q, GG, RR) \
    case Q * 64 + GG * 8 + RR: fl_tile_vnni_g(GG, RR, Q, w, wsum, hu8, ldu, K4, acc); break;
#define FL_VNNI_CASES(Q) \
    FL_VNNI_CASE(Q, 4, 1) FL_VNNI_CASE(Q, 4, 2) FL_VNNI_CASE(Q, 4, 3) FL_VNNI_CASE(Q, 4, 4) \
    FL_VNNI_CASE(Q, 3, 1) FL_VNNI_CASE(Q, 3, 2) FL_VNNI_CASE(Q, 3, 3) FL_VNNI_CASE(Q, 3, 4) \
    FL_VNNI_CASE(Q, 2, 1) FL_VNNI_CASE(Q, 2, 2) FL_VNNI_CASE(Q, 2, 3) FL_VNNI_CASE(Q, 2, 4) \
    FL_VNNI_CASE(Q, 1, 1) FL_VNNI_CASE(Q, 1, 2) FL_VNNI_CASE(Q, 1, 3) FL_VNNI_CASE(Q, 1, 4)
    FL_VNNI_CASES(0)
#if !defined(__AVX512F__)
    FL_VNNI_CASES(1)
#endif
#undef FL_VNNI_CASES
#undef FL_VNNI_CASE
    default: break;
    }
}
#endif

/* Whether this build's integer product of int8 weights runs on this CPU */
static inline int fl_cpu_supports_vnni(void)
{
#if FL_HAVE_VNNI
    __builtin_cpu_init();
    return __builtin_cpu_supports(FL_VNNI_FEATURE);
#else
    return 0;
#endif
}

/* int8 with quantized h: the sums times each row's scale (column scales apart) */
FL_INLINE void fl_row_scale(const int G, const int R, const float *hscale,
                             vf acc[FL_MAX_ROWS][FL_ACC])
{
    if (!hscale) return;
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        const vf s = v_splat(hscale[r]);
#pragma GCC unroll 16
        for (int j = 0; j < G * FL_NH; j++) acc[r][j] *= s;
    }
}

/* R rows of one block: the recurrent product, then the pointwise update. */
FL_INLINE void fl_block_rows(const int mode, const int R, const fl_block_args *a)
{
    vf acc[FL_MAX_ROWS][FL_ACC];
#if FL_HAVE_VNNI
    if (a->wq)
        fl_tile_vnni(fl_gates(mode), R, a->q7, a->wq, a->wsum, a->hu8, a->ldu, (a->K + 3) / 4,
                     acc);
    else
#endif
    if (a->hq)
        fl_tile_mode(mode, R, a->wt, a->w, a->hq, a->ldq, a->K, acc, 0);
    else
        fl_tile_mode(mode, R, a->wt, a->w, a->h, a->ldh, a->K, acc, 0);
    fl_scale(fl_gates(mode), R, a->wscale, acc);
    fl_row_scale(fl_gates(mode), R, a->hscale, acc);
    fl_pointwise(mode, R, a, acc);
}

/* R rows of one block whose products are already in gates (rows of G*16, stride ldg). */
FL_INLINE void fl_block_rows_from(const int mode, const int R, const fl_block_args *a,
                                  const float *gates, long ldg)
{
    vf acc[FL_MAX_ROWS][FL_ACC];
    const int G = fl_gates(mode);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 16
        for (int j = 0; j < G * FL_NH; j++) acc[r][j] = v_load(gates + r * ldg + j * FL_VW);
    fl_scale(G, R, a->wscale, acc);
    fl_row_scale(G, R, a->hscale, acc);
    fl_pointwise(mode, R, a, acc);
}

FL_INLINE void fl_advance(const int mode, fl_block_args *a, long rows)
{
    a->h += rows * a->ldh; a->x += rows * a->ldx; a->c += rows * a->ldc;
    a->h_out += rows * a->ldo;
    a->h_self += rows * (mode == FL_GRU_N ? a->ldr2 : a->ldh);
    if (a->rh) a->rh += rows * a->ldr;
    if (a->z) a->z += rows * a->ldr;
    if (a->hq) a->hq += rows * a->ldq;
    if (a->hscale) a->hscale += rows;
    if (a->hu8) a->hu8 += rows * a->ldu;
}

/* CALL(R) with the row count n (1 to FL_MAX_ROWS) as a constant */
#define FL_ROWS_OF(n, CALL) \
    switch (n) { \
    case 4: CALL(4); break; case 3: CALL(3); break; case 2: CALL(2); break; \
    default: CALL(1); break; }

/* The pointwise update of n_rows rows whose products are in gates (n_rows, G*16). */
static void fl_pointwise_from(int mode, long n_rows, const fl_block_args *args, const float *gates)
{
    const long ldg = (long)fl_gates(mode) * FL_U;
    const long T = fl_tile_rows(fl_gates(mode));
    fl_block_args a = *args;
    long r = 0;
#define FL_FROM(RR) fl_block_rows_from(mode, RR, &a, gates + r * ldg, ldg)
    for (; r + T <= n_rows; r += T) {
        FL_ROWS_OF(T, FL_FROM)
        fl_advance(mode, &a, T);
    }
    if (r < n_rows) FL_ROWS_OF(n_rows - r, FL_FROM)
#undef FL_FROM
}

/* Ask for the input projection rows a block's pointwise update will read, before
 * its products run: the rows are a page apart in xproj, where the hardware
 * prefetcher does not follow (measured, bf16 thr_med on AMX: the loads of x took
 * a quarter of the run without this). */
FL_INLINE void fl_prefetch_x(int mode, long n_rows, const fl_block_args *a)
{
    const int G = fl_gates(mode == FL_GRU_N ? FL_GRU : mode);
    for (long r = 0; r < n_rows; r++)
        for (int g = 0; g < G; g++) __builtin_prefetch(a->x + r * a->ldx + g * FL_U);
}

/* A chunk product's tile of R rows x NV vectors: acc from o (stride ldo) after the first
 * K chunk (k0 > 0), else zero */
FL_INLINE void fl_acc_load(int R, int NV, const float *o, long ldo, long k0,
                           vf acc[][FL_ACC])
{
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NV; j++)
            acc[r][j] = k0 ? v_load(o + r * ldo + j * FL_VW) : v_splat(0.0f);
}

/* ... and acc back to o, on the last chunk plus the bias (not read otherwise) */
FL_INLINE void fl_acc_store(int R, int NV, float *o, long ldo, const float *bias, int last,
                            vf acc[][FL_ACC])
{
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NV; j++) {
            vf v = acc[r][j];
            if (last) v += v_load(bias + j * FL_VW);
            v_store(o + r * ldo + j * FL_VW, v);
        }
}

/* FL_COL_ROWS rows x FL_PAIR vectors of a chunk product (fl_chunk_product): w, bias and
 * o at the tile's first column, ldw the weights' row length. */
FL_INLINE void fl_chunk_cols(int wt, const void *w, long ldw, const float *bias,
                             const float *x, long ldp, float *o, long ldo, long k0, long kc,
                             int last)
{
    vf acc[FL_COL_ROWS][FL_ACC];
    fl_acc_load(FL_COL_ROWS, FL_PAIR, o, ldo, k0, acc);
    switch (wt) {
    case FL_BF16: fl_tile_nv(FL_PAIR, ldw, FL_COL_ROWS, FL_BF16, w, x, ldp, kc, acc, 1); break;
    case FL_I8: fl_tile_nv(FL_PAIR, ldw, FL_COL_ROWS, FL_I8, w, x, ldp, kc, acc, 1); break;
    default: fl_tile_nv(FL_PAIR, ldw, FL_COL_ROWS, FL_F32, w, x, ldp, kc, acc, 1); break;
    }
    fl_acc_store(FL_COL_ROWS, FL_PAIR, o, ldo, bias, last, acc);
}

/* One K chunk [k0, k0 + kc) of a product of ``rows`` rows with one block's weights:
 * o (stride ldo) (+)= x rows (xr, stride ldp, already offset to k0) @ the chunk's
 * weights w, in tiles of fl_tile_rows(G) rows; on the ``last`` chunk the bias is added
 * (not read otherwise).  bias and o point at the block's columns; int8 weights give the
 * unscaled sums. */
FL_INLINE void fl_chunk_product(int G, int wt, const void *w, const float *bias,
                                const float *xr, long ldp, float *o, long ldo, long rows,
                                long k0, long kc, int last)
{
    vf acc[FL_MAX_ROWS][FL_ACC];
    const int NV = G * FL_NH;
    long r0 = 0;
#if FL_VW < 16
    /* Narrow builds: tiles of FL_COL_ROWS rows x FL_PAIR vectors, a column pair at a
     * time, so a weight vector loaded serves 6 rows (with fl_tile_rows(4) = 1 row
     * of all 8 vectors, every FMA loaded its weights) */
    const long full = rows / FL_COL_ROWS * FL_COL_ROWS;
    for (int j0 = 0; j0 < NV; j0 += FL_PAIR)
        for (r0 = 0; r0 < full; r0 += FL_COL_ROWS)
            fl_chunk_cols(wt, fl_wptr(wt, w, j0 * FL_VW), (long)G * FL_U,
                          bias ? bias + j0 * FL_VW : NULL, xr + r0 * ldp, ldp,
                          o + r0 * ldo + j0 * FL_VW, ldo, k0, kc, last);
    r0 = full;
#endif
    const long T = fl_tile_rows(G);
    for (; r0 < rows; r0 += T) {
        const long R = rows - r0 < T ? rows - r0 : T;
        const float *x = xr + r0 * ldp;
        float *out = o + r0 * ldo;
        fl_acc_load(R, NV, out, ldo, k0, acc);
#define FL_CHUNK_TILE(RR) fl_tile_g(G, RR, wt, w, x, ldp, kc, acc, 1)
        FL_ROWS_OF(R, FL_CHUNK_TILE)
#undef FL_CHUNK_TILE
        fl_acc_store(R, NV, out, ldo, bias, last, acc);
    }
}

/* Many rows: the product over K in chunks whose weights stay in L1 while every
 * row tile passes, partial sums kept in scratch (n_rows, G*16); then pointwise. */
static void fl_block_chunked(int mode, long n_rows, const fl_block_args *args, float *scratch)
{
    const int G = fl_gates(mode);
    const long ldg = (long)G * FL_U;
    const float *h = args->hq ? args->hq : args->h;
    const long ldh = args->hq ? args->ldq : args->ldh;
    fl_prefetch_x(mode, n_rows, args);
    for (long k0 = 0; k0 < args->K; k0 += FL_KCHUNK) {
        const long kc = args->K - k0 < FL_KCHUNK ? args->K - k0 : FL_KCHUNK;
        fl_chunk_product(G, args->wt, fl_wptr(args->wt, args->w, k0 * ldg), NULL, h + k0,
                         ldh, scratch, ldg, n_rows, k0, kc, 0);
    }
    fl_pointwise_from(mode, n_rows, args, scratch);
}

/* One block, n_rows rows (any count), in tiles of fl_tile_rows(G).  scratch
 * (n_rows * G * 16 floats, or NULL) enables the K-chunked path for many rows. */
static void fl_block(int mode, long n_rows, const fl_block_args *args, float *scratch)
{
#if FL_HAVE_VNNI
    const long T = args->wq ? fl_vnni_tile_rows(fl_gates(mode)) : fl_tile_rows(fl_gates(mode));
#else
    const long T = fl_tile_rows(fl_gates(mode));
#endif
    /* int8's integer product reads a quarter of the bytes: a block's weights stay in L1
     * across row tiles without K chunks.  On AVX2 too since the sign trick (Zen 3, 1
     * thread, int8, 100 steps, alternated, min ms, integer / 6-row float tiles: LSTM
     * 256/256 batch 8 11.1-11.3 / 13.9-14.8, batch 64 96-107 / 99-108, 512/512 batch
     * 64 337 / 409, GRU 256/256 batch 64 69-71 / 76-77) */
    const int chunk = !args->wq && n_rows > T;
    if (scratch && chunk && args->K > FL_KCHUNK) {
        fl_block_chunked(mode, n_rows, args, scratch);
        return;
    }
    fl_block_args a = *args;
    long r = 0;
#define FL_ROWS(RR) fl_block_rows(mode, RR, &a)
    for (; r + T <= n_rows; r += T) {
        FL_ROWS_OF(T, FL_ROWS)
        fl_advance(mode, &a, T);
    }
    if (r < n_rows) FL_ROWS_OF(n_rows - r, FL_ROWS)
#undef FL_ROWS
}

/* bf16 weights on CPUs with AVX512-BF16 and no AMX tiles (Zen 4 and 5, or AMX off):
 * at up to FL_BF16DP_MAX_ROWS rows, vdpbf16ps multiplies a pair of h values, rounded to
 * bf16 as on every bf16 path, by a pair of weights in the tiles' pair order (a->wp,
 * a->a16), 32 products an instruction where the FMA path widens each weight and takes
 * 16.  The products are exact in fp32 either way, so the two paths differ only in the
 * order of the fp32 sums.  Measured on this Xeon with AMX off, bf16 LSTM 256/256, 100
 * steps, 1 thread, median ms, widened vs vdpbf16ps, alternated twice: batch 1
 * 1.48 vs 1.13-1.22, 2 2.29-2.30 vs 2.05-2.08, 3 2.96-3.07 vs 3.10-3.26, 4 3.70-4.00
 * vs 3.96-4.05, 8 7.20-7.45 vs 7.75-8.12; lat_small 0.32-0.33 vs 0.28-0.29, gru_med
 * 1.02-1.04 vs 0.85-0.91.  From 3 rows the widened FMAs, which have two ports here,
 * keep up; a CPU whose vdpbf16ps has two (Zen 5) may gain at every row count, not
 * measured. */
#define FL_BF16DP_MAX_ROWS 2
#if defined(__AVX512F__)
#define FL_HAVE_BF16DP 1
#define FL_BF16DP_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

/* acc[r][g] = sum over pairs k2 of h pair (r, k2) . w pair (k2, g): R rows of h as bf16
 * (stride ldh elements, pairs adjacent), w (K2, G, 16, 2) bf16 */
FL_INLINE FL_BF16DP_TARGET void fl_tile_bf16dp_g(const int G, const int R, const uint16_t *w,
                                                 const uint16_t *h, long ldh, long K2,
                                                 vf acc[FL_MAX_ROWS][FL_ACC])
{
    __m512 a[FL_MAX_ROWS][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) a[r][g] = _mm512_setzero_ps();
    long k2 = 0;
    if (R == 1) {  /* one row: two chains, over even and odd pairs, as fl_tile */
        __m512 b[4];
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) b[g] = _mm512_setzero_ps();
        for (; k2 + 1 < K2; k2 += 2) {
            int32_t pairs[2];
            memcpy(pairs, h + 2 * k2, 8);
            const __m512bh h0 = (__m512bh)_mm512_set1_epi32(pairs[0]);
            const __m512bh h1 = (__m512bh)_mm512_set1_epi32(pairs[1]);
#pragma GCC unroll 4
            for (int g = 0; g < G; g++) {
                a[0][g] = _mm512_dpbf16_ps(
                    a[0][g], h0, (__m512bh)_mm512_loadu_si512(w + (k2 * G + g) * 2 * FL_U));
                b[g] = _mm512_dpbf16_ps(
                    b[g], h1, (__m512bh)_mm512_loadu_si512(w + ((k2 + 1) * G + g) * 2 * FL_U));
            }
        }
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) a[0][g] = _mm512_add_ps(a[0][g], b[g]);
    }
    for (; k2 < K2; k2++) {
        __m512i wv[4];
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) wv[g] = _mm512_loadu_si512(w + (k2 * G + g) * 2 * FL_U);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            int32_t pair;
            memcpy(&pair, h + r * ldh + 2 * k2, 4);
            const __m512bh hv = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
            for (int g = 0; g < G; g++) a[r][g] = _mm512_dpbf16_ps(a[r][g], hv, (__m512bh)wv[g]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) acc[r][g] = (v16)a[r][g];
}

static FL_BF16DP_TARGET void fl_tile_bf16dp(int G, int R, const uint16_t *w, const uint16_t *h,
                                            long ldh, long K2, vf acc[FL_MAX_ROWS][FL_ACC])
{
    switch (G * 8 + R) {
#define FL_BF16DP_CASE(GG, RR) \
    case GG * 8 + RR: fl_tile_bf16dp_g(GG, RR, w, h, ldh, K2, acc); break;
    FL_BF16DP_CASE(4, 1) FL_BF16DP_CASE(4, 2) FL_BF16DP_CASE(3, 1) FL_BF16DP_CASE(3, 2)
    FL_BF16DP_CASE(2, 1) FL_BF16DP_CASE(2, 2) FL_BF16DP_CASE(1, 1) FL_BF16DP_CASE(1, 2)
#undef FL_BF16DP_CASE
    default: break;
    }
}

/* One block's recurrent product on vdpbf16ps, then its pointwise update: n_rows <=
 * FL_BF16DP_MAX_ROWS rows of h rounded to bf16 in a->a16 (rows of a->lda16), the weights
 * in a->wp (a->K2p pairs). */
static FL_BF16DP_TARGET void fl_block_bf16dp(int mode, long n_rows, const fl_block_args *args)
{
    const int G = fl_gates(mode);
    vf acc[FL_MAX_ROWS][FL_ACC];
    fl_prefetch_x(mode, n_rows, args);
    if (n_rows == 1) {
        fl_tile_bf16dp(G, 1, args->wp, args->a16, args->lda16, args->K2p, acc);
        fl_pointwise(mode, 1, args, acc);
    } else if (n_rows == 2) {
        fl_tile_bf16dp(G, 2, args->wp, args->a16, args->lda16, args->K2p, acc);
        fl_pointwise(mode, 2, args, acc);
    }
}
#else
#define FL_HAVE_BF16DP 0
/* Never entered: fl_cpu_supports_bf16dp() is 0 in builds without AVX-512. */
static void fl_block_bf16dp(int mode, long n_rows, const fl_block_args *args)
{
    (void)mode; (void)n_rows; (void)args;
}
#endif

static inline int fl_cpu_supports_bf16dp(void)
{
#if FL_HAVE_BF16DP
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

#include "fastlstm_amx.h"

/* out (N, ldo) = x (N, ldx) @ w_blocks + bias: the input projection of fp32 and bf16
 * weights (int8's: fl_project_q8_rows).
 * w_blocks: n_blocks blocks of (K, G, 16) of weight type wt; bias (n_blocks * G * 16,).
 * Rows [row0, row1) only, so threads can split the rows.  Loop order: panels of
 * rows, then blocks, then K chunks, then tiles of rows, so each block's weights are
 * read once per panel rather than once per tile.
 * bf16 weights multiply x as the sum of its x_parts leading bf16 parts
 * (FL_X_PARTS), as the AMX tiles do (fl_bf16_parts_sum_rows), so both paths give the same
 * results up to fp32 rounding.  Their K chunks come before the blocks, so a panel's
 * chunk of x is rounded once for all blocks; fp32 keeps blocks first, which keeps a
 * block's partial sums in L1 between chunks (fp32 6400 x 512 @ 512 x 2048, harness,
 * 1 thread: 186 GFLOP/s blocks first, 160 chunks first). */
static void fl_project_rows(int G, int wt, const void *w_blocks, long n_blocks, long K,
                            const float *bias, const float *x, long ldx, float *out, long ldo,
                            long row0, long row1, int x_parts)
{
    const long width = (long)G * FL_U;
    float x_sum[wt == FL_F32 ? 1 : FL_PANEL_ROWS * FL_KCHUNK_BF16];
    for (long p0 = row0; p0 < row1; p0 += FL_PANEL_ROWS) {
        const long p1 = p0 + FL_PANEL_ROWS < row1 ? p0 + FL_PANEL_ROWS : row1;
        if (wt == FL_F32) {
            for (long blk = 0; blk < n_blocks; blk++)
                for (long k0 = 0; k0 < K; k0 += FL_KCHUNK) {
                    const long kc = K - k0 < FL_KCHUNK ? K - k0 : FL_KCHUNK;
                    fl_chunk_product(G, wt, fl_wptr(wt, w_blocks, (blk * K + k0) * width),
                                     bias + blk * width, x + p0 * ldx + k0, ldx,
                                     out + p0 * ldo + blk * width, ldo, p1 - p0, k0, kc,
                                     k0 + kc == K);
                }
            continue;
        }
        for (long k0 = 0; k0 < K; k0 += FL_KCHUNK_BF16) {
            const long kc = K - k0 < FL_KCHUNK_BF16 ? K - k0 : FL_KCHUNK_BF16;
            fl_bf16_parts_sum_rows(x + p0 * ldx + k0, ldx, kc, p1 - p0, x_sum, FL_KCHUNK_BF16,
                                   x_parts);
            for (long blk = 0; blk < n_blocks; blk++)
                fl_chunk_product(G, wt, fl_wptr(wt, w_blocks, (blk * K + k0) * width),
                                 bias + blk * width, x_sum, FL_KCHUNK_BF16,
                                 out + p0 * ldo + blk * width, ldo,
                                 p1 - p0, k0, kc, k0 + kc == K);
        }
    }
}

/* int8's input projection quantizes each row of x as the recurrent product quantizes h
 * (fl_quantize_rows: symmetric, its own scale max|x| / 127), so the products are exact
 * integer sums, on the integer tiles of fl_tile_vnni where wq is given, else as sums of
 * integer-valued floats against the widened weights (K chunks of fl_chunk_product), then
 * times each column's and each row's scale, plus the bias, as the recurrent product.
 * The peers quantize x as well: PyTorch's dynamic int8 per tensor (7 bits); ONNX
 * Runtime's per tensor.  Against x rounded to bf16 times weights widened to float32
 * (Zen 3, 1 thread, AVX2, min of 20 ms, harness): 6400 x 256 @ 256 x 1024 63.9 -> 41.0,
 * 50 x 1024 @ 1024 x 4096 (x in two bf16 parts) 9.5 -> 4.1; in the layer's projection
 * of thr_med (6400 x 256 @ 256 x 1024) 54-68 -> 27 with the 7-bit grid (FL_QMAX) and
 * the tiles' register fix (fl_tile_vnni_g).
 * Rows are quantized a panel of FL_Q8_PANEL_ROWS at a time, each row once for all blocks,
 * into per-thread scratch of fl_q8_scratch_bytes(K): the panel's scales, then its rows as
 * bytes (q + 128, rows of fl_q8_ldu(K)) or, without wq, as floats (rows of K). */
#define FL_Q8_PANEL_ROWS 32
static inline long fl_q8_ldu(long K) { return (K + 63) / 64 * 64; }
static inline long fl_q8_scratch_bytes(long K)
{
    const long row = fl_q8_ldu(K) > 4 * K ? fl_q8_ldu(K) : 4 * K;
    return FL_Q8_PANEL_ROWS * ((long)sizeof(float) + row);
}

/* R rows of G*FL_NH vectors: acc times the column scales ws, times each row's scale
 * xscale[r], plus the bias, to o (stride ldo) */
FL_INLINE void fl_q8_store(int G, int R, vf acc[FL_MAX_ROWS][FL_ACC], const float *ws,
                           const float *xscale, const float *bias, float *o, long ldo)
{
    fl_scale(G, R, ws, acc);
    fl_row_scale(G, R, xscale, acc);
    for (int r = 0; r < R; r++)
        for (int j = 0; j < G * FL_NH; j++)
            v_store(o + r * ldo + j * FL_VW, acc[r][j] + v_load(bias + j * FL_VW));
}

/* Quantizes ``rows`` (<= FL_Q8_PANEL_ROWS) rows of x (K columns, stride ldx) into
 * scratch, on the 7-bit grid when q7 (FL_QMAX): as bytes when ``as_bytes`` (for wq),
 * else as floats. */
static void fl_q8_quantize_panel(const float *x, long ldx, long K, long rows, int as_bytes,
                                 int q7, uint8_t *scratch)
{
    float *xscale = (float *)scratch;
    uint8_t *data = scratch + FL_Q8_PANEL_ROWS * sizeof(float);
    fl_quantize_rows(x, ldx, K, rows, as_bytes ? NULL : (float *)data, K,
                     as_bytes ? data : NULL, fl_q8_ldu(K), xscale, FL_QMAX(q7));
}

/* out (rows, ldo) = the quantized panel in scratch (fl_q8_quantize_panel, as bytes when
 * wq is given) @ n_blocks blocks of int8 weights, times the column scales wscale and
 * the rows' scales, plus bias.  w_blocks (n_blocks, K, G*16); wq the same weights
 * (n_blocks, fl_q8_ldu(K) / 4, G*16, 4) and wsum their column sums (n_blocks, G*16), or
 * NULL; wscale, bias (n_blocks * G*16,); out at block 0's columns. */
static void fl_q8_panel_product(int G, const int8_t *w_blocks, const int8_t *wq,
                                const int32_t *wsum, const float *wscale, long n_blocks,
                                long K, const float *bias, const uint8_t *scratch, long rows,
                                int q7, float *out, long ldo)
{
    const long width = (long)G * FL_U, ldu = fl_q8_ldu(K);
    const float *xscale = (const float *)scratch;
    const uint8_t *data = scratch + FL_Q8_PANEL_ROWS * sizeof(float);
    vf acc[FL_MAX_ROWS][FL_ACC];
    for (long blk = 0; blk < n_blocks; blk++) {
        const float *ws = wscale + blk * width, *b = bias + blk * width;
        float *o = out + blk * width;
#if FL_HAVE_VNNI
        if (wq) {
            const long T = fl_vnni_tile_rows(G);
            for (long r0 = 0; r0 < rows; r0 += T) {
                const int R = rows - r0 < T ? (int)(rows - r0) : (int)T;
                fl_tile_vnni(G, R, q7, wq + blk * ldu * width, wsum + blk * width,
                             data + r0 * ldu, ldu, (K + 3) / 4, acc);
                fl_q8_store(G, R, acc, ws, xscale + r0, b, o + r0 * ldo, ldo);
            }
            continue;
        }
#else
        (void)wq;
        (void)wsum;
        (void)q7;
#endif
        const float *xq = (const float *)data;
        for (long k0 = 0; k0 < K; k0 += FL_KCHUNK) {
            const long kc = K - k0 < FL_KCHUNK ? K - k0 : FL_KCHUNK;
            fl_chunk_product(G, FL_I8, w_blocks + (blk * K + k0) * width, NULL, xq + k0, K,
                             o, ldo, rows, k0, kc, 0);
        }
        for (long r0 = 0; r0 < rows; r0 += FL_MAX_ROWS) {
            const int R = rows - r0 < FL_MAX_ROWS ? (int)(rows - r0) : FL_MAX_ROWS;
            fl_acc_load(R, G * FL_NH, o + r0 * ldo, ldo, 1, acc);
            fl_q8_store(G, R, acc, ws, xscale + r0, b, o + r0 * ldo, ldo);
        }
    }
}

/* int8's input projection of rows [row0, row1): out (, ldo) = x (, ldx) quantized per row
 * @ the blocks' weights (see fl_q8_panel_product), a panel at a time; scratch: this
 * thread's fl_q8_scratch_bytes(K). */
static void fl_project_q8_rows(int G, const int8_t *w_blocks, const int8_t *wq,
                               const int32_t *wsum, const float *wscale, long n_blocks, long K,
                               const float *bias, const float *x, long ldx, float *out, long ldo,
                               long row0, long row1, int q7, uint8_t *scratch)
{
    for (long p0 = row0; p0 < row1; p0 += FL_Q8_PANEL_ROWS) {
        const long rows = row1 - p0 < FL_Q8_PANEL_ROWS ? row1 - p0 : FL_Q8_PANEL_ROWS;
        fl_q8_quantize_panel(x + p0 * ldx, ldx, K, rows, wq != NULL, q7, scratch);
        fl_q8_panel_product(G, w_blocks, wq, wsum, wscale, n_blocks, K, bias, scratch, rows, q7,
                            out + p0 * ldo, ldo);
    }
}

#if FL_HAVE_AMX
/* One block on AMX: the products into scratch (rows padded to 16 up to 16 rows, else
 * to FL_AMX_ROWS; G*16 columns), then the pointwise update of n_rows rows.  int8 takes
 * h quantized (a->hu8, a->wq); bf16 and fp32 take h split in bf16 parts (a->a16) and
 * the weights in pair order (a->wp, fp32's in three parts).  One tile of 16 rows serves
 * bf16 (one part) up to 16 rows, whose 2x2-tile pass would load the weights for 32.
 * With a->x16 (bf16) the step's input product joins the recurrent one in the tiles
 * (fl_amx_gates_xh) at every row count. */
static void fl_block_amx(int mode, long n_rows, const fl_block_args *args, float *scratch)
{
    const int G = fl_gates(mode);
    const long ldg = (long)G * FL_U;
    const long rows = (n_rows + FL_AMX_ROWS - 1) / FL_AMX_ROWS * FL_AMX_ROWS;
    if (args->x16) {
        fl_amx_gates_xh(G, rows, (const uint8_t *)args->x16, args->ldx16 * 2, args->Kx2p / 16,
                        (const uint8_t *)args->wxp, (const uint8_t *)args->a16, args->lda16 * 2,
                        args->K2p / 16, (const uint8_t *)args->wp, scratch, ldg);
        fl_pointwise_from(mode, n_rows, args, scratch);
        return;
    }
    fl_prefetch_x(mode, n_rows, args);
    if (args->wq)
        fl_amx_gates(G, rows, 1, args->hu8, args->ldu, 0, 1, args->ldu / 64,
                     (const uint8_t *)args->wq, 1, 0, args->wsum, NULL, scratch, ldg);
    else if (n_rows <= 16 && args->a16_parts == 1)
        fl_amx_gates16(G, (const uint8_t *)args->a16, args->lda16 * 2, args->K2p / 16,
                       (const uint8_t *)args->wp, scratch, ldg);
    else
        fl_amx_gates(G, rows, 0, (const uint8_t *)args->a16, args->lda16 * 2, args->a16_part * 2,
                     args->a16_parts, args->K2p / 16, (const uint8_t *)args->wp, args->wp_parts,
                     args->wp_part * 2, NULL, NULL, scratch, ldg);
    fl_pointwise_from(mode, n_rows, args, scratch);
}

/* The input projection on AMX: out rows [row0, row1) = x @ w + bias, x split in
 * x_parts bf16 parts (FL_X_PARTS), weights in pair order (n_blocks, K2p, G*16, 2) (bf16;
 * int8's projection quantizes x and runs on integer vectors, fl_project_q8_rows).
 * a16: FL_AMX_PROJECT_A16_ROWS(w_parts) * fl_amx_lda16(K2p) bf16 and stage:
 * FL_AMX_ROWS * G*16 floats of scratch.
 * fp32 (w_parts = FL_AMX_PARTS: w_pairs holds each block's three parts, (3, K2p, G*16, 2)):
 * x in three parts too, panels of FL_AMX_F32_PANEL_ROWS rows, row1 - row0 a multiple of
 * FL_AMX_ROWS.  An earlier version (32-row panels, every batch size) lost in fastlstm
 * bench at batch 1 (lat_small 1t 0.24 vs 0.21 ms, gru_med 0.83-0.90 vs 0.73-0.81): the
 * caller now keeps fewer than FL_AMX_F32_PROJECT_ROWS rows on FMAs.  With it and the
 * recurrent products on tiles, LSTM 256/256 batch 64 x 100 steps, 1 thread: 43.2-46.4
 * ms on FMAs -> 37.0; GRU 33.6-35.2 -> 28.9; LSTM 512/512 171.5-177.6 -> 152.
 * Whole tile pairs of rows start their tiles from the bias
 * and store them straight into out; the rest go through stage.  Without the stage
 * pass, bf16 256/256, batch 64 x 100 steps, median ms, builds alternated 6 times:
 * LSTM 1 thread 17.3-17.9 -> 16.6-17.4, 2 threads 12.2-12.7 -> 11.2-12.3; GRU 1
 * thread 12.2 -> 11.5. */
static void fl_project_amx(int G, const uint16_t *w_pairs, long K2p, int w_parts,
                           long n_blocks, long K, const float *bias,
                           const float *x, long ldx, float *out, long ldo, long row0, long row1,
                           uint16_t *a16, float *stage, int x_parts)
{
    if (w_parts > 1) x_parts = w_parts;
    const long width = (long)G * FL_U, lda = fl_amx_lda16(K2p);
    const int wide = n_blocks * K2p * width * 4 > FL_AMX_WIDE_PANEL_BYTES;
    const long panel = w_parts > 1 ? FL_AMX_F32_PANEL_ROWS
                       : wide ? FL_AMX_WIDE_PANEL_ROWS : FL_AMX_ROWS;
    const long part = panel * lda;
    for (long p0 = row0; p0 < row1; p0 += panel) {
        const long n = row1 - p0 < panel ? row1 - p0 : panel;
        fl_bf16_split_rows(x + p0 * ldx, ldx, K, n, a16, part, x_parts, lda);
        for (long blk = 0; blk < n_blocks; blk++) {
            const uint8_t *w = (const uint8_t *)(w_pairs + blk * w_parts * K2p * width * 2);
            const long n_direct = n / FL_AMX_ROWS * FL_AMX_ROWS;
            if (n_direct)
                fl_amx_gates(G, n_direct, 0, (const uint8_t *)a16, lda * 2, part * 2, x_parts,
                             K2p / 16, w, w_parts, K2p * width * 4, NULL, bias + blk * width,
                             out + p0 * ldo + blk * width, ldo);
            /* the last rows short of a tile pair: FL_AMX_ROWS at a time through stage
             * (the split rows past n are in a16, not stored) */
            for (long s0 = n_direct; s0 < n; s0 += FL_AMX_ROWS) {
                fl_amx_gates(G, FL_AMX_ROWS, 0, (const uint8_t *)(a16 + s0 * lda), lda * 2,
                             part * 2, x_parts, K2p / 16, w, w_parts, K2p * width * 4, NULL, NULL,
                             stage, width);
                for (long r = 0; r < FL_AMX_ROWS && s0 + r < n; r++)
                    for (long c = 0; c < width; c += FL_U) {
                        v_store(out + (p0 + s0 + r) * ldo + blk * width + c,
                                v_load(stage + r * width + c) + v_load(bias + blk * width + c));
                    }
            }
        }
    }
}
#else
/* Never entered: fl_amx_usable() is 0 in builds without AMX.  Defined so the
 * Cython module has one source for every instruction set. */
static void fl_block_amx(int mode, long n_rows, const fl_block_args *args, float *scratch)
{
    (void)mode; (void)n_rows; (void)args; (void)scratch;
}
static void fl_project_amx(int G, const uint16_t *w_pairs, long K2p, int w_parts,
                           long n_blocks, long K, const float *bias,
                           const float *x, long ldx, float *out, long ldo, long row0, long row1,
                           uint16_t *a16, float *stage, int x_parts)
{
    (void)G; (void)w_pairs; (void)K2p; (void)w_parts; (void)n_blocks; (void)K;
    (void)bias; (void)x; (void)ldx; (void)out; (void)ldo; (void)row0; (void)row1; (void)a16;
    (void)stage; (void)x_parts;
}
static void fl_amx_begin(void) {}
static void fl_amx_end(void) {}
#endif

/* Flush denormals to zero (and treat denormal inputs as zero) while a kernel runs:
 * denormal arithmetic is many times slower.  Returns the previous control word. */
static inline unsigned fl_ftz_enter(void)
{
#if defined(__SSE__)
    unsigned old = _mm_getcsr();
    _mm_setcsr(old | 0x8040);
    return old;
#else
    return 0;
#endif
}

static inline void fl_ftz_exit(unsigned old)
{
#if defined(__SSE__)
    _mm_setcsr(old);
#else
    (void)old;
#endif
}

/* Team threads on CPUs of their own.  A worker woken for a call lands where Linux
 * puts it, often on the caller's CPU (wake-affine), and the per-step barrier then
 * waits for a CPU to be shared (2 threads, lat_med, calls 20 ms apart, 200 calls: p99
 * 12-13 ms against 2.6-2.9 typical; pinned 3.8-5, bench/sporadic.py).  The caller is
 * never pinned.  Worker tid goes to the tid-th CPU of a plan made at the call: the
 * caller's current CPU first, then allowed CPUs of other cores (SMT siblings share a
 * core's FMA units; a core is known by the first CPU of its thread_siblings_list),
 * then the remaining ones.  A worker keeps its CPU while the plan does not change, so
 * pinning costs a system call only when the caller has moved. */
#define FL_TEAM_MAX_CPUS 1024
typedef struct {
    int n;                    /* threads with a CPU planned (0: do not pin) */
    int cpus[FL_TEAM_MAX_CPUS];
} fl_team_cpus;

#ifdef __linux__
static int fl_core_keys[FL_TEAM_MAX_CPUS];
static int fl_core_keys_ready;

/* The core of each CPU (the first CPU of its thread_siblings_list, or the CPU itself
 * where sysfs does not say), read once. */
static const int *fl_core_of_cpu(void)
{
    if (__atomic_load_n(&fl_core_keys_ready, __ATOMIC_ACQUIRE)) return fl_core_keys;
    long configured = sysconf(_SC_NPROCESSORS_CONF);
    if (configured < 1 || configured > FL_TEAM_MAX_CPUS) configured = FL_TEAM_MAX_CPUS;
    for (int cpu = 0; cpu < FL_TEAM_MAX_CPUS; cpu++) {
        int key = cpu;
        if (cpu < configured) {
            char path[96];
            snprintf(path, sizeof path,
                     "/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list", cpu);
            FILE *file = fopen(path, "r");
            if (file) {
                if (fscanf(file, "%d", &key) != 1 || key < 0 || key >= FL_TEAM_MAX_CPUS)
                    key = cpu;
                fclose(file);
            }
        }
        __atomic_store_n(&fl_core_keys[cpu], key, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&fl_core_keys_ready, 1, __ATOMIC_RELEASE);
    return fl_core_keys;
}
#endif

/* Plan the CPUs of a team of n_threads for a call from this thread (called by the
 * caller before the team starts): t->cpus[0] is where the caller runs now. */
static void fl_team_plan(fl_team_cpus *t, int n_threads)
{
    t->n = 0;
#ifdef __linux__
    cpu_set_t allowed;
    int list[FL_TEAM_MAX_CPUS], m = 0, here = -1;
    const int current = sched_getcpu();
    if (n_threads < 2 || current < 0 || sched_getaffinity(0, sizeof allowed, &allowed) != 0)
        return;
    const unsigned long *words = (const unsigned long *)&allowed;  /* glibc and musl */
    const int bits_per_word = 8 * (int)sizeof(unsigned long);
    for (int w = 0; w < (int)(sizeof allowed / sizeof *words); w++)
        for (unsigned long bits = words[w]; bits; bits &= bits - 1) {
            const int cpu = w * bits_per_word + __builtin_ctzl(bits);
            if (cpu >= FL_TEAM_MAX_CPUS) break;
            if (cpu == current) here = m;
            list[m++] = cpu;
        }
    if (here < 0 || m < n_threads) return;
    const int *core = fl_core_of_cpu();
    int n = 0;
    t->cpus[n++] = current;
    for (int pass = 0; pass < 2 && n < n_threads; pass++)
        for (int step = 1; step < m && n < n_threads; step++) {
            const int cpu = list[(here + step) % m];
            int taken = 0;
            for (int i = 0; i < n && !taken; i++)
                taken = t->cpus[i] == cpu || (pass == 0 && core[t->cpus[i]] == core[cpu]);
            if (!taken) t->cpus[n++] = cpu;
        }
    if (n == n_threads) t->n = n;
#else
    (void)n_threads;
#endif
}

#ifdef __linux__
static __thread int fl_worker_cpu = -1;
#endif

/* Team thread tid (> 0) onto its planned CPU; the caller (tid 0) stays as it is. */
static void fl_team_pin(const fl_team_cpus *t, int tid)
{
#ifdef __linux__
    if (tid <= 0 || tid >= t->n) return;
    const int cpu = t->cpus[tid];
    /* each build's module keeps its own record, and may share libgomp's workers */
    if (cpu == fl_worker_cpu && sched_getcpu() == cpu) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof one, &one) == 0) fl_worker_cpu = cpu;
#else
    (void)t; (void)tid;
#endif
}

/* The per-step barrier of a thread team.  OpenMP's barrier spin-waits: when
 * another process holds one of the cores, a spinning thread keeps its partner
 * off the CPU for a whole time slice at every step (measured, 2 threads with
 * the other core busy: lat_med 1.3 ms -> 351 ms).  This one spins briefly, then
 * yields the core with sched_yield so a descheduled partner can finish;
 * release/acquire order h_nxt's writes before reads.
 * A team of two counts the barriers each thread has reached, each count on a cache
 * line of its own that only its thread writes: a thread passes when its partner's
 * count has caught up with its own, one line moving between the cores, where a shared
 * counter moves its line twice (the last arrival's read-modify-write, then the
 * waiter's read).  Measured, 2 threads, batch 1, median ms of 400 calls, the two
 * builds alternated three times: LSTM 64/128 0.188-0.195 -> 0.180-0.186, LSTM
 * 256/256 0.556-0.571 -> 0.537-0.542, GRU 256 0.439-0.454 -> 0.429-0.437.  Spinning
 * without pause was no faster.  Larger teams use a shared counter and a generation
 * number. */
typedef struct {
    int count;
    int generation;
    _Alignas(64) int reached0;
    _Alignas(64) int reached1;
} fl_barrier_state;

#define FL_BARRIER_SPINS 256

static inline void fl_barrier_spin(int *spins)
{
    if (*spins < FL_BARRIER_SPINS) {
        ++*spins;
#if defined(__SSE2__)
        _mm_pause();
#endif
    } else {
        sched_yield();
    }
}

static inline void fl_barrier_wait(fl_barrier_state *b, int tid, int n_threads)
{
    if (n_threads <= 1) return;
    int spins = 0;
    if (n_threads == 2) {
        int *mine = tid ? &b->reached1 : &b->reached0;
        const int *other = tid ? &b->reached0 : &b->reached1;
        const int reached = *mine + 1;
        __atomic_store_n(mine, reached, __ATOMIC_RELEASE);
        while (__atomic_load_n(other, __ATOMIC_ACQUIRE) < reached) fl_barrier_spin(&spins);
        return;
    }
    const int generation = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == n_threads) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->generation, generation + 1, __ATOMIC_RELEASE);
        return;
    }
    while (__atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) == generation) fl_barrier_spin(&spins);
}

static inline int fl_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

static inline int fl_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int fl_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

static inline int fl_cpu_supports_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("fma");
}

static inline int fl_cpu_supports_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#endif
