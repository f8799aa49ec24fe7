/* The body of batchnorm.c for one element type T; NAME(f) appends the type's suffix.
 * Notation as in bnexp/norm.py: m values per channel, mean μ, biased variance σ²,
 * invstd = 1/√(σ² + ε), a = γ·invstd, output y = (x − μ)·a + β. (Not x·a + (β − μ·a), torch's
 * CPU form: on an input far from zero, x·a and β − μ·a nearly cancel, losing float precision.)
 * Pointers that may be NULL: w, b (no affine), rm, rv (no running estimates),
 * dx, dw, db (gradient not needed).
 */

/* Σ x[i] and Σ (x[i] − mu)² over a contiguous run, with 4 partial sums (a shorter dependency chain) */
static double NAME(run_sum)(const T* x, long n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    long i = 0;
    for (; i + 4 <= n; i += 4) { s0 += x[i]; s1 += x[i + 1]; s2 += x[i + 2]; s3 += x[i + 3]; }
    for (; i < n; i++) s0 += x[i];
    return (s0 + s1) + (s2 + s3);
}

static double NAME(run_sqdev)(const T* x, long n, double mu) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    long i = 0;
    for (; i + 4 <= n; i += 4) {
        double d0 = x[i] - mu, d1 = x[i + 1] - mu, d2 = x[i + 2] - mu, d3 = x[i + 3] - mu;
        s0 += d0 * d0; s1 += d1 * d1; s2 += d2 * d2; s3 += d3 * d3;
    }
    for (; i < n; i++) { double d = x[i] - mu; s0 += d * d; }
    return (s0 + s1) + (s2 + s3);
}

/* Forward. batch_stats: normalize with this batch's μ, σ² (else with rm, rv as they are on entry).
 * factor >= 0: update rm, rv in place, running = (1 − factor)·running + factor·batch, with the
 * unbiased variance σ²·m/(m − 1); factor < 0: no update.
 * Writes y (x's layout) and stats = [μ (C values), invstd (C values)], which backward takes.
 * Returns 0, or 1 when out of memory. */
int NAME(bn_forward)(const T* restrict x, T* restrict y, long outer, long C, long inner,
                     const T* w, const T* b, T* rm, T* rv, int batch_stats, double factor,
                     double eps, T* restrict stats) {
    T* mean = stats;
    T* invstd = stats + C;
    long m = outer * inner;
    double* acc = calloc(2 * C, sizeof(double)); /* Σ x, then Σ (x − μ)², per channel */
    T* ab = malloc(2 * C * sizeof(T));           /* a, then β, per channel */
    if (!acc || !ab) { free(acc); free(ab); return 1; }
    double* mu = acc;
    double* var = acc + C;
    if (batch_stats || factor >= 0) {
        if (inner == 1) { /* (N, C) and channels_last: the channels are the contiguous dim */
            for (long o = 0; o < outer; o++)
                for (long c = 0; c < C; c++) mu[c] += x[o * C + c];
            for (long c = 0; c < C; c++) mu[c] /= m;
            for (long o = 0; o < outer; o++)
                for (long c = 0; c < C; c++) { double d = x[o * C + c] - mu[c]; var[c] += d * d; }
        } else {
            for (long o = 0; o < outer; o++)
                for (long c = 0; c < C; c++) mu[c] += NAME(run_sum)(x + (o * C + c) * inner, inner);
            for (long c = 0; c < C; c++) mu[c] /= m;
            for (long o = 0; o < outer; o++)
                for (long c = 0; c < C; c++) var[c] += NAME(run_sqdev)(x + (o * C + c) * inner, inner, mu[c]);
        }
        for (long c = 0; c < C; c++) var[c] /= m; /* biased */
    }
    for (long c = 0; c < C; c++) {
        double mc = batch_stats ? mu[c] : rm[c], vc = batch_stats ? var[c] : rv[c];
        mean[c] = (T)mc;
        invstd[c] = (T)(1.0 / sqrt(vc + eps));
        ab[c] = (w ? w[c] : (T)1) * invstd[c];
        ab[C + c] = b ? b[c] : (T)0;
    }
    if (factor >= 0)
        for (long c = 0; c < C; c++) {
            rm[c] = (T)((1 - factor) * rm[c] + factor * mu[c]);
            rv[c] = (T)((1 - factor) * rv[c] + factor * var[c] * m / (m - 1));
        }
    const T* a = ab;
    const T* beta = ab + C;
    if (inner == 1) {
        for (long o = 0; o < outer; o++)
            for (long c = 0; c < C; c++) y[o * C + c] = (x[o * C + c] - mean[c]) * a[c] + beta[c];
    } else {
        for (long o = 0; o < outer; o++)
            for (long c = 0; c < C; c++) {
                const T* xr = x + (o * C + c) * inner;
                T* yr = y + (o * C + c) * inner;
                T mc = mean[c], ac = a[c], bc = beta[c];
                for (long i = 0; i < inner; i++) yr[i] = (xr[i] - mc) * ac + bc;
            }
    }
    free(acc);
    free(ab);
    return 0;
}

/* Backward, given dy (x's layout) and forward's stats. With g = Σ dy and h = Σ dy·(x − μ) per channel:
 * dβ = g, dγ = h·invstd, and dx = a·dy + cb + kb·(x − μ) with cb = −a·g/m, kb = −a·h·invstd²/m
 * when the forward used batch statistics; dx = a·dy when it used constants (cb = kb = 0).
 * Returns 0, or 1 when out of memory. */
int NAME(bn_backward)(const T* restrict dy, const T* restrict x, T* restrict dx, long outer, long C,
                      long inner, const T* w, const T* restrict stats, int batch_stats, T* dw, T* db) {
    const T* mean = stats;
    const T* invstd = stats + C;
    long m = outer * inner;
    double* acc = calloc(2 * C, sizeof(double)); /* g, h per channel */
    T* coef = malloc(3 * C * sizeof(T));         /* a, cb, kb per channel */
    if (!acc || !coef) { free(acc); free(coef); return 1; }
    double* g = acc;
    double* h = acc + C;
    if (inner == 1) {
        for (long o = 0; o < outer; o++)
            for (long c = 0; c < C; c++) {
                double d = dy[o * C + c];
                g[c] += d;
                h[c] += d * (x[o * C + c] - mean[c]);
            }
    } else {
        for (long o = 0; o < outer; o++)
            for (long c = 0; c < C; c++) {
                const T* xr = x + (o * C + c) * inner;
                const T* dr = dy + (o * C + c) * inner;
                double mc = mean[c], s0 = 0, s1 = 0, t0 = 0, t1 = 0;
                long i = 0;
                for (; i + 2 <= inner; i += 2) {
                    s0 += dr[i]; t0 += dr[i] * (xr[i] - mc);
                    s1 += dr[i + 1]; t1 += dr[i + 1] * (xr[i + 1] - mc);
                }
                for (; i < inner; i++) { s0 += dr[i]; t0 += dr[i] * (xr[i] - mc); }
                g[c] += s0 + s1;
                h[c] += t0 + t1;
            }
    }
    T* a = coef;
    T* cb = coef + C;
    T* kb = coef + 2 * C;
    for (long c = 0; c < C; c++) {
        double ac = (w ? w[c] : (T)1) * (double)invstd[c];
        if (dw) dw[c] = (T)(h[c] * invstd[c]);
        if (db) db[c] = (T)g[c];
        a[c] = (T)ac;
        cb[c] = batch_stats ? (T)(-ac * g[c] / m) : 0;
        kb[c] = batch_stats ? (T)(-ac * h[c] * invstd[c] * invstd[c] / m) : 0;
    }
    if (dx) {
        if (inner == 1) {
            for (long o = 0; o < outer; o++)
                for (long c = 0; c < C; c++)
                    dx[o * C + c] = dy[o * C + c] * a[c] + cb[c] + kb[c] * (x[o * C + c] - mean[c]);
        } else {
            for (long o = 0; o < outer; o++)
                for (long c = 0; c < C; c++) {
                    const T* xr = x + (o * C + c) * inner;
                    const T* dr = dy + (o * C + c) * inner;
                    T* r = dx + (o * C + c) * inner;
                    T ac = a[c], cc = cb[c], kc = kb[c], mc = mean[c];
                    for (long i = 0; i < inner; i++) r[i] = dr[i] * ac + cc + kc * (xr[i] - mc);
                }
        }
    }
    free(acc);
    free(coef);
    return 0;
}
