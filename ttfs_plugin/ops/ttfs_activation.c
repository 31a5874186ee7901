/* The fused TTFS activation on the CPU (SPEC §3-4): one pass forward, one pass backward.
 *
 * Forward:  t = #{k : z < thr[k]} = T - #{k : thr[k] <= z}   (thr non-increasing; NaN -> T)
 *           x = kern[t]                                       (kern[T] = 0: no spike)
 * Backward: with gx = g * kern[t] and "quantized" = 1 <= t <= T-1,
 *           grad_z = gx / z (ste) or g / theta0 (decode) where quantized, else 0,
 *           and four sums per block of BLOCK elements, in double:
 *           [sum gx, sum_q gx, sum_q gx * t, sum_q gx * ln(z / theta0)] (the last: ste only).
 * The caller adds the block sums in a fixed order, so the result does not depend on how the
 * blocks were shared between threads. C99 with GCC/Clang vector extensions (the portable loops)
 * and, on x86-64, AVX2 intrinsics picked at run time (float32: the forward's bucket table, the
 * eight-lane backward); no dependency: built at first use by ttfs_plugin/ops/cpu.py.
 */
#include <stdint.h>
#include <math.h>
#include <string.h>

#define BLOCK 4096
#define VEC_BYTES 32 /* one AVX register; two SSE registers where AVX is missing */
#define COUNT_MAX 64 /* up to this T, count comparisons (vectorises); above, binary search */

/* x86-64 with GCC: a clone for AVX2 + FMA CPUs (x86-64-v3; GCC 11+) beside the baseline one,
 * picked at load time. FMA only changes the rounding of the float64 sums (built with
 * -ffp-contract=fast), never a spike time, x or dL/dz (no sum there to contract). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && __GNUC__ >= 11
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define MULTIVERSION
#endif

/* Forward over [begin, end). For T <= COUNT_MAX, two vectors of neurons stay in registers
 * while the table streams past: t = T - #{k : thr[k] <= z} (a true vector comparison is -1),
 * the count the reference's bucketize takes, and on the non-increasing table the first k with
 * z >= thr[k] that a time-stepped neuron fires at. NaN never counts (t = T). x = kern[t] is
 * read from the tiny table per lane. Larger T, and the tail: a binary search per neuron.
 * GCC/Clang vector extensions: SSE/AVX/AVX-512/NEON code, or scalar code elsewhere. */
#define DEFINE_FORWARD(NAME, REAL, TIME, VREAL, VINT, VTIME)                               \
MULTIVERSION                                                                                 \
void NAME(const REAL *z, int64_t begin, int64_t end, const REAL *thr, const REAL *kern,      \
          int32_t T, REAL *x, TIME *t_out) {                                                 \
    enum { L = VEC_BYTES / sizeof(REAL) };                                                   \
    int64_t i = begin;                                                                       \
    if (T <= COUNT_MAX) {                                                                    \
        for (; i + 2 * L <= end; i += 2 * L) {                                               \
            VREAL za, zb;                                                                    \
            memcpy(&za, z + i, sizeof za);                                                   \
            memcpy(&zb, z + i + L, sizeof zb);                                               \
            VINT ca = {0}, cb = {0};                                                         \
            for (int32_t k = 0; k < T; ++k) {                                                \
                const VREAL th = (VREAL){0} + thr[k];                                        \
                ca -= (VINT)(za >= th);                                                      \
                cb -= (VINT)(zb >= th);                                                      \
            }                                                                                \
            VINT ta = (VINT){0} + T - ca, tb = (VINT){0} + T - cb;                           \
            VTIME ta_small = __builtin_convertvector(ta, VTIME),                             \
                  tb_small = __builtin_convertvector(tb, VTIME);                             \
            memcpy(t_out + i, &ta_small, sizeof ta_small);                                   \
            memcpy(t_out + i + L, &tb_small, sizeof tb_small);                               \
            int32_t idx[2 * L];                                                              \
            for (int l = 0; l < L; ++l) {                                                    \
                idx[l] = (int32_t)ta[l];                                                     \
                idx[L + l] = (int32_t)tb[l];                                                 \
            }                                                                                \
            for (int l = 0; l < 2 * L; ++l) x[i + l] = kern[idx[l]];                         \
        }                                                                                    \
    }                                                                                        \
    for (; i < end; ++i) {                                                                   \
        /* first k with z >= thr[k] (T if none, NaN included) */                             \
        int32_t lo = 0, len = T;                                                             \
        const REAL v = z[i];                                                                 \
        while (len > 0) {                                                                    \
            int32_t half = len / 2;                                                          \
            if (v >= thr[lo + half]) { len = half; }                                         \
            else { lo += half + 1; len -= half + 1; }                                        \
        }                                                                                    \
        t_out[i] = (TIME)lo;                                                                 \
        x[i] = kern[lo];                                                                     \
    }                                                                                        \
}

typedef float vfloat __attribute__((vector_size(VEC_BYTES)));
typedef int32_t vint32 __attribute__((vector_size(VEC_BYTES)));
typedef double vdouble __attribute__((vector_size(VEC_BYTES)));
typedef int64_t vint64 __attribute__((vector_size(VEC_BYTES)));
typedef float vfloat4 __attribute__((vector_size(16)));
typedef int32_t vint32x4 __attribute__((vector_size(16)));
typedef double vdouble4 __attribute__((vector_size(32)));
typedef int64_t vint64x4 __attribute__((vector_size(32)));
typedef uint64_t vuint64x4 __attribute__((vector_size(32)));
typedef uint8_t vuint8x8 __attribute__((vector_size(8)));
typedef uint8_t vuint8x4 __attribute__((vector_size(4)));


/* Float32 forward by a bucket table (any T): positive floats order as their bit patterns, so the
 * range [thr[T-1], thr[0]] is cut into NB buckets of 2^shift bit patterns, no wider than the
 * closest two distinct thresholds. A bucket then holds at most one distinct threshold value v
 * (m equal entries of the table: a table floored at the smallest float repeats its last one);
 * its entry keeps t0 = #{k : first < thr[k]} at the bucket's first value, m and v (+inf when
 * there is none), and t = t0 - m (z >= v): the same count as above, with two table reads instead
 * of T comparisons. Built per call (NB <= LUT_MAX entries, each checked against a binary
 * search); a table it cannot serve (not positive, finite and non-increasing, thresholds too
 * close, T > 65535) keeps the comparison loop. */
#define LUT_MAX 4096
typedef struct {
    uint32_t lo, hi;  /* bit patterns of thr[T-1] and thr[0] */
    int32_t shift, nb;
    int32_t *t;   /* LUT_MAX + 1 entries, t0 | m << 16; entry nb: the lanes outside [lo, hi] */
    float *thr;
} bucket_table;

static uint32_t float_bits(float v) { uint32_t u; memcpy(&u, &v, sizeof u); return u; }
static float bits_float(uint32_t u) { float v; memcpy(&v, &u, sizeof v); return v; }

static int32_t count_below(const float *thr, int32_t T, float v) { /* first k: v >= thr[k] */
    int32_t lo = 0, len = T;
    while (len > 0) {
        int32_t half = len / 2;
        if (v >= thr[lo + half]) { len = half; }
        else { lo += half + 1; len -= half + 1; }
    }
    return lo;
}

static int build_bucket_table(const float *thr, int32_t T, bucket_table *L) {
    uint32_t gap = 0xffffffffu;
    if (T > 65535) return 0;
    for (int32_t k = 0; k < T; ++k) {
        if (!(thr[k] > 0.0f) || !(thr[k] < INFINITY)) return 0;
        if (k > 0) {
            if (!(thr[k] <= thr[k - 1])) return 0;
            uint32_t d = float_bits(thr[k - 1]) - float_bits(thr[k]);
            if (d > 0 && d < gap) gap = d;
        }
    }
    int32_t shift = 0;
    while (shift < 31 && (2u << shift) <= gap) ++shift; /* 2^shift <= gap */
    L->lo = float_bits(thr[T - 1]);
    L->hi = float_bits(thr[0]);
    uint32_t nb = ((L->hi - L->lo) >> shift) + 1;
    if (nb > LUT_MAX) return 0;
    L->shift = shift;
    L->nb = (int32_t)nb;
    for (uint32_t b = 0; b < nb; ++b) {
        uint32_t first = L->lo + (b << shift), last = first + ((1u << shift) - 1);
        if (last > L->hi || last < first) last = L->hi;
        int32_t t0 = count_below(thr, T, bits_float(first));
        int32_t t1 = count_below(thr, T, bits_float(last));
        if (t0 > t1 && thr[t1] != thr[t0 - 1]) return 0; /* two distinct values */
        L->t[b] = t0 | (t0 - t1) << 16;
        L->thr[b] = t0 > t1 ? thr[t0 - 1] : INFINITY;
    }
    L->t[nb] = T;
    L->thr[nb] = INFINITY;
    return 1;
}

/* t for one neuron from the bucket table (the vector loop below does eight at a time). */
static inline int32_t bucket_time(const bucket_table *L, float v) {
    const uint32_t u = float_bits(v), d = u - L->lo;
    const int32_t b = d <= L->hi - L->lo ? (int32_t)(d >> L->shift) : L->nb;
    if (u > L->hi && u <= 0x7f800000u) return 0; /* z >= thr[0], +inf included (NaN: T) */
    return (L->t[b] & 0xffff) - (v >= L->thr[b] ? L->t[b] >> 16 : 0);
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX2 1
static int32_t allow_avx2 = 1; /* 0: the portable loops, as on a CPU without AVX2 (tests) */
void ttfs_allow_avx2(int32_t on) { allow_avx2 = on; }
static int avx2_ok(void) {
    return allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
/* Eight neurons per step with AVX2 gathers; picked at run time where the CPU has AVX2. */
__attribute__((target("avx2"))) static int64_t buckets_avx2(
        const float *z, int64_t begin, int64_t end, const bucket_table *L, const float *kern,
        void *t_out, int32_t time_bytes, float *x) {
    const __m256i lo = _mm256_set1_epi32((int32_t)L->lo), span = _mm256_set1_epi32(
        (int32_t)(L->hi - L->lo)), above_from = _mm256_set1_epi32((int32_t)(L->hi + 1)),
        above_span = _mm256_set1_epi32((int32_t)(0x7f800000u - L->hi - 1)),
        outside = _mm256_set1_epi32(L->nb), low16 = _mm256_set1_epi32(0xffff);
    const __m128i shift = _mm_cvtsi32_si128(L->shift);
    /* byte 0 of every int32 to the low 4 bytes of each 128-bit half, then the halves joined */
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i join = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
        const __m256 zv = _mm256_loadu_ps(z + i);
        const __m256i u = _mm256_castps_si256(zv), d = _mm256_sub_epi32(u, lo);
        const __m256i inside = _mm256_cmpeq_epi32(_mm256_min_epu32(d, span), d);
        const __m256i b = _mm256_blendv_epi8(outside, _mm256_srl_epi32(d, shift), inside);
        const __m256i entry = _mm256_i32gather_epi32((const int *)L->t, b, 4);
        const __m256 th = _mm256_i32gather_ps(L->thr, b, 4);
        const __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(zv, th, _CMP_GE_OQ));
        __m256i t = _mm256_sub_epi32(_mm256_and_si256(entry, low16),
                                     _mm256_and_si256(_mm256_srli_epi32(entry, 16), ge));
        const __m256i a = _mm256_sub_epi32(u, above_from);
        t = _mm256_andnot_si256(_mm256_cmpeq_epi32(_mm256_min_epu32(a, above_span), a), t);
        _mm256_storeu_ps(x + i, _mm256_i32gather_ps(kern, t, 4));
        if (time_bytes == 1) {
            const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(t, pick), join);
            _mm_storel_epi64((__m128i *)((uint8_t *)t_out + i), _mm256_castsi256_si128(bytes));
        } else {
            _mm256_storeu_si256((__m256i *)((int32_t *)t_out + i), t);
        }
    }
    return i;
}
#else
static int avx2_ok(void) { return 0; }
#endif

static void forward_buckets(const float *z, int64_t begin, int64_t end, const bucket_table *L,
                            const float *kern, void *t_out, int32_t time_bytes, float *x) {
    int64_t i = begin;
#ifdef HAVE_AVX2
    if (avx2_ok()) i = buckets_avx2(z, begin, end, L, kern, t_out,
                                                         time_bytes, x);
#endif
    for (; i < end; ++i) {
        const int32_t t = bucket_time(L, z[i]);
        if (time_bytes == 1) ((uint8_t *)t_out)[i] = (uint8_t)t;
        else ((int32_t *)t_out)[i] = t;
        x[i] = kern[t];
    }
}

/* ln(v) for v > 0 and normal, four lanes: v = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * ln m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.1716, by its series to s^13 (relative error
 * below 1e-12): a few ulps of double, vectorised where libm's log is not. */
static inline __attribute__((always_inline)) vdouble4 log4(vdouble4 v) {
    vint64x4 bits, mbits, big, ebits, onebits;
    vdouble4 m, halved, s, s2, series, e, one = {1, 1, 1, 1};
    memcpy(&bits, &v, sizeof bits);
    /* the exponent as a double without an int64 conversion (AVX2 has none): 2^52 + e - 2^52 */
    ebits = (vint64x4)(((vuint64x4)bits >> 52) | 0x4330000000000000ULL); /* sign bit: 0 */
    memcpy(&e, &ebits, sizeof e);
    e = e - (4503599627370496.0 + 1023.0);
    mbits = (bits & 0x000fffffffffffffLL) | 0x3ff0000000000000LL;
    memcpy(&m, &mbits, sizeof m);
    big = (vint64x4)(m > 1.4142135623730951);
    halved = m * 0.5;
    memcpy(&bits, &halved, sizeof bits);
    memcpy(&mbits, &m, sizeof mbits);
    mbits = (mbits & ~big) | (bits & big);
    memcpy(&m, &mbits, sizeof m);
    memcpy(&onebits, &one, sizeof onebits);
    onebits &= big;
    memcpy(&one, &onebits, sizeof one);
    e += one; /* m halved: exponent one up */
    s = (m - 1.0) / (m + 1.0);
    s2 = s * s;
    series = s2 * (1.0 / 3 + s2 * (1.0 / 5 + s2 * (1.0 / 7 + s2 * (1.0 / 9 + s2 * (1.0 / 11
             + s2 * (1.0 / 13))))));
    return e * 0.69314718055994530942 + (s + s) * (1.0 + series);
}

/* The neurons [i, stop) of a block one by one (its tail), added to s = {S, S_q, S_qt, S_qlog}. */
#define DEFINE_BACKWARD_TAIL(NAME, REAL, TIME)                                                \
static inline void NAME(const REAL *g, const REAL *z, const TIME *t, int64_t i, int64_t stop, \
                        const REAL *kern, int32_t T, REAL theta0_r, int32_t ste,              \
                        int32_t need_z, REAL *grad_z, double s[4]) {                          \
    for (; i < stop; ++i) {                                                                  \
        const int32_t ti = (int32_t)t[i];                                                    \
        const REAL gx = g[i] * kern[ti];                                                     \
        const int q = ti >= 1 && ti <= T - 1;                                                \
        if (need_z) grad_z[i] = q ? (ste ? gx / z[i] : g[i] / theta0_r) : (REAL)0;           \
        s[0] += (double)gx;                                                                  \
        if (q) {                                                                             \
            s[1] += (double)gx;                                                              \
            s[2] += (double)gx * (double)ti;                                                 \
            if (ste) s[3] += (double)gx * log((double)z[i]);                                 \
        }                                                                                    \
    }                                                                                        \
}
DEFINE_BACKWARD_TAIL(tail_f32_u8, float, uint8_t)
DEFINE_BACKWARD_TAIL(tail_f32_i32, float, int32_t)
DEFINE_BACKWARD_TAIL(tail_f64_u8, double, uint8_t)
DEFINE_BACKWARD_TAIL(tail_f64_i32, double, int32_t)

/* A block's four sums: its tail's s plus the vector lanes (each sum's lanes in order), into
 * out[0..3]; the last as sum_q gx ln(z / theta0). */
static inline void finish_block(double *out, double s[4], const double lanes[4][4], int32_t ste,
                                double log_theta0) {
    for (int l = 0; l < 4; ++l) {
        s[0] += lanes[0][l]; s[1] += lanes[1][l]; s[2] += lanes[2][l]; s[3] += lanes[3][l];
    }
    out[0] = s[0]; out[1] = s[1]; out[2] = s[2];
    out[3] = ste ? s[3] - log_theta0 * s[1] : 0.0;
}

/* Backward over [begin, end), four neurons at a time (then the tail one by one). gx = g * x is
 * formed in z's dtype exactly as the reference does; the sums are kept in double lanes and
 * reduced in a fixed order at the end of every block. */
#define DEFINE_BACKWARD(NAME, REAL, TIME, VREAL4, VMASK4, TAIL)                               \
MULTIVERSION                                                                                 \
void NAME(const REAL *g, const REAL *z, const TIME *t, int64_t begin, int64_t end,           \
          const REAL *kern, int32_t T, double theta0, int32_t ste, int32_t need_z,           \
          REAL *grad_z, double *sums /* 4 per block, from block begin / BLOCK */) {          \
    const REAL theta0_r = (REAL)theta0; /* torch divides by a scalar in z's dtype */          \
    const double log_theta0 = log(theta0);                                                   \
    for (int64_t i0 = begin; i0 < end; i0 += BLOCK) {                                        \
        const int64_t stop = end - i0 < BLOCK ? end : i0 + BLOCK;                            \
        vdouble4 acc_all = {0}, acc_q = {0}, acc_qt = {0}, acc_qlog = {0};                   \
        int64_t i = i0;                                                                      \
        for (; i + 4 <= stop; i += 4) {                                                      \
            VREAL4 gv, zv = {1, 1, 1, 1}, kv, gx, r;                                         \
            vint32x4 tv;                                                                     \
            memcpy(&gv, g + i, sizeof gv);                                                   \
            if (ste) memcpy(&zv, z + i, sizeof zv);                                          \
            for (int l = 0; l < 4; ++l) { tv[l] = (int32_t)t[i + l]; kv[l] = kern[tv[l]]; }  \
            gx = gv * kv;                                                                    \
            const vint32x4 q32 = (tv >= 1) & (tv <= T - 1);                                  \
            const vint64x4 q = __builtin_convertvector(q32, vint64x4); /* -1 stays -1 */       \
            if (need_z) {                                                                    \
                VMASK4 qm = __builtin_convertvector(q32, VMASK4), rbits;                     \
                r = ste ? gx / zv : gv / theta0_r; /* lanes outside q are masked to 0 */     \
                memcpy(&rbits, &r, sizeof rbits);                                            \
                rbits &= qm;                                                                 \
                memcpy(grad_z + i, &rbits, sizeof rbits);                                    \
            }                                                                                \
            const vdouble4 gxd = __builtin_convertvector(gx, vdouble4);                      \
            vint64x4 gbits;                                                                  \
            vdouble4 gq;                                                                     \
            memcpy(&gbits, &gxd, sizeof gbits);                                              \
            gbits &= q;                                                                      \
            memcpy(&gq, &gbits, sizeof gq);                                                  \
            acc_all += gxd;                                                                  \
            acc_q += gq;                                                                     \
            acc_qt += gq * __builtin_convertvector(tv, vdouble4);                            \
            if (ste) {                                                                       \
                vdouble4 zd = __builtin_convertvector(zv, vdouble4), one = {1, 1, 1, 1};       \
                vint64x4 zbits, onebits;                                                     \
                memcpy(&zbits, &zd, sizeof zbits);                                           \
                memcpy(&onebits, &one, sizeof onebits);                                      \
                zbits = (zbits & q) | (onebits & ~q); /* ln 1 = 0 outside q */               \
                memcpy(&zd, &zbits, sizeof zd);                                              \
                acc_qlog += gq * log4(zd);                                                   \
            }                                                                                \
        }                                                                                    \
        double tail[4] = {0.0, 0.0, 0.0, 0.0}, lanes[4][4];                                 \
        TAIL(g, z, t, i, stop, kern, T, theta0_r, ste, need_z, grad_z, tail);                \
        memcpy(lanes[0], &acc_all, sizeof lanes[0]);                                         \
        memcpy(lanes[1], &acc_q, sizeof lanes[1]);                                           \
        memcpy(lanes[2], &acc_qt, sizeof lanes[2]);                                          \
        memcpy(lanes[3], &acc_qlog, sizeof lanes[3]);                                        \
        finish_block(sums + 4 * (i0 / BLOCK), tail, (const double (*)[4])lanes, ste,         \
                     log_theta0);                                                            \
    }                                                                                        \
}

DEFINE_FORWARD(forward_compare_f32_u8, float, uint8_t, vfloat, vint32, vuint8x8)
DEFINE_FORWARD(forward_compare_f32_i32, float, int32_t, vfloat, vint32, vint32)
DEFINE_FORWARD(ttfs_forward_f64_u8, double, uint8_t, vdouble, vint64, vuint8x4)
DEFINE_FORWARD(ttfs_forward_f64_i32, double, int32_t, vdouble, vint64, vint32x4)
DEFINE_BACKWARD(backward_vec_f32_u8, float, uint8_t, vfloat4, vint32x4, tail_f32_u8)
DEFINE_BACKWARD(backward_vec_f32_i32, float, int32_t, vfloat4, vint32x4, tail_f32_i32)
DEFINE_BACKWARD(ttfs_backward_f64_u8, double, uint8_t, vdouble4, vint64x4, tail_f64_u8)
DEFINE_BACKWARD(ttfs_backward_f64_i32, double, int32_t, vdouble4, vint64x4, tail_f64_i32)

int32_t ttfs_block_size(void) { return BLOCK; }

#define DEFINE_FORWARD_F32(NAME, TIME, COMPARE)                                               \
void NAME(const float *z, int64_t begin, int64_t end, const float *thr, const float *kern,   \
          int32_t T, float *x, TIME *t_out) {                                                \
    int32_t bucket_t[LUT_MAX + 1];                                                           \
    float bucket_thr[LUT_MAX + 1];                                                           \
    bucket_table table = {0, 0, 0, 0, bucket_t, bucket_thr};                                 \
    /* without AVX2 the comparison loop is faster up to COUNT_MAX, the buckets above */       \
    if ((T > COUNT_MAX || avx2_ok()) && build_bucket_table(thr, T, &table))                  \
        forward_buckets(z, begin, end, &table, kern, t_out, (int32_t)sizeof(TIME), x);       \
    else COMPARE(z, begin, end, thr, kern, T, x, t_out);                                     \
}
DEFINE_FORWARD_F32(ttfs_forward_f32_u8, uint8_t, forward_compare_f32_u8)
DEFINE_FORWARD_F32(ttfs_forward_f32_i32, int32_t, forward_compare_f32_i32)

/* 1 if the float32 forward serves this threshold table with buckets, 0 if by comparisons. */
int32_t ttfs_forward_buckets_f32(const float *thr, int32_t T) {
    int32_t bucket_t[LUT_MAX + 1];
    float bucket_thr[LUT_MAX + 1];
    bucket_table table = {0, 0, 0, 0, bucket_t, bucket_thr};
    return build_bucket_table(thr, T, &table);
}

#ifdef HAVE_AVX2
/* log4 with AVX2 and FMA: the same reduction and series. */
__attribute__((target("avx2,fma"))) static inline __m256d log4_avx2(__m256d v) {
    const __m256i bits = _mm256_castpd_si256(v);
    __m256d e = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(
        _mm256_srli_epi64(bits, 52), _mm256_set1_epi64x(0x4330000000000000LL))),
        _mm256_set1_pd(4503599627370496.0 + 1023.0));
    __m256d m = _mm256_castsi256_pd(_mm256_or_si256(
        _mm256_and_si256(bits, _mm256_set1_epi64x(0x000fffffffffffffLL)),
        _mm256_set1_epi64x(0x3ff0000000000000LL)));
    const __m256d big = _mm256_cmp_pd(m, _mm256_set1_pd(1.4142135623730951), _CMP_GT_OQ);
    m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(0.5)), big);
    e = _mm256_add_pd(e, _mm256_and_pd(big, _mm256_set1_pd(1.0)));
    const __m256d sv = _mm256_div_pd(_mm256_sub_pd(m, _mm256_set1_pd(1.0)),
                                     _mm256_add_pd(m, _mm256_set1_pd(1.0)));
    const __m256d s2 = _mm256_mul_pd(sv, sv);
    __m256d series = _mm256_set1_pd(1.0 / 13);
    static const double coefficients[6] = {1.0 / 11, 1.0 / 9, 1.0 / 7, 1.0 / 5, 1.0 / 3, 1.0};
    for (int c = 0; c < 6; ++c)
        series = _mm256_fmadd_pd(series, s2, _mm256_set1_pd(coefficients[c]));
    return _mm256_fmadd_pd(e, _mm256_set1_pd(0.69314718055994530942),
                           _mm256_mul_pd(_mm256_add_pd(sv, sv), series));
}
/* Float32 backward, eight neurons per step with an AVX2 gather of x = kern[t] (the vector loop
 * above, four at a time, gives the same dL/dz bit for bit and the sums in another order). */
__attribute__((target("avx2,fma"))) static void backward_avx2_f32(
        const float *g, const float *z, const void *t, int32_t time_bytes, int64_t begin,
        int64_t end, const float *kern, int32_t T, double theta0, int32_t ste, int32_t need_z,
        float *grad_z, double *sums) {
    const float theta0_r = (float)theta0;
    const double log_theta0 = log(theta0);
    const __m256i zero = _mm256_setzero_si256(), Tv = _mm256_set1_epi32(T);
    const __m256 theta0_v = _mm256_set1_ps(theta0_r);
    /* pack[m]: the lanes set in the 8-bit mask m first, in order (a left-pack by permute) */
    int32_t pack[256][8];
    for (int m = 0; m < 256; ++m) {
        int n = 0;
        for (int l = 0; l < 8; ++l) if (m >> l & 1) pack[m][n++] = l;
        while (n < 8) pack[m][n++] = 0;
    }
    float packed_z[BLOCK + 8], packed_g[BLOCK + 8];
    for (int64_t i0 = begin; i0 < end; i0 += BLOCK) {
        const int64_t stop = end - i0 < BLOCK ? end : i0 + BLOCK;
        __m256d acc_all = _mm256_setzero_pd(), acc_q = acc_all, acc_qt = acc_all,
                acc_qlog = acc_all;
        int64_t i = i0, packed = 0;
        for (; i + 8 <= stop; i += 8) {
            const __m256 gv = _mm256_loadu_ps(g + i);
            const __m256i tv = time_bytes == 1
                ? _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((const uint8_t *)t + i)))
                : _mm256_loadu_si256((const __m256i *)((const int32_t *)t + i));
            const __m256 gx = _mm256_mul_ps(gv, _mm256_i32gather_ps(kern, tv, 4));
            const __m256i q = _mm256_and_si256(_mm256_cmpgt_epi32(tv, zero),
                                               _mm256_cmpgt_epi32(Tv, tv));
            __m256 zv = _mm256_setzero_ps();
            if (ste) zv = _mm256_loadu_ps(z + i);
            if (need_z) {
                const __m256 r = ste ? _mm256_div_ps(gx, zv) : _mm256_div_ps(gv, theta0_v);
                _mm256_storeu_ps(grad_z + i, _mm256_and_ps(r, _mm256_castsi256_ps(q)));
            }
            for (int h = 0; h < 2; ++h) {
                const __m128 gx_h = h ? _mm256_extractf128_ps(gx, 1) : _mm256_castps256_ps128(gx);
                const __m128i q_h = h ? _mm256_extracti128_si256(q, 1) : _mm256_castsi256_si128(q);
                const __m128i t_h = h ? _mm256_extracti128_si256(tv, 1)
                                      : _mm256_castsi256_si128(tv);
                const __m256d gxd = _mm256_cvtps_pd(gx_h);
                const __m256d qd = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(q_h));
                const __m256d gq = _mm256_and_pd(gxd, qd);
                acc_all = _mm256_add_pd(acc_all, gxd);
                acc_q = _mm256_add_pd(acc_q, gq);
                acc_qt = _mm256_fmadd_pd(gq, _mm256_cvtepi32_pd(t_h), acc_qt);
            }
            if (ste) { /* left-pack the lanes that add to S_qlog: quantized, gx != 0 */
                const int active = _mm256_movemask_ps(_mm256_and_ps(_mm256_castsi256_ps(q),
                    _mm256_cmp_ps(gx, _mm256_setzero_ps(), _CMP_NEQ_UQ)));
                const __m256i order = _mm256_loadu_si256((const __m256i *)pack[active]);
                _mm256_storeu_ps(packed_z + packed, _mm256_permutevar8x32_ps(zv, order));
                _mm256_storeu_ps(packed_g + packed, _mm256_permutevar8x32_ps(gx, order));
                packed += __builtin_popcount((unsigned)active);
            }
        }
        int64_t j = 0; /* the float64 log over the packed lanes only */
        for (; j + 4 <= packed; j += 4)
            acc_qlog = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(packed_g + j)),
                                       log4_avx2(_mm256_cvtps_pd(_mm_loadu_ps(packed_z + j))),
                                       acc_qlog);
        double tail[4] = {0.0, 0.0, 0.0, 0.0}, lanes[4][4];
        for (; j < packed; ++j) tail[3] += (double)packed_g[j] * log((double)packed_z[j]);
        if (time_bytes == 1)
            tail_f32_u8(g, z, (const uint8_t *)t, i, stop, kern, T, theta0_r, ste, need_z,
                        grad_z, tail);
        else
            tail_f32_i32(g, z, (const int32_t *)t, i, stop, kern, T, theta0_r, ste, need_z,
                         grad_z, tail);
        _mm256_storeu_pd(lanes[0], acc_all);
        _mm256_storeu_pd(lanes[1], acc_q);
        _mm256_storeu_pd(lanes[2], acc_qt);
        _mm256_storeu_pd(lanes[3], acc_qlog);
        finish_block(sums + 4 * (i0 / BLOCK), tail, (const double (*)[4])lanes, ste,
                     log_theta0);
    }
}
#endif

#ifdef HAVE_AVX2
#define AVX2_BACKWARD(TIME)                                                                  \
    if (avx2_ok()) {                                                                         \
        backward_avx2_f32(g, z, t, (int32_t)sizeof(TIME), begin, end, kern, T, theta0, ste,  \
                          need_z, grad_z, sums);                                             \
        return;                                                                              \
    }
#else
#define AVX2_BACKWARD(TIME)
#endif
#define DEFINE_BACKWARD_F32(NAME, TIME, VECTOR)                                               \
void NAME(const float *g, const float *z, const TIME *t, int64_t begin, int64_t end,         \
          const float *kern, int32_t T, double theta0, int32_t ste, int32_t need_z,          \
          float *grad_z, double *sums) {                                                     \
    AVX2_BACKWARD(TIME)                                                                      \
    VECTOR(g, z, t, begin, end, kern, T, theta0, ste, need_z, grad_z, sums);                 \
}
DEFINE_BACKWARD_F32(ttfs_backward_f32_u8, uint8_t, backward_vec_f32_u8)
DEFINE_BACKWARD_F32(ttfs_backward_f32_i32, int32_t, backward_vec_f32_i32)
