/* The chunked probe's CPU kernel: causal softmax and distance sums of one chunk of scores, in one sweep per row.
 *
 * Compiled on first use by gammalens.probe.native (plain C, no Python or PyTorch headers: `cc -O3 -shared`), and
 * called through ctypes on the scores buffer of one query chunk. For each row (query q = q0 + i over keys
 * 0 … kend − 1, kend = q0 + c) it
 *   1. finds the row maximum over the visible keys 0 … q,
 *   2. writes e_j = exp(s_j − max) in place and sums them,
 *   3. writes p_j = e_j / Σe in place (future keys: exactly 0), adds the sink keys' p to the row's sink sum and
 *      every other key's p to the distance sums of its (batch, head), indexed so that column t of a buffer of
 *      width W holds distance d = W − 1 − t (the layout of gammalens.probe.accumulate's skew view; one buffer of
 *      width n serves all chunks of a layer).
 * The sums are fp64 (each fp32 probability is added exactly once), so a layer of any length accumulates in one
 * buffer without the rounding growth of long fp32 sums. The row stays in the core's caches across the three passes, so the scores are read from memory once, instead of
 * once for the softmax and once more for the diagonal sums. exp is Cephes' single-precision expf (degree-5
 * polynomial after reduction by ln 2, ≤ 2 ulp on the range used here), eight lanes at a time with AVX2/FMA.
 *
 * Rows are the flat index r = bh·c + i; a caller splits [0, B·H·c) into spans, one per thread, each with its own
 * accumulators, so no two threads write the same memory.
 */

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GL_AVX2 1
#else
#define GL_AVX2 0
#endif

/* exp(−87.3365…) is FLT_MIN's neighbourhood: below it results would be subnormal; clamping there changes a
 * probability by < 1.2e−38, far below fp32 resolution of a row that sums to 1. NaN passes through unchanged. */
#define GL_EXP_LO (-87.33654f)

static inline float gl_expf(float x) {
    if (x < GL_EXP_LO) x = GL_EXP_LO; /* false for NaN: NaN propagates */
    float fx = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - fx * 0.693359375f - fx * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    if (fx != fx) return y; /* NaN */
    union { uint32_t i; float f; } scale = { (uint32_t)((int32_t)fx + 127) << 23 };
    return y * scale.f;
}

#if GL_AVX2
static inline __m256 gl_exp8(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(GL_EXP_LO), x); /* maxps returns its second operand for NaN: x */
    __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(_mm256_mul_ps(y, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* NaN lanes: fx is NaN, the integer conversion gives garbage, but y is NaN and stays NaN after the scale */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static inline float gl_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float gl_hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* One row: p = softmax(s[0 … len)), s[len … kend) = 0; sink mass of keys < sinks; acc[j − … ] += p for j ≥ sinks. */
static void gl_row(float *s, int64_t len, int64_t kend, int64_t sinks, double *acc, double *sink_out) {
    int64_t j = 0;
    float m = -INFINITY;
    int has_nan = 0;
#if GL_AVX2
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (; j + 8 <= len; j += 8) {
        __m256 x = _mm256_loadu_ps(s + j);
        has_nan |= _mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        vm = _mm256_max_ps(vm, x);
    }
    m = gl_hmax8(vm);
#endif
    for (; j < len; ++j) {
        if (s[j] != s[j]) has_nan = 1;
        if (s[j] > m) m = s[j];
    }
    if (has_nan) m = NAN; /* a NaN score makes its row NaN, as torch.softmax does; the accumulator names the head */

    float sum = 0.0f;
    j = 0;
#if GL_AVX2
    __m256 vs = _mm256_setzero_ps(), vmax = _mm256_set1_ps(m);
    for (; j + 8 <= len; j += 8) {
        __m256 e = gl_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmax));
        _mm256_storeu_ps(s + j, e);
        vs = _mm256_add_ps(vs, e);
    }
    sum = gl_hsum8(vs);
#endif
    for (; j < len; ++j) {
        float e = gl_expf(s[j] - m);
        s[j] = e;
        sum += e;
    }

    const float inv = 1.0f / sum;
    const int64_t ns = sinks < len ? sinks : len;
    float sink = 0.0f;
    for (j = 0; j < ns; ++j) {
        s[j] *= inv;
        sink += s[j];
    }
    *sink_out += (double)sink;
    j = ns;
#if GL_AVX2
    __m256 vinv = _mm256_set1_ps(inv);
    for (; j + 8 <= len; j += 8) {
        __m256 p = _mm256_mul_ps(_mm256_loadu_ps(s + j), vinv);
        _mm256_storeu_ps(s + j, p);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(p)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(p, 1));
        _mm256_storeu_pd(acc + j, _mm256_add_pd(_mm256_loadu_pd(acc + j), lo));
        _mm256_storeu_pd(acc + j + 4, _mm256_add_pd(_mm256_loadu_pd(acc + j + 4), hi));
    }
#endif
    for (; j < len; ++j) {
        s[j] *= inv;
        acc[j] += (double)s[j];
    }
    if (len < kend) memset(s + len, 0, (size_t)(kend - len) * sizeof(float));
}

/* Rows [r0, r1) of a causal chunk: scores (BH, c, kend) contiguous fp32, in place → probabilities.
 *
 * acc   (BH, 2, width) fp64, this caller's, width ≥ kend: column t holds distance d = width − 1 − t, so one buffer
 *       of width n takes every chunk of a layer. [bh][1][t] sums rows with q ≥ cs_from (the common-support side),
 *       [bh][0][t] the other rows; the caller adds [1] to [0] to get every row's sum.
 * sink  (BH) fp64: sink-key mass of rows with q ≥ sinks.
 * Returns 0, or −1 for arguments it cannot serve. */
int gammalens_causal_rows(float *scores, int64_t r0, int64_t r1, int64_t c, int64_t kend, int64_t q0, int64_t sinks,
                          int64_t cs_from, double *acc, int64_t width, double *sink) {
    if (c <= 0 || kend != q0 + c || width < kend || r0 < 0 || r1 < r0 || sinks < 0) return -1;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t bh = r / c, i = r % c, q = q0 + i;
        float *row = scores + r * kend;
        /* key j at distance q − j lands in column width − 1 − (q − j): shift the accumulator by width − 1 − q */
        double *a = acc + (bh * 2 + (q >= cs_from ? 1 : 0)) * width + (width - 1 - q);
        double dummy = 0.0;
        gl_row(row, q + 1, kend, sinks, a, q >= sinks ? sink + bh : &dummy);
    }
    return 0;
}

/* Which instruction set this build uses: 1 = AVX2 + FMA lanes, 0 = portable scalar C. */
int gammalens_simd(void) { return GL_AVX2; }
