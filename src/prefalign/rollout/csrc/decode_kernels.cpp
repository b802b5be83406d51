// The built-in generation engine's decode kernels for a few rows on the CPU, float32, AVX2 + FMA; built on first use
// by prefalign.rollout.cpu_kernels (torch.utils.cpp_extension), used only on AVX2 CPUs.
//
// small_linear: y = x @ w.T for a decode step's few rows of x (B, K) and a weight w (N, K). For a handful of rows
// the CPU BLAS reads the weight at ~5-6 GB/s (SmolLM2-135M's 211 projections, 8 rows, 2 threads) where the machine
// streams 15-20 GB/s, so a decode step spends most of its time in those products. This kernel reads each weight row
// once per block of x rows and keeps the block's partial sums in registers: NT weight rows x NB x rows of 8-float
// accumulators, a dot product per output, summed over k in order and then across the 8 lanes. The next tiles'
// weight rows are prefetched while the current tile computes.
// decode_attention: rotary embedding, cache write and attention of one new token per row (below).
// rms_norm: Hugging Face's LlamaRMSNorm (below).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

namespace {

inline float lane_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// y[b0 + j][n0 + i] = dot(w[n0 + i], x[b0 + j]) (+ res[b0 + j][n0 + i] when res is given) for i < NT, j < NB; K a
// multiple of 8. PREFETCH: also bring the weight rows two tiles on into the cache (the first block of x rows only:
// later blocks find this tile's rows there).
template <int NT, int NB, bool PREFETCH>
inline void tile(const float* x, int64_t K, const float* w, float* y, int64_t N, int64_t n0, int64_t b0,
                 const float* res) {
  __m256 acc[NT][NB];
  for (int i = 0; i < NT; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm256_setzero_ps();
  const float* wr = w + n0 * K;
  const float* xr = x + b0 * K;
  for (int64_t k = 0; k < K; k += 8) {
    if (PREFETCH && (k & 15) == 0)
      for (int i = 0; i < NT; ++i) _mm_prefetch(reinterpret_cast<const char*>(wr + (2 * NT + i) * K + k), _MM_HINT_T0);
    __m256 wv[NT];
    for (int i = 0; i < NT; ++i) wv[i] = _mm256_loadu_ps(wr + i * K + k);
    for (int j = 0; j < NB; ++j) {
      const __m256 xv = _mm256_loadu_ps(xr + j * K + k);
      for (int i = 0; i < NT; ++i) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  for (int i = 0; i < NT; ++i)
    for (int j = 0; j < NB; ++j) {
      const int64_t at = (b0 + j) * N + n0 + i;
      y[at] = res ? res[at] + lane_sum(acc[i][j]) : lane_sum(acc[i][j]);
    }
}

// every row of x against weight rows n0 .. n0 + NT: blocks of NB rows, then of 4, then one by one
template <int NT, int NB>
inline void rows_against(const float* x, int64_t B, int64_t K, const float* w, float* y, int64_t N, int64_t n0,
                         const float* res) {
  int64_t b = 0;
  for (; b + NB <= B; b += NB) {
    if (b == 0) tile<NT, NB, true>(x, K, w, y, N, n0, b, res);
    else tile<NT, NB, false>(x, K, w, y, N, n0, b, res);
  }
  for (; b + 4 <= B; b += 4) {
    if (b == 0) tile<NT, 4, true>(x, K, w, y, N, n0, b, res);
    else tile<NT, 4, false>(x, K, w, y, N, n0, b, res);
  }
  for (; b < B; ++b) {
    if (b == 0) tile<NT, 1, true>(x, K, w, y, N, n0, b, res);
    else tile<NT, 1, false>(x, K, w, y, N, n0, b, res);
  }
}

template <int NT, int NB>
void run(const float* x, int64_t B, int64_t K, const float* w, int64_t N, float* y, const float* res) {
  const int64_t tiles = (N + NT - 1) / NT;
  // about 256K multiply-adds per task, so that a small product stays on one thread
  const int64_t grain = std::max<int64_t>(1, 262144 / (K * NT * std::max<int64_t>(B, 1)));
  at::parallel_for(0, tiles, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n0 = t * NT;
      if (n0 + NT <= N) {
        rows_against<NT, NB>(x, B, K, w, y, N, n0, res);
      } else {
        for (int64_t n = n0; n < N; ++n) rows_against<1, NB>(x, B, K, w, y, N, n, res);
      }
    }
  });
}

// y (B, N) = x (B, K) @ w (N, K).T (+ res (B, N) when not null), raw row-major float32 buffers
void linear_into(const float* x, int64_t B, int64_t K, const float* w, int64_t N, float* y, const float* res) {
  if (B == 0 || N == 0) return;
  // tiles chosen by measurement (SmolLM2-135M's 211 decode projections, 2 threads, nine tile shapes and prefetch
  // distances): below 16 rows 2 weight rows x 8 x rows (8 rows: 48-51 ms, the other shapes 48-70); from 16 rows
  // 3 x 4 (32 rows: 100-106 ms, the others 100-148; the CPU BLAS took 107-116 and 133-140 ms)
  if (B < 16) {
    run<2, 8>(x, B, K, w, N, y, res);
  } else {
    run<3, 4>(x, B, K, w, N, y, res);
  }
}

void check_linear(const at::Tensor& x, const at::Tensor& w, const char* what) {
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), what, ": CPU tensors only");
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat, what, ": float32 only");
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), what, ": x (B, K) and w (N, K), got ",
              x.sizes(), " and ", w.sizes());
  TORCH_CHECK(x.size(1) % 8 == 0, what, ": K must be a multiple of 8, got ", x.size(1));
}

at::Tensor small_linear(const at::Tensor& x_, const at::Tensor& w_) {
  check_linear(x_, w_, "small_linear");
  const at::Tensor x = x_.contiguous(), w = w_.contiguous();
  at::Tensor y = at::empty({x.size(0), w.size(0)}, x.options());
  linear_into(x.data_ptr<float>(), x.size(0), x.size(1), w.data_ptr<float>(), w.size(0), y.data_ptr<float>(), nullptr);
  return y;
}

// ---------------------------------------------------------------------------------------------------------------
// One decode step's attention for one new token per row, on the static cache (prefalign.rollout.engine):
// Hugging Face's rotary embedding on q and k (the same multiplies and add per element, no FMA contraction: the file
// is built with -ffp-contract=off), k and v written to cache slot `slot`, then per query head softmax(q . K / sqrt)
// . V over the row's own slots first[b] .. slot (its prompt, right-aligned, and its new tokens; nothing masked is
// read). Grouped-query heads: query head j reads key/value head j / (Hq / Hkv), as Hugging Face's repeat_kv.

// e^x for x <= 0, 8 lanes (Cephes' expf: range reduction by ln 2, a degree-6 polynomial; within 2 ulp of expf)
inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x[D/2:], x[:D/2])
inline void rotate(const float* x, const float* cos, const float* sin, float* out, int64_t D) {
  const int64_t h = D / 2;
  for (int64_t i = 0; i < h; ++i) out[i] = x[i] * cos[i] + (-x[i + h]) * sin[i];
  for (int64_t i = h; i < D; ++i) out[i] = x[i] * cos[i] + x[i - h] * sin[i];
}

// G query heads of one key/value head (rotated, G x D in q) over n cached slots kc, vc (n x D each); scores: a
// G x n scratch; out: G x D. Each cached key and value row is read once for the G heads.
template <int G>
void attend_group(const float* q, const float* kc, const float* vc, int64_t n, int64_t D, float scale, float* scores,
                  float* out) {
  int64_t s = 0;
  for (; s + 2 <= n; s += 2) {  // two slots at a time: 2 G independent accumulator chains
    __m256 a0[G], a1[G];
    for (int g = 0; g < G; ++g) a0[g] = a1[g] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 8) {
      const __m256 k0 = _mm256_loadu_ps(kc + s * D + d), k1 = _mm256_loadu_ps(kc + (s + 1) * D + d);
      for (int g = 0; g < G; ++g) {
        const __m256 qv = _mm256_loadu_ps(q + g * D + d);
        a0[g] = _mm256_fmadd_ps(qv, k0, a0[g]);
        a1[g] = _mm256_fmadd_ps(qv, k1, a1[g]);
      }
    }
    for (int g = 0; g < G; ++g) {
      scores[g * n + s] = lane_sum(a0[g]) * scale;
      scores[g * n + s + 1] = lane_sum(a1[g]) * scale;
    }
  }
  for (; s < n; ++s) {
    __m256 acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 8) {
      const __m256 kv = _mm256_loadu_ps(kc + s * D + d);
      for (int g = 0; g < G; ++g) acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * D + d), kv, acc[g]);
    }
    for (int g = 0; g < G; ++g) scores[g * n + s] = lane_sum(acc[g]) * scale;
  }
  float total[G];
  for (int g = 0; g < G; ++g) {
    float* sc = scores + g * n;
    float top = -INFINITY;
    for (int64_t t = 0; t < n; ++t) top = std::max(top, sc[t]);
    const __m256 m = _mm256_set1_ps(top);
    __m256 sum = _mm256_setzero_ps();
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) {
      const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(sc + t), m));
      _mm256_storeu_ps(sc + t, e);
      sum = _mm256_add_ps(sum, e);
    }
    total[g] = lane_sum(sum);
    for (; t < n; ++t) total[g] += (sc[t] = std::exp(sc[t] - top));
  }
  int64_t d = 0;
  for (; d + 16 <= D; d += 16) {  // two 8-float blocks of the head at a time: 2 G chains
    __m256 a0[G], a1[G];
    for (int g = 0; g < G; ++g) a0[g] = a1[g] = _mm256_setzero_ps();
    for (int64_t t = 0; t < n; ++t) {
      const __m256 v0 = _mm256_loadu_ps(vc + t * D + d), v1 = _mm256_loadu_ps(vc + t * D + d + 8);
      for (int g = 0; g < G; ++g) {
        const __m256 p = _mm256_set1_ps(scores[g * n + t]);
        a0[g] = _mm256_fmadd_ps(p, v0, a0[g]);
        a1[g] = _mm256_fmadd_ps(p, v1, a1[g]);
      }
    }
    for (int g = 0; g < G; ++g) {
      const __m256 norm = _mm256_set1_ps(total[g]);
      _mm256_storeu_ps(out + g * D + d, _mm256_div_ps(a0[g], norm));
      _mm256_storeu_ps(out + g * D + d + 8, _mm256_div_ps(a1[g], norm));
    }
  }
  for (; d < D; d += 8) {
    __m256 acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm256_setzero_ps();
    for (int64_t t = 0; t < n; ++t) {
      const __m256 vv = _mm256_loadu_ps(vc + t * D + d);
      for (int g = 0; g < G; ++g) acc[g] = _mm256_fmadd_ps(_mm256_set1_ps(scores[g * n + t]), vv, acc[g]);
    }
    for (int g = 0; g < G; ++g) _mm256_storeu_ps(out + g * D + d, _mm256_div_ps(acc[g], _mm256_set1_ps(total[g])));
  }
}

void attend(int64_t group, const float* q, const float* kc, const float* vc, int64_t n, int64_t D, float scale,
            float* scores, float* out) {
  int64_t g = 0;  // the heads in fours, then twos, then one by one
  for (; g + 4 <= group; g += 4) attend_group<4>(q + g * D, kc, vc, n, D, scale, scores, out + g * D);
  for (; g + 2 <= group; g += 2) attend_group<2>(q + g * D, kc, vc, n, D, scale, scores, out + g * D);
  for (; g < group; ++g) attend_group<1>(q + g * D, kc, vc, n, D, scale, scores, out + g * D);
}

at::Tensor decode_attention(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const at::Tensor& cos_,
                            const at::Tensor& sin_, at::Tensor keys, at::Tensor values, const at::Tensor& first_,
                            int64_t slot, double scale) {
  TORCH_CHECK(keys.device().is_cpu() && values.device().is_cpu() && q_.device().is_cpu() && k_.device().is_cpu() &&
                  v_.device().is_cpu() && cos_.device().is_cpu() && sin_.device().is_cpu() && first_.device().is_cpu(),
              "decode_attention: CPU tensors only");
  TORCH_CHECK(keys.is_contiguous() && values.is_contiguous() && keys.dim() == 4 && keys.sizes() == values.sizes(),
              "decode_attention: the cache buffers must be contiguous (B, Hkv, S, D)");
  const int64_t B = keys.size(0), Hkv = keys.size(1), S = keys.size(2), D = keys.size(3);
  TORCH_CHECK(keys.scalar_type() == at::kFloat && q_.scalar_type() == at::kFloat, "decode_attention: float32 only");
  TORCH_CHECK(D % 8 == 0, "decode_attention: head_dim must be a multiple of 8, got ", D);
  TORCH_CHECK(0 <= slot && slot < S, "decode_attention: slot ", slot, " outside the cache's ", S, " slots");
  const at::Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  const at::Tensor cos = cos_.contiguous(), sin = sin_.contiguous();
  const at::Tensor first = first_.to(at::kLong).contiguous();
  TORCH_CHECK(q.numel() % (B * D) == 0 && k.numel() == B * Hkv * D && v.numel() == B * Hkv * D,
              "decode_attention: q (B, Hq * D), k and v (B, Hkv * D)");
  TORCH_CHECK(cos.numel() == B * D && sin.numel() == B * D, "decode_attention: cos and sin (B, D)");
  const int64_t Hq = q.numel() / (B * D), group = Hq / Hkv;
  TORCH_CHECK(group * Hkv == Hq, "decode_attention: ", Hq, " query heads on ", Hkv, " key/value heads");
  at::Tensor out = at::empty({B, Hq * D}, q.options());
  const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
  const float *cp = cos.data_ptr<float>(), *sp = sin.data_ptr<float>();
  const int64_t* fp = first.data_ptr<int64_t>();
  float *keys_p = keys.data_ptr<float>(), *values_p = values.data_ptr<float>(), *op = out.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(0 <= fp[b] && fp[b] <= slot, "decode_attention: row ", b, " starts at slot ", fp[b], " after ", slot);
  const float fscale = static_cast<float>(scale);
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(4 * S), qr(group * D);
    for (int64_t t = begin; t < end; ++t) {
      // items from both ends in turn (0, last, 1, last - 1, ...): the rows come longest prompt first, so each
      // thread's contiguous share of t gets long and short rows alike
      const int64_t item = (t % 2 == 0) ? t / 2 : B * Hkv - 1 - t / 2;
      const int64_t b = item / Hkv, h = item % Hkv;
      const float *c = cp + b * D, *sn = sp + b * D;
      float* kc = keys_p + (item * S) * D;
      float* vc = values_p + (item * S) * D;
      rotate(kp + item * D, c, sn, kc + slot * D, D);
      std::copy(vp + item * D, vp + (item + 1) * D, vc + slot * D);
      for (int64_t g = 0; g < group; ++g) rotate(qp + (b * Hq + h * group + g) * D, c, sn, qr.data() + g * D, D);
      const int64_t lo = fp[b];
      attend(group, qr.data(), kc + lo * D, vc + lo * D, slot + 1 - lo, D, fscale, scores.data(),
             op + (b * Hq + h * group) * D);
    }
  });
  return out;
}

// Hugging Face's LlamaRMSNorm on float32 rows: weight * (x * rsqrt(mean(x^2) + eps)), the mean summed 8 lanes at a
// time (torch's reduction adds in another order: the same up to float rounding)
at::Tensor rms_norm(const at::Tensor& x_, const at::Tensor& w_, double eps) {
  TORCH_CHECK(x_.device().is_cpu() && w_.device().is_cpu(), "rms_norm: CPU tensors only");
  TORCH_CHECK(x_.scalar_type() == at::kFloat && w_.scalar_type() == at::kFloat, "rms_norm: float32 only");
  const at::Tensor x = x_.contiguous(), w = w_.contiguous();
  const int64_t H = w.numel();
  TORCH_CHECK(H > 0 && x.numel() % H == 0 && x.size(-1) == H, "rms_norm: x (..., ", H, ") for a weight of ", H);
  at::Tensor out = at::empty_like(x);
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float feps = static_cast<float>(eps);
  for (int64_t r = 0; r < x.numel() / H; ++r) {
    const float* row = xp + r * H;
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= H; i += 8) {
      const __m256 v = _mm256_loadu_ps(row + i);
      acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
    }
    float sum = lane_sum(acc);
    for (; i < H; ++i) sum += row[i] * row[i];
    const float scale = 1.0f / std::sqrt(sum / static_cast<float>(H) + feps);
    for (i = 0; i < H; ++i) op[r * H + i] = wp[i] * (row[i] * scale);
  }
  return out;
}


// e^x, 8 lanes, for any x: exp_nonpositive's polynomial on x clamped to 88 (e^88 ~ 1.7e38: float range), and 0 below
// -87 (where expf underflows towards 0 too), so that a -inf logit gets probability 0
inline __m256 exp_any(__m256 x) {
  const __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
  return _mm256_and_ps(exp_nonpositive(_mm256_min_ps(x, _mm256_set1_ps(88.0f))), keep);
}

// out = silu(g) * u elementwise, silu(g) = g / (1 + e^-g) as torch's CPU kernel writes it (8 lanes; the tail scalar)
void silu_mul_into(const float* g, const float* u, float* out, int64_t n) {
  at::parallel_for(0, (n + 7) / 8, 2048, [&](int64_t begin, int64_t end) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (int64_t b = begin; b < end; ++b) {
      const int64_t i = b * 8;
      if (i + 8 <= n) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 s = _mm256_div_ps(gv, _mm256_add_ps(one, exp_any(_mm256_sub_ps(zero, gv))));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
      } else {
        for (int64_t j = i; j < n; ++j) out[j] = (g[j] / (1.0f + std::exp(-g[j]))) * u[j];
      }
    }
  });
}

at::Tensor silu_mul(const at::Tensor& g_, const at::Tensor& u_) {
  TORCH_CHECK(g_.device().is_cpu() && u_.device().is_cpu(), "silu_mul: CPU tensors only");
  TORCH_CHECK(g_.scalar_type() == at::kFloat && u_.scalar_type() == at::kFloat, "silu_mul: float32 only");
  TORCH_CHECK(g_.sizes() == u_.sizes(), "silu_mul: gate ", g_.sizes(), " and up ", u_.sizes(), " differ in shape");
  const at::Tensor g = g_.contiguous(), u = u_.contiguous();
  at::Tensor out = at::empty_like(g);
  silu_mul_into(g.data_ptr<float>(), u.data_ptr<float>(), out.data_ptr<float>(), g.numel());
  return out;
}

// One Llama decoder layer for one new token per row (x: (B, H)), Hugging Face's LlamaDecoderLayer arithmetic:
// h = rms_norm(x); attention (q, k, v projections, decode_attention, o projection); x2 = x + attention;
// out = x2 + down(silu(gate(rms_norm(x2))) * up(rms_norm(x2))). Weights without bias, (out, in) row-major.
at::Tensor decode_layer(const at::Tensor& x_, const at::Tensor& norm1, double eps1, const at::Tensor& wq,
                        const at::Tensor& wk, const at::Tensor& wv, const at::Tensor& wo, const at::Tensor& norm2,
                        double eps2, const at::Tensor& wg, const at::Tensor& wu, const at::Tensor& wd,
                        const at::Tensor& cos, const at::Tensor& sin, at::Tensor keys, at::Tensor values,
                        const at::Tensor& first, int64_t slot, double scale) {
  const at::Tensor x = x_.contiguous();
  TORCH_CHECK(x.dim() == 2, "decode_layer: x (B, hidden), got ", x.sizes());
  const int64_t B = x.size(0), H = x.size(1);
  for (const at::Tensor* w : {&wq, &wk, &wv, &wo, &wg, &wu, &wd})
    TORCH_CHECK(w->is_contiguous() && w->dim() == 2, "decode_layer: weights must be contiguous (out, in) matrices");
  TORCH_CHECK(wo.size(0) == H && wd.size(0) == H && wg.sizes() == wu.sizes() && wd.size(1) == wg.size(0),
              "decode_layer: the o / down projections must return the hidden size ", H,
              " and gate, up and down agree");
  const at::Tensor h = rms_norm(x, norm1, eps1);
  const at::Tensor q = small_linear(h, wq), k = small_linear(h, wk), v = small_linear(h, wv);
  const at::Tensor att = decode_attention(q, k, v, cos, sin, keys, values, first, slot, scale);
  check_linear(att, wo, "decode_layer (o_proj)");
  at::Tensor x2 = at::empty_like(x);
  linear_into(att.data_ptr<float>(), B, att.size(1), wo.data_ptr<float>(), H, x2.data_ptr<float>(),
              x.data_ptr<float>());
  const at::Tensor h2 = rms_norm(x2, norm2, eps2);
  at::Tensor gate = small_linear(h2, wg);
  const at::Tensor up = small_linear(h2, wu);
  silu_mul_into(gate.data_ptr<float>(), up.data_ptr<float>(), gate.data_ptr<float>(), gate.numel());
  check_linear(gate, wd, "decode_layer (down_proj)");
  at::Tensor out = at::empty_like(x);
  linear_into(gate.data_ptr<float>(), B, gate.size(1), wd.data_ptr<float>(), H, out.data_ptr<float>(),
              x2.data_ptr<float>());
  return out;
}

// One sampled token per row of logits (B, V) at `temperature` (> 0), by inverse CDF, with its log-probability:
// logits /= temperature (in place, as prefalign.rollout.sampling does), e = exp(logits - max) 8 lanes at a time,
// their running sum in order (what torch's cumsum computes), the chosen id the first whose running sum exceeds
// u[b] * total (torch.searchsorted(right=True)), clamped to the last id; log-prob = logit - max - log(sum of e).
std::tuple<at::Tensor, at::Tensor> draw(at::Tensor logits, double temperature, const at::Tensor& u_) {
  TORCH_CHECK(logits.device().is_cpu() && u_.device().is_cpu(), "draw: CPU tensors only");
  TORCH_CHECK(logits.scalar_type() == at::kFloat && logits.dim() == 2 && logits.is_contiguous(),
              "draw: logits must be contiguous float32 (B, V)");
  TORCH_CHECK(temperature > 0, "draw: temperature must be > 0, got ", temperature);
  const at::Tensor u = u_.to(at::kFloat).contiguous();
  const int64_t B = logits.size(0), V = logits.size(1);
  TORCH_CHECK(u.numel() == B, "draw: one uniform per row: ", u.numel(), " for ", B, " rows");
  TORCH_CHECK(V > 0, "draw: an empty vocabulary");
  at::Tensor ids = at::empty({B}, logits.options().dtype(at::kLong));
  at::Tensor logprobs = at::empty({B}, logits.options());
  float* lp = logits.data_ptr<float>();
  const float* up = u.data_ptr<float>();
  int64_t* ip = ids.data_ptr<int64_t>();
  float* op = logprobs.data_ptr<float>();
  const float t = static_cast<float>(temperature);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> cdf(V);
    for (int64_t b = begin; b < end; ++b) {
      float* row = lp + b * V;
      if (t != 1.0f)
        for (int64_t i = 0; i < V; ++i) row[i] /= t;
      float top = -INFINITY;
      for (int64_t i = 0; i < V; ++i) top = std::max(top, row[i]);
      const __m256 m = _mm256_set1_ps(top);
      int64_t i = 0;
      for (; i + 8 <= V; i += 8) _mm256_storeu_ps(cdf.data() + i, exp_any(_mm256_sub_ps(_mm256_loadu_ps(row + i), m)));
      for (; i < V; ++i) cdf[i] = std::exp(row[i] - top);
      // the log-probability's normaliser summed in 4 x 8 lanes (the running sum's last term, added one by one,
      // drifts by ~1e-5 relative over 49,152 terms)
      __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (i = 0; i + 32 <= V; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(cdf.data() + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(cdf.data() + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(cdf.data() + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(cdf.data() + i + 24));
      }
      float norm = lane_sum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
      for (; i < V; ++i) norm += cdf[i];
      for (i = 1; i < V; ++i) cdf[i] += cdf[i - 1];
      const float total = cdf[V - 1];
      const int64_t c = std::min<int64_t>(std::upper_bound(cdf.begin(), cdf.end(), up[b] * total) - cdf.begin(), V - 1);
      ip[b] = c;
      op[b] = (row[c] - top) - std::log(norm);
    }
  });
  return {ids, logprobs};
}

}  // namespace

TORCH_LIBRARY(prefalign_cpu, m) {
  m.def("small_linear(Tensor x, Tensor w) -> Tensor", &small_linear);
  m.def("rms_norm(Tensor x, Tensor w, float eps) -> Tensor", &rms_norm);
  m.def("silu_mul(Tensor g, Tensor u) -> Tensor", &silu_mul);
  m.def("draw(Tensor(a!) logits, float temperature, Tensor u) -> (Tensor, Tensor)", &draw);
  m.def(
      "decode_layer(Tensor x, Tensor norm1, float eps1, Tensor wq, Tensor wk, Tensor wv, Tensor wo, Tensor norm2, "
      "float eps2, Tensor wg, Tensor wu, Tensor wd, Tensor cos, Tensor sin, Tensor(a!) keys, Tensor(b!) values, "
      "Tensor first, int slot, float scale) -> Tensor",
      &decode_layer);
  m.def(
      "decode_attention(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, Tensor(a!) keys, Tensor(b!) values, "
      "Tensor first, int slot, float scale) -> Tensor",
      &decode_attention);
}
