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
    const uint64_t *states; /* masks: SFC64 seed words of block j at states[3j .. 3j+2] */
    uint64_t keep_below;    /* DARE: a uint32 draw below this keeps its element */
    uint8_t *bits;          /* DARE keep bit of element i: bit i%8 of bits[i/8] (masks writes, zeroed first) */
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

#define AHEAD (4 * CH) /* elements prefetched ahead (2 pages of bf16): the hardware prefetcher stops at pages */

static inline void load(const void *p, int bf16, int64_t at, int m, buf *x) {
    const int es = bf16 ? 2 : 4;
    for (int k = 0; k < m * es; k += 64) /* a hint: an address past the mapping is ignored, never a fault */
        __builtin_prefetch((const char *)p + (at + AHEAD) * es + k, 0, 1);
    if (bf16) { /* bf16 -> float32 is exact: the bits shifted up */
        const uint16_t *s = (const uint16_t *)p + at;
        for (int i = 0; i < m; i++) x->u[i] = (uint32_t)s[i] << 16;
    } else {
        memcpy(x->f, (const float *)p + at, (size_t)m * 4);
    }
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

/* K[i] = keep bit of element at + i (0.0f or 1.0f) */
static inline void unpack_bits(const uint8_t *bits, int64_t at, int m, float *K) {
    int i = 0;
    if ((at & 7) == 0)
        for (; i + 8 <= m; i += 8) {
            const unsigned v = bits[(at + i) >> 3];
            for (int k = 0; k < 8; k++) K[i + k] = (float)((v >> k) & 1u);
        }
    for (; i < m; i++) K[i] = (float)((bits[(at + i) >> 3] >> ((at + i) & 7)) & 1u);
}

#define G 8 /* blocks whose SFC64 streams advance together (one vector of 64-bit lanes) */
typedef uint64_t u64xG __attribute__((vector_size(8 * G))); /* GCC/Clang vector extension */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the keep bits are stored as little-endian 64-bit words"
#endif

/* Keep bits of elements [e, e + 64) of the block starting at bs (bm elements long) from acc's 64 bits. */
static inline void put_bits(uint8_t *bits, int64_t bs, int64_t bm, int64_t e, uint64_t acc) {
    const int64_t count = bm - e < 64 ? bm - e : 64;
    if (count == 64 && ((bs + e) & 7) == 0) {
        memcpy(bits + ((bs + e) >> 3), &acc, 8);
    } else {
        for (int64_t k = 0; k < count; k++)
            bits[(bs + e + k) >> 3] |= (uint8_t)(((acc >> k) & 1u) << ((bs + e + k) & 7));
    }
}

/* DARE keep bits of every element of the tensor (elements [0, n)): block b's element i is kept when
 * the i-th uint32 of its SFC64 stream (seeded from states[3b .. 3b+2]; the low half of each 64-bit
 * word first) is below keep_below. G blocks' streams run side by side in vector lanes. */
CLONES void mk_masks(mk_job *j) {
    const int64_t n = j->n, block = j->block, nb = (n + block - 1) / block;
    const uint64_t kb = j->keep_below;
    for (int64_t b0 = 0; b0 < nb; b0 += G) {
        u64xG s0, s1, s2, s3, acc = {0};
        int64_t words = 0;
        for (int g = 0; g < G; g++) {
            const int64_t b = b0 + g < nb ? b0 + g : b0;
            s0[g] = j->states[3 * b]; s1[g] = j->states[3 * b + 1]; s2[g] = j->states[3 * b + 2]; s3[g] = 1;
            const int64_t len = b0 + g < nb ? ((n - b * block < block ? n - b * block : block) + 1) / 2 : 0;
            if (len > words) words = len;
        }
        for (int64_t t = -12; t < words; t++) { /* words -12 .. -1: the seeding's warm-up */
            const u64xG x = s0 + s1 + s3;
            s3 += 1;
            s0 = s1 ^ (s1 >> 11);
            s1 = s2 + (s2 << 3);
            s2 = ((s2 << 24) | (s2 >> 40)) + x;
            if (t < 0) continue;
            const int p = 2 * (int)(t & 31);
            acc |= (((u64xG)((x & 0xFFFFFFFFu) < kb) & 1) << p) | (((u64xG)((x >> 32) < kb) & 1) << (p + 1));
            if ((t & 31) == 31 || t == words - 1) {
                for (int g = 0; g < G && b0 + g < nb; g++) {
                    const int64_t bs = (b0 + g) * block, bm = n - bs < block ? n - bs : block;
                    if (2 * (t & ~31) < bm) put_bits(j->bits, bs, bm, 2 * (t & ~31), acc[g]);
                }
                acc = (u64xG){0};
            }
        }
    }
}

/* K[i] = 1.0f where |δ|'s key > thr, or == thr while job->left lasts (the lowest indices first) */
static inline void topk_keep(mk_job *j, const uint32_t *key, float *K, int m) {
    const uint32_t thr = j->thr;
    int64_t eq = 0;
    if (j->left > 0)
        for (int i = 0; i < m; i++) eq += key[i] == thr;
    if (eq == 0) {
        for (int i = 0; i < m; i++) K[i] = (float)(key[i] > thr);
    } else if (eq <= j->left) { /* every equal key of this chunk is kept */
        for (int i = 0; i < m; i++) K[i] = (float)(key[i] >= thr);
        j->left -= eq;
    } else { /* the chunk where the equal keys run out */
        for (int i = 0; i < m; i++) K[i] = (float)(key[i] > thr);
        for (int i = 0; i < m && j->left > 0; i++)
            if (key[i] == thr) { K[i] = 1.0f; j->left--; }
    }
}

/* TIES bracket [lo, hi] over keys a[0..m): job->gt += how many exceed hi; the keys inside are appended to
 * job->cands in index order (which has room for 16 more than it gets). */
static int portable_only; /* mk_portable(1): the portable loop on every CPU (so the tests run both) */
void mk_portable(int on) { portable_only = on; }

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx512f"))) static int bracket512(mk_job *j, const uint32_t *a, int m) {
    const __m512i lo = _mm512_set1_epi32((int)j->lo), hi = _mm512_set1_epi32((int)j->hi);
    const __m512i width = _mm512_set1_epi32((int)(j->hi - j->lo));
    int64_t gt = 0, nc = j->ncands;
    int i = 0;
    for (; i + 16 <= m; i += 16) { /* compress the keys inside into one vector, store all 16 lanes */
        const __m512i k = _mm512_loadu_si512(a + i);
        const __mmask16 in = _mm512_cmple_epu32_mask(_mm512_sub_epi32(k, lo), width);
        gt += __builtin_popcount(_mm512_cmpgt_epu32_mask(k, hi));
        _mm512_storeu_si512(j->cands + nc, _mm512_maskz_compress_epi32(in, k));
        nc += __builtin_popcount(in);
    }
    for (; i < m; i++) {
        gt += a[i] > j->hi;
        if (a[i] - j->lo <= j->hi - j->lo) j->cands[nc++] = a[i];
    }
    j->gt += gt;
    j->ncands = nc;
    return 1;
}

/* DARE with the keep bits used as AVX-512 masks (16 elements per 2 bytes of bits; at is a multiple of
 * 8, as every chunk start is). Pass 1: T = keep ? |δ| : +0 — equal to |δ|·K for every finite |δ| (≥ 0);
 * a non-finite δ makes pass 2's output non-finite whatever the mask, so the merge fails either way —
 * and kept += popcount. Pass 2: D = keep ? D : D·0 — the product D·K exactly (D·1 is D, bit for bit). */
__attribute__((target("avx512f"))) static void dare_stats512(const uint8_t *bits, int64_t at, int m, const float *A,
                                                             float *T, int64_t *kept) {
    const uint8_t *p = bits + (at >> 3);
    int64_t k = 0;
    int i = 0;
    for (; i + 16 <= m; i += 16) {
        uint16_t mk;
        memcpy(&mk, p + (i >> 3), 2);
        _mm512_storeu_ps(T + i, _mm512_maskz_mov_ps((__mmask16)mk, _mm512_loadu_ps(A + i)));
        k += __builtin_popcount(mk);
    }
    for (; i < m; i++) {
        const int keep = (p[i >> 3] >> (i & 7)) & 1;
        T[i] = A[i] * (float)keep;
        k += keep;
    }
    *kept += k;
}

__attribute__((target("avx512f"))) static void dare_apply512(const uint8_t *bits, int64_t at, int m, float *D) {
    const uint8_t *p = bits + (at >> 3);
    const __m512 zero = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= m; i += 16) {
        uint16_t mk;
        memcpy(&mk, p + (i >> 3), 2);
        const __m512 d = _mm512_loadu_ps(D + i);
        _mm512_storeu_ps(D + i, _mm512_mask_mul_ps(d, (__mmask16)~mk, d, zero));
    }
    for (; i < m; i++) D[i] *= (float)((p[i >> 3] >> (i & 7)) & 1);
}
#define HAVE_512 (!portable_only && __builtin_cpu_supports("avx512f"))
#else
#define HAVE_512 0
#define bracket512(j, a, m) 0
#define dare_stats512(bits, at, m, A, T, kept) ((void)0)
#define dare_apply512(bits, at, m, D) ((void)0)
#endif

static inline void bracket(mk_job *j, const uint32_t *a, int m) {
    if (j->lo > j->hi) { /* an empty bracket: counts only */
        for (int i = 0; i < m; i++) j->gt += a[i] > j->hi;
        return;
    }
    if (HAVE_512 && bracket512(j, a, m)) return;
    int64_t gt = 0, nc = j->ncands;
    const uint32_t lo = j->lo, hi = j->hi, width = hi - lo;
    uint8_t in[CH + 8];
    memset(in + m, 0, 8); /* the flags the last 8-byte test reads past m */
    for (int i = 0; i < m; i++) gt += a[i] > hi;
    for (int i = 0; i < m; i++) in[i] = a[i] - lo <= width; /* lo <= key <= hi, one compare */
    for (int i = 0; i < m; i += 8) { /* the few keys inside, 8 flags (bytes) tested at once */
        uint64_t v;
        memcpy(&v, in + i, 8);
        for (; v; v &= v - 1) j->cands[nc++] = a[i + (__builtin_ctzll(v) >> 3)];
    }
    j->gt += gt;
    j->ncands = nc;
}

/* Pass 1: sums (Σ|δ|·keep with DARE's bits or a TIES threshold), TIES bracket counts. */
CLONES void mk_stats(mk_job *j) {
    static const uint32_t SIGN = 0x7FFFFFFFu;
    buf B, D, A, K, T;
    const int64_t end = j->start + j->n;
    for (int64_t bs = j->start; bs < end; bs += j->block) {
        const int64_t bm = (end - bs < j->block) ? end - bs : j->block;
        double L[4][8] = {{0}};
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
            if (j->bits && HAVE_512 && (at & 7) == 0) { /* DARE: the keep bits mk_masks drew */
                dare_stats512(j->bits, at, m, A.f, T.f, &j->kept);
            } else if (j->bits) {
                unpack_bits(j->bits, at, m, K.f);
                int64_t kept = 0;
                for (int i = 0; i < m; i++) kept += K.f[i] != 0.0f;
                j->kept += kept;
                for (int i = 0; i < m; i++) T.f[i] = A.f[i] * K.f[i];
            } else if (j->topk) {
                topk_keep(j, A.u, K.f, m);
                for (int i = 0; i < m; i++) T.f[i] = A.f[i] * K.f[i];
            }
            if (j->bits || j->topk)
                lanes(L[1], T.f, m, 0);
            if (j->cands) bracket(j, A.u, m);
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
        int masked = j->bits || j->topk;
        if (j->bits && HAVE_512 && (at & 7) == 0) {
            dare_apply512(j->bits, at, m, D.f); /* the loop's first step, d·K, done here */
            masked = 0;
        } else if (j->bits) {
            unpack_bits(j->bits, at, m, K.f);
        } else if (j->topk) {
            uint32_t key[CH];
            for (int i = 0; i < m; i++) key[i] = D.u[i] & 0x7FFFFFFFu;
            topk_keep(j, key, K.f, m);
        }
        const float sc = j->scale, w = j->w, dv = j->div, lam = j->lam, lim = j->limit;
        const int hs = j->has_scale, hd = j->has_div, hl = j->has_lam;
        for (int i = 0; i < m; i++) { /* one float32 operation per step, in fast.py's order */
            float d = D.f[i];
            if (masked) d *= K.f[i]; /* a product, as numpy's: -0.0 and NaN behave alike */
            if (hs) d *= sc;
            d *= w;
            if (hd) d /= dv;
            if (hl) d *= lam;
            const float o = B.f[i] + d;
            bad |= !((o < lim) & (o > -lim)); /* NaN, ±inf, values that round to inf */
            B.f[i] = o;
        }
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

/* TIES sample: the keys (|δ|'s float32 bits, δ = f − b) of elements [s, s + run) for s = 0, stride,
 * 2·stride, … below n; returns how many were written to out. */
CLONES int64_t mk_sample(const mk_job *j, int64_t stride, int64_t run, uint32_t *out) {
    buf B, D;
    int64_t t = 0;
    for (int64_t s = 0; s < j->n; s += stride) {
        const int64_t e = j->n - s < run ? j->n : s + run;
        for (int64_t at = s; at < e; at += CH) {
            const int m = (int)(e - at < CH ? e - at : CH);
            load(j->b, j->b_bf16, at, m, &B);
            load(j->f, j->f_bf16, at, m, &D);
            for (int i = 0; i < m; i++) D.f[i] -= B.f[i];
            for (int i = 0; i < m; i++) out[t + i] = D.u[i] & 0x7FFFFFFFu;
            t += m;
        }
    }
    return t;
}
