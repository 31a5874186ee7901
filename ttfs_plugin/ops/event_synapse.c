/* Event-driven weight ops of a time-stepped synapse (SPEC §7), for the CPU.
 *
 * A synapse's weight op (a Conv2d or a Linear, no bias) on a spike tensor is a sum over the
 * inputs that are not zero. Here every output element is that sum taken in one fixed order,
 * ascending input channel, then kernel row, then kernel column (a Linear: ascending input
 * feature), one rounded product w * v and one rounded add at a time, starting from +0:
 *     out[b, co, oy, ox] = (((+0 + w_1 v_1) + w_2 v_2) + ...)   over the non-zero v.
 * So a sample's output depends on nothing but that sample: not the batch it is in, not the
 * thread count, not the CPU, and the time-stepped loop (one call per step, ev_step) and the
 * window schedule (one call per window, ev_window) give the same bits. The work is one weight
 * row per spike, not a dense op per step. Built with -ffp-contract=off (no fused multiply-add:
 * the rounding above is the contract) by ttfs_plugin/ops/event_synapse.py at first use.
 *
 * Geometry: input (B, Ci, H, W), weights rearranged to wt[Ci/G][KH][KW][Co] (the Co values of
 * one tap contiguous), output (B, Co, OH, OW); stride SH, SW, zero padding PH, PW, dilation
 * DH, DW, G groups. A Linear is the case H = W = KH = KW = OH = OW = 1.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && __GNUC__ >= 11
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif

typedef struct {
    int64_t ci, h, w, co, groups, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow;
} geometry;

/* The scratch of one thread for one sample: acc[OH*OW][Co] (only touched pixels are valid),
 * mark[OH*OW] (the stamp of the round a pixel was last zeroed in), touched (their list). */
typedef struct {
    void *acc;
    int64_t *mark;
    int64_t *touched;
    int64_t n_touched;
    int64_t stamp;
    int64_t *taps; /* 4 * max(KH, KW): the reach() lists of one spike */
} scratch;

static int scratch_init(scratch *s, const geometry *g, size_t real_size) {
    int64_t pixels = g->oh * g->ow;
    s->acc = malloc((size_t)(pixels * g->co) * real_size);
    s->mark = malloc((size_t)pixels * sizeof(int64_t));
    s->touched = malloc((size_t)pixels * sizeof(int64_t));
    s->taps = malloc((size_t)(4 * (g->kh > g->kw ? g->kh : g->kw)) * sizeof(int64_t));
    if (!s->acc || !s->mark || !s->touched || !s->taps) {
        free(s->acc); free(s->mark); free(s->touched); free(s->taps);
        return -1;
    }
    for (int64_t p = 0; p < pixels; ++p) s->mark[p] = -1;
    s->n_touched = 0;
    s->stamp = 0;
    return 0;
}

static void scratch_free(scratch *s) {
    free(s->acc); free(s->mark); free(s->touched); free(s->taps);
}

/* The output rows (or columns) one input row (column) i reaches, kernel tap ascending: the
 * taps in tap[], their output positions in pos[]; returns how many. Stride 1 divides nothing
 * (an int64 division costs tens of cycles, and this runs per spike). */
static int64_t reach(int64_t i, int64_t pad, int64_t taps, int64_t dil, int64_t stride,
                     int64_t size, int64_t *tap, int64_t *pos) {
    int64_t n = 0;
    for (int64_t k = 0; k < taps; ++k) {
        int64_t num = i + pad - k * dil;
        if (num < 0) break; /* it only falls as k grows */
        int64_t o = num;
        if (stride != 1) {
            if (num % stride) continue;
            o = num / stride;
        }
        if (o >= size) continue;
        tap[n] = k;
        pos[n++] = o;
    }
    return n;
}

/* One input element (channel c, row iy, column ix) of value v adds w * v to every output it
 * reaches, kernel row then column ascending; a pixel first reached in this round is zeroed.
 * ty, oy, tx, ox: scratch of KH and KW entries. */
#define DEFINE_SCATTER(NAME, REAL)                                                           \
MULTIVERSION                                                                                 \
static void NAME(const geometry *g, const REAL *restrict wt, scratch *s, int64_t c,         \
                 int64_t iy, int64_t ix, REAL v, int64_t *ty, int64_t *oy, int64_t *tx,      \
                 int64_t *ox) {                                                              \
    REAL *restrict acc = (REAL *)s->acc;                                                     \
    int64_t co = g->co, cig = g->ci / g->groups, cog = g->co / g->groups;                    \
    int64_t group = g->groups == 1 ? 0 : c / cig, local = c - group * cig;                   \
    int64_t ny = reach(iy, g->ph, g->kh, g->dh, g->sh, g->oh, ty, oy);                       \
    int64_t nx = reach(ix, g->pw, g->kw, g->dw, g->sw, g->ow, tx, ox);                       \
    const REAL *w0 = wt + local * g->kh * g->kw * co + group * cog;                          \
    for (int64_t a = 0; a < ny; ++a) {                                                       \
        for (int64_t b = 0; b < nx; ++b) {                                                   \
            int64_t p = oy[a] * g->ow + ox[b];                                               \
            if (s->mark[p] != s->stamp) {                                                    \
                s->mark[p] = s->stamp;                                                       \
                s->touched[s->n_touched++] = p;                                              \
                memset(acc + p * co, 0, (size_t)co * sizeof(REAL));                          \
            }                                                                                \
            REAL *restrict out = acc + p * co + group * cog;                                 \
            const REAL *restrict w = w0 + (ty[a] * g->kw + tx[b]) * co;                      \
            for (int64_t o = 0; o < cog; ++o) out[o] += w[o] * v;                            \
        }                                                                                    \
    }                                                                                        \
}

#define TAPS(s) (s).taps, (s).taps + g->kh, (s).taps + 2 * g->kh, (s).taps + 2 * g->kh + g->kw

DEFINE_SCATTER(scatter_f32, float)
DEFINE_SCATTER(scatter_f64, double)

/* ev_step: out = op(x) for samples [b0, b1) of a dense input x; out is (B, Co, OH, OW) and
 * zero on entry. Returns 0, or -1 when scratch memory could not be had. */
#define DEFINE_STEP(NAME, SCATTER, REAL)                                                     \
int NAME(const REAL *x, const REAL *wt, const geometry *g, int64_t b0, int64_t b1,           \
         REAL *out) {                                                                        \
    scratch s;                                                                               \
    if (scratch_init(&s, g, sizeof(REAL))) return -1;                                        \
    int64_t plane = g->h * g->w, pixels = g->oh * g->ow;                                     \
    for (int64_t b = b0; b < b1; ++b) {                                                      \
        const REAL *xb = x + b * g->ci * plane;                                              \
        s.n_touched = 0;                                                                     \
        s.stamp = b;                                                                         \
        for (int64_t c = 0; c < g->ci; ++c)                                                  \
            for (int64_t iy = 0; iy < g->h; ++iy)                                            \
                for (int64_t ix = 0; ix < g->w; ++ix) {                                      \
                    REAL v = xb[(c * g->h + iy) * g->w + ix];                                \
                    if (v != 0) SCATTER(g, wt, &s, c, iy, ix, v, TAPS(s));                            \
                }                                                                            \
        REAL *ob = out + b * g->co * pixels;                                                 \
        const REAL *acc = (const REAL *)s.acc;                                               \
        for (int64_t t = 0; t < s.n_touched; ++t) {                                          \
            int64_t p = s.touched[t];                                                        \
            for (int64_t o = 0; o < g->co; ++o) ob[o * pixels + p] = acc[p * g->co + o];     \
        }                                                                                    \
    }                                                                                        \
    scratch_free(&s);                                                                        \
    return 0;                                                                                \
}

DEFINE_STEP(ev_step_f32, scatter_f32, float)
DEFINE_STEP(ev_step_f64, scatter_f64, double)

/* ev_window: a whole fire window of an exact synapse into its target's membrane, for samples
 * [b0, b1). times (B, Ci, H, W): the source's spike times, T = none. For k = 0 .. T-1 in
 * order, as the loop's steps do: current = op(times == k) * kappa[k] (+ bias[co] at k = 0),
 * mem = mem + current. A pixel no spike reaches at step k > 0 gets current +0 (mem unchanged,
 * and mem is never -0, so it is not touched); at k = 0 with a bias every pixel is updated. */
#define DEFINE_WINDOW(NAME, SCATTER, REAL, TIME)                                             \
int NAME(const TIME *times, int32_t T, const REAL *wt, const geometry *g, const REAL *kappa, \
         const REAL *bias, int64_t b0, int64_t b1, REAL *mem) {                              \
    scratch s;                                                                               \
    if (scratch_init(&s, g, sizeof(REAL))) return -1;                                        \
    int64_t plane = g->h * g->w, n_in = g->ci * plane, pixels = g->oh * g->ow;               \
    int64_t *count = malloc((size_t)(T + 1) * sizeof(int64_t));                              \
    int64_t *order = malloc((size_t)(n_in > 0 ? n_in : 1) * sizeof(int64_t));               \
    if (!count || !order) { free(count); free(order); scratch_free(&s); return -1; }         \
    int64_t stamp = 0;                                                                       \
    for (int64_t b = b0; b < b1; ++b) {                                                      \
        const TIME *tb = times + b * n_in;                                                   \
        /* counting sort of the spiking inputs by time, stable in (c, iy, ix) order */       \
        memset(count, 0, (size_t)(T + 1) * sizeof(int64_t));                                 \
        for (int64_t i = 0; i < n_in; ++i) if ((int64_t)tb[i] < T) ++count[tb[i] + 1];      \
        for (int32_t k = 0; k < T; ++k) count[k + 1] += count[k];                            \
        for (int64_t i = 0; i < n_in; ++i)                                                   \
            if ((int64_t)tb[i] < T) order[count[tb[i]]++] = i;                               \
        /* count[k] is now the end of time k's spikes; time k starts at count[k - 1] */     \
        REAL *mb = mem + b * g->co * pixels;                                                 \
        int64_t start = 0;                                                                   \
        for (int32_t k = 0; k < T; ++k) {                                                    \
            int64_t end = count[k];                                                          \
            int with_bias = (k == 0 && bias != NULL);                                        \
            if (end == start && !with_bias) continue;                                        \
            s.n_touched = 0;                                                                 \
            s.stamp = ++stamp;                                                               \
            for (int64_t e = start; e < end; ++e) {                                          \
                int64_t i = order[e];                                                        \
                int64_t c = i / plane, r = i % plane;                                        \
                SCATTER(g, wt, &s, c, r / g->w, r % g->w, (REAL)1, TAPS(s));                          \
            }                                                                                \
            start = end;                                                                     \
            const REAL *acc = (const REAL *)s.acc;                                           \
            REAL kap = kappa[k];                                                             \
            if (with_bias) {                                                                 \
                for (int64_t o = 0; o < g->co; ++o)                                          \
                    for (int64_t p = 0; p < pixels; ++p) {                                   \
                        REAL a = s.mark[p] == s.stamp ? acc[p * g->co + o] : (REAL)0;        \
                        REAL current = a * kap;                                              \
                        current = current + bias[o];                                         \
                        mb[o * pixels + p] = mb[o * pixels + p] + current;                   \
                    }                                                                        \
                continue;                                                                    \
            }                                                                                \
            for (int64_t o = 0; o < g->co; ++o) {                                            \
                REAL *mo = mb + o * pixels;                                                  \
                for (int64_t t = 0; t < s.n_touched; ++t) {                                  \
                    int64_t p = s.touched[t];                                                \
                    REAL current = acc[p * g->co + o] * kap;                                 \
                    mo[p] = mo[p] + current;                                                 \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
    free(count); free(order); scratch_free(&s);                                              \
    return 0;                                                                                \
}

DEFINE_WINDOW(ev_window_f32_u8, scatter_f32, float, uint8_t)
DEFINE_WINDOW(ev_window_f32_i32, scatter_f32, float, int32_t)
DEFINE_WINDOW(ev_window_f64_u8, scatter_f64, double, uint8_t)
DEFINE_WINDOW(ev_window_f64_i32, scatter_f64, double, int32_t)

int64_t ev_geometry_size(void) { return (int64_t)sizeof(geometry); }
