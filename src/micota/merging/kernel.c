/* The fast merge path's per-element arithmetic, fused: one pass of statistics, one pass of output.
 *
 * Built on first use by micota/merging/kernel.py with the system C compiler, called through ctypes
 * (which releases the GIL). The formula is in micota/merging/fast.py. Every float32 operation is the
 * one numpy would do, in the same order, and the compiler may neither contract a*b+c into an FMA nor
 * reorder sums (-ffp-contract=off, no fast-math), so the result does not depend on the instruction
 * set a clone below runs with. Sums are defined by lanes (see lanes()/block_total()), not by the
 * order a BLAS happens to use.
 */
#include <stdint.h>
#include <string.h>

#define CH 1024 /* elements per chunk (a multiple of 8: lanes stay aligned); buffers stay in L1 */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

typedef struct {            /* one call's work; mirrored field by field by kernel.py's Job */
    const void *b, *f;      /* the whole tensor's raw data: bf16 bits (uint16) or float32 */
    void *out;              /* apply: this call's output (element 0 is start), bf16 bits or float32 */
    int32_t b_bf16, f_bf16, out_bf16, topk;
    int64_t start, n;       /* elements [start, start + n); start is a block boundary */
    int64_t block;          /* elements per block (DARE masks and sums restart per block) */
    const uint64_t *states; /* stats, DARE: SFC64 seed words of block j at states[3j .. 3j+2] */
    uint64_t keep_below;    /* DARE: a uint32 draw below this keeps its element */
    uint8_t *bits;          /* DARE keep bit of element i: bit i%8 of bits[i/8] (stats writes, apply reads) */
    uint32_t thr, lo, hi, pad; /* topk: keep |δ| keys > thr and the next `left` keys == thr; stats: bracket */
    int64_t left;
    uint32_t *cands;        /* stats: the keys in [lo, hi] in index order (NULL: no bracket counting) */
    int64_t ncands, gt, kept;
    double sum[4];          /* stats adds block totals of |δ|, |δ|·keep, δ², b² */
    float scale, w, div, lam, limit;
    int32_t has_scale, has_div, has_lam, bad;
} mk_job;

typedef union { float f[CH]; uint32_t u[CH]; } buf;

int64_t mk_job_size(void) { return (int64_t)sizeof(mk_job); } /* kernel.py checks its mirror */

static inline void load(const void *p, int bf16, int64_t at, int m, buf *x) {
    if (bf16) { /* bf16 -> float32 is exact: the bits shifted up */
        const uint16_t *s = (const uint16_t *)p + at;
        for (int i = 0; i < m; i++) x->u[i] = (uint32_t)s[i] << 16;
    } else {
        memcpy(x->f, (const float *)p + at, (size_t)m * 4);
    }
}

/* numpy's SFC64 (Chris Doty-Humphrey's Small Fast Chaotic PRNG), its seeding from three words included */
static inline uint64_t sfc64(uint64_t *s) {
    uint64_t t = s[0] + s[1] + s[3]++;
    s[0] = s[1] ^ (s[1] >> 11);
    s[1] = s[2] + (s[2] << 3);
    s[2] = ((s[2] << 24) | (s[2] >> 40)) + t;
    return t;
}

/* lane k of L adds x[i] for i ≡ k (mod 8), in index order, in float64 (squared: x[i]², exact in float64) */
static inline void lanes(double *L, const float *x, int m, int square) {
    int i = 0;
    for (; i + 8 <= m; i += 8)
        for (int k = 0; k < 8; k++) L[k] += square ? (double)x[i + k] * (double)x[i + k] : (double)x[i + k];
    for (int k = 0; i + k < m; k++) L[k] += square ? (double)x[i + k] * (double)x[i + k] : (double)x[i + k];
}

static inline double block_total(const double *L) {
    return ((L[0] + L[1]) + (L[2] + L[3])) + ((L[4] + L[5]) + (L[6] + L[7]));
}

/* K[i] = 1.0f where |δ|'s key > thr, or == thr while job->left lasts (the lowest indices first) */
static inline void topk_keep(mk_job *j, const uint32_t *key, float *K, int m) {
    const uint32_t thr = j->thr;
    for (int i = 0; i < m; i++) K[i] = (float)(key[i] > thr);
    if (j->left > 0)
        for (int i = 0; i < m && j->left > 0; i++)
            if (key[i] == thr) { K[i] = 1.0f; j->left--; }
}

/* Pass 1: sums, DARE masks (drawn and stored as bits), TIES bracket counts. */
CLONES void mk_stats(mk_job *j) {
    static const uint32_t SIGN = 0x7FFFFFFFu;
    buf B, D, A, K, T;
    uint32_t draw[CH];
    const int64_t end = j->start + j->n;
    for (int64_t bs = j->start; bs < end; bs += j->block) {
        const int64_t bm = (end - bs < j->block) ? end - bs : j->block;
        double L[4][8] = {{0}};
        uint64_t s[4] = {0, 0, 0, 1};
        if (j->states) {
            const uint64_t *w = j->states + 3 * (bs / j->block);
            s[0] = w[0]; s[1] = w[1]; s[2] = w[2];
            for (int r = 0; r < 12; r++) (void)sfc64(s);
        }
        for (int64_t c = 0; c < bm; c += CH) {
            const int m = (int)((bm - c < CH) ? bm - c : CH);
            const int64_t at = bs + c;
            load(j->b, j->b_bf16, at, m, &B);
            load(j->f, j->f_bf16, at, m, &D);
            for (int i = 0; i < m; i++) D.f[i] -= B.f[i];
            for (int i = 0; i < m; i++) A.u[i] = D.u[i] & SIGN; /* |δ|; its bits are the TIES keys */
            lanes(L[0], A.f, m, 0);
            lanes(L[2], D.f, m, 1);
            lanes(L[3], B.f, m, 1);
            if (j->states) {
                for (int i = 0; i < m; i += 2) { /* uint32 draws: the low then the high half of each word */
                    uint64_t r = sfc64(s);
                    draw[i] = (uint32_t)r;
                    if (i + 1 < m) draw[i + 1] = (uint32_t)(r >> 32);
                }
                int64_t kept = 0;
                for (int i = 0; i < m; i++) { K.f[i] = (float)(draw[i] < j->keep_below); kept += draw[i] < j->keep_below; }
                j->kept += kept;
                for (int i = 0; i < m; i++)
                    if (K.f[i] != 0.0f) j->bits[(at + i) >> 3] |= (uint8_t)(1u << ((at + i) & 7));
            } else if (j->topk) {
                topk_keep(j, A.u, K.f, m);
            }
            if (j->states || j->topk) {
                for (int i = 0; i < m; i++) T.f[i] = A.f[i] * K.f[i];
                lanes(L[1], T.f, m, 0);
            }
            if (j->cands) {
                int64_t gt = 0, nc = j->ncands;
                const uint32_t lo = j->lo, hi = j->hi;
                for (int i = 0; i < m; i++) {
                    const uint32_t key = A.u[i];
                    gt += key > hi;
                    j->cands[nc] = key;
                    nc += (key >= lo) & (key <= hi);
                }
                j->gt += gt;
                j->ncands = nc;
            }
        }
        for (int k = 0; k < 4; k++) j->sum[k] += block_total(L[k]);
    }
}

/* Pass 2: out = b + λ·(w·scale·(keep ⊙ δ)) / div, rounded to the output dtype; bad = 1 if not finite. */
CLONES void mk_apply(mk_job *j) {
    buf B, D, K;
    int bad = 0;
    const int64_t end = j->start + j->n;
    for (int64_t at = j->start; at < end; at += CH) {
        const int m = (int)((end - at < CH) ? end - at : CH);
        load(j->b, j->b_bf16, at, m, &B);
        load(j->f, j->f_bf16, at, m, &D);
        for (int i = 0; i < m; i++) D.f[i] -= B.f[i];
        if (j->bits || j->topk) {
            if (j->bits) {
                for (int i = 0; i < m; i++) K.f[i] = (float)((j->bits[(at + i) >> 3] >> ((at + i) & 7)) & 1);
            } else {
                uint32_t key[CH];
                for (int i = 0; i < m; i++) key[i] = D.u[i] & 0x7FFFFFFFu;
                topk_keep(j, key, K.f, m);
            }
            for (int i = 0; i < m; i++) D.f[i] *= K.f[i]; /* a product, as numpy's: -0.0 and NaN behave alike */
        }
        if (j->has_scale) for (int i = 0; i < m; i++) D.f[i] *= j->scale;
        for (int i = 0; i < m; i++) D.f[i] *= j->w;
        if (j->has_div) for (int i = 0; i < m; i++) D.f[i] /= j->div;
        if (j->has_lam) for (int i = 0; i < m; i++) D.f[i] *= j->lam;
        for (int i = 0; i < m; i++) B.f[i] += D.f[i];
        const float lim = j->limit;
        for (int i = 0; i < m; i++) bad |= !((B.f[i] < lim) & (B.f[i] > -lim)); /* NaN, ±inf, rounds to inf */
        if (j->out_bf16) { /* round to nearest, ties to even (finite values) */
            uint16_t *o = (uint16_t *)j->out + (at - j->start);
            for (int i = 0; i < m; i++) {
                const uint32_t u = B.u[i];
                o[i] = (uint16_t)((((u >> 16) & 1u) + 0x7FFFu + u) >> 16);
            }
        } else {
            memcpy((float *)j->out + (at - j->start), B.f, (size_t)m * 4);
        }
    }
    j->bad |= bad;
}
