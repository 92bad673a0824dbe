/* Fused CPU kernels for the explicit SAC update's MLP layers (policies/sac_backprop.py), after a hidden
 * layer's matrix product z = x W:
 *
 *     forward   h = act(LayerNorm(z + b) * gamma + beta), or h = act(z + b) without LayerNorm, and for a
 *               critic's last hidden layer also its one-output Q head, q = h . w + c
 *     backward  dz, and the column sums that give d bias, d gamma, d beta (and the Q head's d w)
 *
 * in one pass over each row instead of the 3-6 separate ATen kernels (bias copy, layer norm, affine,
 * activation; their backward, two products and three reductions). Rows are independent; row (e, b) is
 * member e's b-th sample, so an ensemble (E, B, H) and a plain (N, H) layer (E = 1) use the same code.
 * Last, the actor's tanh-squashed Gaussian head, forward and backward. Loaded by policies/fused_layers.py,
 * which documents shapes and strides; built with -fopenmp and the vector math library (the math functions
 * are declared SIMD below, so loops over them call the AVX/AVX-512 variants).
 *
 * act: 0 = tanh, 1 = relu. Strides are in floats. The activation's derivative is read from its output:
 * tanh' = 1 - h^2, relu' = [h > 0].
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#pragma omp declare simd notinbranch
float tanhf(float);

enum { ACT_TANH = 0, ACT_RELU = 1 };

/* dy = scale * dh * act'(h) */
static inline void activation_grad(const float *dh, float scale, const float *h, float *dy, long n, int act)
{
    if (act == ACT_TANH) {
#pragma omp simd
        for (long j = 0; j < n; j++) dy[j] = scale * dh[j] * (1.f - h[j] * h[j]);
    } else {
#pragma omp simd
        for (long j = 0; j < n; j++) dy[j] = h[j] > 0.f ? scale * dh[j] : 0.f;
    }
}

/* Row reductions. A plain loop chains every vector add on the previous one and ends in a serial scalar
 * sum; here 4 vector accumulators (GCC/Clang vector extensions: AVX-512, AVX2 or SSE as the CPU has) run
 * independently and the final horizontal sum is a tree. */
#define VW 16
typedef float vec __attribute__((vector_size(VW * sizeof(float))));
typedef float vec_u __attribute__((vector_size(VW * sizeof(float)), aligned(4)));  /* unaligned loads */

static inline float hsum(vec v)
{
    float t[VW];
    memcpy(t, &v, sizeof t);
    for (int w = VW / 2; w > 0; w /= 2)
        for (int k = 0; k < w; k++) t[k] += t[k + w];
    return t[0];
}

static inline vec load(const float *p) { return *(const vec_u *)p; }

/* sum_j a_j, and sum_j a_j b_j when b is not NULL (into *dot) */
static inline float row_sum(const float *a, const float *b, long n, float *dot)
{
    vec s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, d0 = {0}, d1 = {0}, d2 = {0}, d3 = {0};
    long j = 0;
    for (; j + 4 * VW <= n; j += 4 * VW) {
        vec a0 = load(a + j), a1 = load(a + j + VW), a2 = load(a + j + 2 * VW), a3 = load(a + j + 3 * VW);
        s0 += a0; s1 += a1; s2 += a2; s3 += a3;
        if (b) {
            d0 += a0 * load(b + j); d1 += a1 * load(b + j + VW);
            d2 += a2 * load(b + j + 2 * VW); d3 += a3 * load(b + j + 3 * VW);
        }
    }
    float s = hsum((s0 + s1) + (s2 + s3)), d = b ? hsum((d0 + d1) + (d2 + d3)) : 0.f;
    for (; j < n; j++) {
        s += a[j];
        if (b) d += a[j] * b[j];
    }
    if (b) *dot = d;
    return s;
}

/* sum_j (x_j - m)^2 */
static inline float row_sum_sq_dev(const float *x, float m, long n)
{
    vec s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    long j = 0;
    for (; j + 4 * VW <= n; j += 4 * VW) {
        vec a0 = load(x + j) - m, a1 = load(x + j + VW) - m, a2 = load(x + j + 2 * VW) - m,
            a3 = load(x + j + 3 * VW) - m;
        s0 += a0 * a0; s1 += a1 * a1; s2 += a2 * a2; s3 += a3 * a3;
    }
    float s = hsum((s0 + s1) + (s2 + s3));
    for (; j < n; j++) s += (x[j] - m) * (x[j] - m);
    return s;
}

/* A one-output linear head on the row h: h . w + b */
static inline float head_out(const float *h, const float *w, float b, long n)
{
    float dot = 0.f;
    row_sum(h, w, n, &dot);
    return dot + b;
}

/* p += s * h (a column sum of the head's weight gradient) */
static inline void add_scaled(float *p, float s, const float *h, long n)
{
#pragma omp simd
    for (long j = 0; j < n; j++) p[j] += s * h[j];
}

/* Row r = e * B + b of a strided (E, B, H) tensor. */
#define ROW(base, se, sb, r, B) ((base) + ((r) / (B)) * (se) + ((r) % (B)) * (sb))

/* x += b and the sum of the new x, in one pass (4 independent vector accumulators, as row_sum) */
static inline float add_and_sum(float *x, const float *b, long n)
{
    vec s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    long j = 0;
    for (; j + 4 * VW <= n; j += 4 * VW) {
        vec a0 = load(x + j) + load(b + j), a1 = load(x + j + VW) + load(b + j + VW),
            a2 = load(x + j + 2 * VW) + load(b + j + 2 * VW), a3 = load(x + j + 3 * VW) + load(b + j + 3 * VW);
        *(vec_u *)(x + j) = a0; *(vec_u *)(x + j + VW) = a1;
        *(vec_u *)(x + j + 2 * VW) = a2; *(vec_u *)(x + j + 3 * VW) = a3;
        s0 += a0; s1 += a1; s2 += a2; s3 += a3;
    }
    float s = hsum((s0 + s1) + (s2 + s3));
    for (; j < n; j++) s += (x[j] += b[j]);
    return s;
}

/* z (E, B, H) with strides (zse, zsb, 1) is overwritten with z + bias (the backward reads it); h, mean and
 * rstd are contiguous (E, B, H), (E, B), (E, B). bias, gamma, beta: (E, H) with member stride `pse`.
 * With head_w (E, H, member stride hse) and head_b (E, member stride hbse), also a one-output linear head
 * on h: q[r] = h_r . head_w[e] + head_b[e], (E, B) contiguous (a critic's Q, while h_r is in L1). */
void rs_ln_act_forward(float *z, long zse, long zsb, const float *bias, const float *gamma, const float *beta,
                       long pse, float *h, float *mean, float *rstd, const float *head_w, long hse,
                       const float *head_b, long hbse, float *q, long E, long B, long H, int act, float eps,
                       int threads)
{
    const long rows = E * B;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long r = 0; r < rows; r++) {
        const long e = r / B;
        float *x = ROW(z, zse, zsb, r, B), *hr = h + r * H;
        const float *g = gamma + e * pse, *bt = beta + e * pse;
        const float m = add_and_sum(x, bias + e * pse, H) / (float)H;
        const float rs = 1.f / sqrtf(row_sum_sq_dev(x, m, H) / (float)H + eps);
        if (act == ACT_TANH) {  /* the affine into h, then tanh in place: two simple loops vectorise best */
#pragma omp simd
            for (long j = 0; j < H; j++) hr[j] = (x[j] - m) * rs * g[j] + bt[j];
#pragma omp simd
            for (long j = 0; j < H; j++) hr[j] = tanhf(hr[j]);
        } else {
#pragma omp simd
            for (long j = 0; j < H; j++) {
                const float y = (x[j] - m) * rs * g[j] + bt[j];
                hr[j] = y > 0.f ? y : 0.f;
            }
        }
        mean[r] = m;
        rstd[r] = rs;
        if (head_w) q[r] = head_out(hr, head_w + e * hse, head_b[e * hbse], H);
    }
}

/* Column sums per member: each thread adds its rows into its own (E, K * H) slice of `partial`, then the
 * slices are summed into out[k] (E, H, member stride pse). Deterministic for a fixed thread count. */
static void reduce_partials(const float *partial, int threads, long E, long H, int K, float **out, long pse)
{
    for (int k = 0; k < K; k++) {
        if (out[k] == NULL) continue;
        for (long e = 0; e < E; e++)
            for (long j = 0; j < H; j++) {
                float s = 0.f;
                for (int t = 0; t < threads; t++) s += partial[((size_t)t * E + e) * K * H + k * H + j];
                out[k][e * pse + j] = s;
            }
    }
}

/* Backward of rs_ln_act_forward. The upstream gradient of row r is row_scale[r] * dh_r (row_scale NULL: 1),
 * dh strided (dhse, dhsb): a contiguous (E, B, H), or with row stride 0 one vector per member (a one-output
 * head's weights, times dL/dQ per row as row_scale). h: contiguous (E, B, H); x: the forward's z + bias,
 * strided (xse, xsb); dx: contiguous (E, B, H). dgamma, dbeta, dbias (member stride pse) are written when
 * dgamma is not NULL (the weight gradients), else only dx is computed (a gradient for the input only).
 * dhead_w (E, H, member stride pse), when not NULL with the weight gradients: sum_r row_scale[r] * h_r, the
 * weight gradient of the one-output head that dh and row_scale came from. */
void rs_ln_act_backward(const float *dh, long dhse, long dhsb, const float *row_scale, const float *h,
                        const float *x, long xse, long xsb, const float *mean,
                        const float *rstd, const float *gamma, long pse, float *dx, float *dgamma, float *dbeta,
                        float *dbias, float *dhead_w, long E, long B, long H, int act, int threads)
{
    const long rows = E * B;
    const int grads = dgamma != NULL, K = dhead_w ? 4 : 3;
    float *partial = grads ? calloc((size_t)threads * E * K * H, sizeof(float)) : NULL;
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        const long lo = rows * t / T, hi = rows * (t + 1) / T;
        float *dy = malloc((size_t)3 * H * sizeof(float)), *n = dy + H, *dn = dy + 2 * H;
        for (long r = lo; r < hi; r++) {
            const long e = r / B;
            const float *xr = ROW(x, xse, xsb, r, B), *g = gamma + e * pse;
            float *dxr = dx + r * H;
            const float m = mean[r], rs = rstd[r];
            activation_grad(ROW(dh, dhse, dhsb, r, B), row_scale ? row_scale[r] : 1.f, h + r * H, dy, H, act);
#pragma omp simd
            for (long j = 0; j < H; j++) {
                n[j] = (xr[j] - m) * rs;
                dn[j] = dy[j] * g[j];
            }
            float c = 0.f;  /* a, c: the row means of dn and of dn * n */
            float a = row_sum(dn, n, H, &c) / (float)H;
            c /= (float)H;
            if (grads) {
                float *p = partial + ((size_t)t * E + e) * K * H;
#pragma omp simd
                for (long j = 0; j < H; j++) {
                    p[j] += dy[j] * n[j];
                    p[H + j] += dy[j];
                }
                if (dhead_w) add_scaled(p + 3 * H, row_scale ? row_scale[r] : 1.f, h + r * H, H);
            }
#pragma omp simd
            for (long j = 0; j < H; j++) dxr[j] = rs * (dn[j] - a - n[j] * c);
            if (grads) {
                float *p = partial + ((size_t)t * E + e) * K * H + 2 * H;
#pragma omp simd
                for (long j = 0; j < H; j++) p[j] += dxr[j];
            }
        }
        free(dy);
    }
    if (grads) {
        float *out[4] = {dgamma, dbeta, dbias, dhead_w};
        reduce_partials(partial, threads, E, H, K, out, pse);
        free(partial);
    }
}

/* Forward of a layer without LayerNorm after its matrix product: z <- act(z + bias) in place (z (E, B, H),
 * strides (zse, zsb, 1); bias (E, H), member stride pse), with the optional one-output head of
 * rs_ln_act_forward (q[r] = h_r . head_w[e] + head_b[e]). */
void rs_act_forward(float *z, long zse, long zsb, const float *bias, long pse, const float *head_w, long hse,
                    const float *head_b, long hbse, float *q, long E, long B, long H, int act, int threads)
{
    const long rows = E * B;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long r = 0; r < rows; r++) {
        const long e = r / B;
        float *x = ROW(z, zse, zsb, r, B);
        const float *b = bias + e * pse;
        if (act == ACT_TANH) {
#pragma omp simd
            for (long j = 0; j < H; j++) x[j] += b[j];
#pragma omp simd
            for (long j = 0; j < H; j++) x[j] = tanhf(x[j]);
        } else {
#pragma omp simd
            for (long j = 0; j < H; j++) {
                const float y = x[j] + b[j];
                x[j] = y > 0.f ? y : 0.f;
            }
        }
        if (head_w) q[r] = head_out(x, head_w + e * hse, head_b[e * hbse], H);
    }
}

/* Backward of a layer without LayerNorm, h = act(z): dz = row_scale[r] * dh_r * act'(h) (dh and row_scale as
 * in rs_ln_act_backward; dz contiguous), and dbias = the column sums of dz (member stride pse) when not NULL;
 * with dbias, dhead_w when not NULL: sum_r row_scale[r] * h_r, as in rs_ln_act_backward. */
void rs_act_backward(const float *dh, long dhse, long dhsb, const float *row_scale, const float *h, float *dz,
                     float *dbias, float *dhead_w, long pse, long E, long B, long H, int act, int threads)
{
    const long rows = E * B;
    const int K = dhead_w ? 2 : 1;
    float *partial = dbias ? calloc((size_t)threads * E * K * H, sizeof(float)) : NULL;
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        const long lo = rows * t / T, hi = rows * (t + 1) / T;
        for (long r = lo; r < hi; r++) {
            const float s = row_scale ? row_scale[r] : 1.f, *hr = h + r * H;
            activation_grad(ROW(dh, dhse, dhsb, r, B), s, hr, dz + r * H, H, act);
            if (dbias) {
                float *p = partial + ((size_t)t * E + r / B) * K * H;
                const float *d = dz + r * H;
#pragma omp simd
                for (long j = 0; j < H; j++) p[j] += d[j];
                if (dhead_w) add_scaled(p + H, s, hr, H);
            }
        }
    }
    if (dbias) {
        float *out[2] = {dbias, dhead_w};
        reduce_partials(partial, threads, E, H, K, out, pse);
        free(partial);
    }
}

/* The tanh-squashed Gaussian policy head (SAC's actor output), per row of N:
 *     u = mu + exp(clamp(log_sigma, lo, hi)) * eps,   a = tanh(u),
 *     log pi = sum_k [-eps^2 / 2 - clamp(log_sigma) - log(2 pi) / 2 - 2 (log 2 - u - softplus(-2u))]
 * mu and log_sigma are (N, A) with row stride `ld` (the two halves of the head's (N, 2A) output). Small
 * (N x A): one thread; the N * A elements are gathered into contiguous scratch so that the transcendental
 * functions run as vector calls. softplus(x) = max(x, 0) + log1p(exp(-|x|)): torch's value to float rounding
 * (torch returns x as is above 20), without a branch. */
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
float log1pf(float);

static void gather_rows(const float *src, long ld, long N, long A, float *dst)
{
    for (long r = 0; r < N; r++) memcpy(dst + r * A, src + r * ld, (size_t)A * sizeof(float));
}

void rs_tanh_gaussian_forward(const float *mu, const float *log_sigma, long ld, const float *eps, long N, long A,
                              float lo, float hi, float *action, float *log_prob)
{
    const float half_log_2pi = 0.91893853320467274f, log2 = 0.69314718055994531f;
    const long n = N * A;
    float *scratch = malloc((size_t)3 * n * sizeof(float));
    float *restrict m = scratch, *restrict ls = scratch + n, *restrict term = scratch + 2 * n;
    gather_rows(mu, ld, N, A, m);
    gather_rows(log_sigma, ld, N, A, ls);
#pragma omp simd
    for (long i = 0; i < n; i++) {
        float s = ls[i] < lo ? lo : ls[i];
        s = s > hi ? hi : s;
        const float e = eps[i], u = m[i] + expf(s) * e, x = -2.f * u;
        const float softplus = (x > 0.f ? x : 0.f) + log1pf(expf(-fabsf(x)));
        action[i] = tanhf(u);
        term[i] = -0.5f * e * e - s - half_log_2pi - 2.f * (log2 - u - softplus);
    }
    for (long r = 0; r < N; r++) {
        float lp = 0.f;
        for (long k = 0; k < A; k++) lp += term[r * A + k];
        log_prob[r] = lp;
    }
    free(scratch);
}

/* Backward for a loss L with dL/da = d_action (N, A) and dL/dlog pi = d_log_prob for every row, eps held
 * fixed (the reparameterisation): d_out (N, 2A) = [dL/dmu, dL/dlog_sigma] in the head's order, and
 * d_bias (2A) = its column sums. The clamp passes gradient only inside [lo, hi]. */
void rs_tanh_gaussian_backward(const float *log_sigma, long ld, const float *eps, const float *action,
                               const float *d_action, float d_log_prob, long N, long A, float lo, float hi,
                               float *d_out, float *d_bias)
{
    const long n = N * A;
    float *scratch = malloc((size_t)3 * n * sizeof(float));
    float *restrict ls = scratch, *restrict du = scratch + n, *restrict ds = scratch + 2 * n;
    gather_rows(log_sigma, ld, N, A, ls);
#pragma omp simd
    for (long i = 0; i < n; i++) {
        const float a = action[i], raw = ls[i];
        du[i] = d_action[i] * (1.f - a * a) + 2.f * a * d_log_prob;
        /* inside the clamp the gradient passes; outside log sigma is constant (as autograd's clamp) */
        ds[i] = raw >= lo && raw <= hi ? (du[i] * expf(raw) * eps[i] - d_log_prob) : 0.f;
    }
    memset(d_bias, 0, (size_t)2 * A * sizeof(float));
    for (long r = 0; r < N; r++) {
        memcpy(d_out + r * 2 * A, du + r * A, (size_t)A * sizeof(float));
        memcpy(d_out + r * 2 * A + A, ds + r * A, (size_t)A * sizeof(float));
        for (long k = 0; k < A; k++) {
            d_bias[k] += du[r * A + k];
            d_bias[A + k] += ds[r * A + k];
        }
    }
    free(scratch);
}
