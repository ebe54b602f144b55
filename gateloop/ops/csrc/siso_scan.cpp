// Fused GateLoop recurrence for one-dimensional heads (dk = dv = 1), CPU, float32/float64.
//
//   h_n = a_n h_{n-1} + k_n v_n,   a_n = exp(l_n + i theta_n),   y_n = scale * q_n * Re(h_n)
//
// with real q, k, v and a complex state per (batch, head) channel. Tensors are [B, L, H]
// contiguous (the library's [B, L, H, 1] with the unit dim dropped): for one time step the H
// channels are adjacent, so each task walks the sequence once and updates a block of adjacent
// channels with SIMD. The work is memory-bound: one read of every input and one write of every
// output per pass, instead of the ~100 full-tensor passes of the pure-PyTorch chunked form.
//
// The kernel takes log a = l + i theta (interleaved, as a complex tensor's view_as_real, or l
// alone for real positive a) and forms a_n = e^{l_n} (cos theta_n, sin theta_n) per block and
// step with ATen's Vectorized<T> exp/cos/sin (SLEEF on AVX2; scalar libm elsewhere), so neither
// pass stores or reloads the transitions.
//
// Backward (adjoint recurrence, PyTorch's complex-gradient convention g = dL/dRe + i dL/dIm):
//   g_n  = scale dy_n q_n + conj(a_{n+1}) g_{n+1},  g_{L-1} starts from the final state's grad
//   dq_n = scale dy_n Re h_n,   dk_n = Re g_n v_n,   dv_n = Re g_n k_n
//   dl_n + i dtheta_n = g_n conj(a_n h_{n-1})   (a = e^{l + i theta}: da/dl = a, da/dtheta = i a)
//   dh0  = conj(a_0) g_0
// A zero cotangent stays exactly zero through NaN/Inf inputs (0 * NaN would be NaN), so a
// non-finite value at step t never reaches the gradients of earlier steps whose loss excludes
// step t onwards (docs/numerics.md, 'Non-finite inputs'). The forward is causal by construction.
// A reset (a_n = 0 exactly, l_n = -inf) is taken as the exact restart it is: h_n = k_n v_n and
// d h_n / d h_{n-1} = 0 are selected, not computed as 0 * h_{n-1}, so a NaN/Inf state or
// cotangent on one side of a reset never crosses it (0 * NaN = NaN would); finite values give
// the same results as the products.
// The forward keeps only the state entering every kChunk-th step; the backward recomputes the
// states of one chunk at a time (no [B, L, H] state history is ever written).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

// Channels per task: a block's state lives in two stack arrays (registers after unrolling),
// and 64 float32 channels = 256 contiguous bytes per tensor per step, whole cache lines.
constexpr int64_t kBlock = 64;
// Steps between state checkpoints: the forward keeps the state entering every chunk of kChunk
// steps (1/kChunk of a full state history); the backward recomputes one chunk's states and
// transitions at a time into kChunk x kBlock buffers (64 KiB in float32, in L2).
constexpr int64_t kChunk = 64;

struct Shape {
  int64_t B, L, H, blocks, chunks;  // blocks of kBlock channels, chunks of kChunk steps
};

Shape shape_of(const torch::Tensor& t) {
  const int64_t L = t.size(1), H = t.size(2);
  return {t.size(0), L, H, (H + kBlock - 1) / kBlock, (L + kChunk - 1) / kChunk};
}

// One task: a batch row's block of adjacent channels, as offsets of its first channel.
struct Block {
  int64_t width;  // channels in the block (the last one may be partial)
  int64_t seq;    // into [B, L, H]
  int64_t state;  // into [B, H]
  int64_t ckpt;   // into [B, chunks, H]
};

// Runs f(Block) for every (batch row, channel block) on at::parallel_for: torch's intra-op pool,
// so torch.set_num_threads governs it and nothing oversubscribes.
template <typename F>
void for_each_block(const Shape& s, const F& f) {
  at::parallel_for(0, s.B * s.blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / s.blocks;
      const int64_t c0 = (task % s.blocks) * kBlock;
      f(Block{std::min(kBlock, s.H - c0), b * s.L * s.H + c0, b * s.H + c0, b * s.chunks * s.H + c0});
    }
  });
}

void check_bl_h(const torch::Tensor& t, const char* name, const torch::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.sizes() == like.sizes(), name, " must have shape ", like.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type());
}

// a = e^{l} (cos theta, sin theta) for `width` adjacent channels of one step. log_a points at
// interleaved (l, theta) pairs when kPhase, else at l alone.
template <typename T, bool kPhase>
inline void transitions(const T* __restrict log_a, int64_t width, T* __restrict ar, T* __restrict ai) {
  using Vec = at::vec::Vectorized<T>;
  T lm[kBlock], th[kBlock];
  for (int64_t j = 0; j < width; ++j) {
    lm[j] = kPhase ? log_a[2 * j] : log_a[j];
    th[j] = kPhase ? log_a[2 * j + 1] : T(0);
  }
  for (int64_t j = 0; j < width; j += Vec::size()) {
    const auto count = static_cast<int>(std::min<int64_t>(Vec::size(), width - j));
    const Vec magnitude = Vec::loadu(lm + j, count).exp();  // exact 0 for l = -inf
    if constexpr (kPhase) {
      const Vec theta = Vec::loadu(th + j, count);
      (magnitude * theta.cos()).store(ar + j, count);
      (magnitude * theta.sin()).store(ai + j, count);
    } else {
      magnitude.store(ar + j, count);
      Vec(T(0)).store(ai + j, count);
    }
  }
}

template <typename T, bool kStore, bool kPhase>
void forward_block(const T* __restrict q, const T* __restrict k, const T* __restrict v,
                   const T* __restrict log_a, const T* __restrict h0r,
                   const T* __restrict h0i, T* __restrict y, T* __restrict ckr, T* __restrict cki,
                   T* __restrict fr, T* __restrict fi, int64_t L, int64_t H, int64_t width, T scale) {
  constexpr int64_t kLogStride = kPhase ? 2 : 1;
  T sr[kBlock], si[kBlock], ar[kBlock], ai[kBlock];
  for (int64_t j = 0; j < width; ++j) {
    sr[j] = h0r[j];
    si[j] = h0i[j];
  }
  for (int64_t n = 0; n < L; ++n) {
    const int64_t o = n * H;
    transitions<T, kPhase>(log_a + o * kLogStride, width, ar, ai);
    if constexpr (kStore) {
      if (n % kChunk == 0) {  // checkpoint: the state entering this chunk
        for (int64_t j = 0; j < width; ++j) {
          ckr[(n / kChunk) * H + j] = sr[j];
          cki[(n / kChunk) * H + j] = si[j];
        }
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) {
      const T x = k[o + j] * v[o + j];
      const bool reset = (ar[j] == T(0)) & (ai[j] == T(0));  // a restart: nothing of h_{n-1} stays
      const T nr = reset ? x : ar[j] * sr[j] - ai[j] * si[j] + x;
      const T ni = reset ? T(0) : ar[j] * si[j] + ai[j] * sr[j];
      sr[j] = nr;
      si[j] = ni;
      y[o + j] = scale * q[o + j] * nr;
    }
  }
  for (int64_t j = 0; j < width; ++j) {
    fr[j] = sr[j];
    fi[j] = si[j];
  }
}

// c * x, or exactly 0 where the cotangent c is 0 and x is NaN/Inf (0 * NaN = NaN): the gradient
// through a step the loss does not depend on (an earlier sequence's NaN state, a NaN value at
// the step itself). Finite x give the product's bits, zero signs included.
template <typename T>
inline T times_cotangent(T c, T x) {
  const T p = c * x;
  return ((c == T(0)) & (p != p)) ? T(0) : p;
}

// Walks the chunks from last to first: recomputes the chunk's states from its checkpoint into a
// cache-resident buffer, then runs the adjoint recurrence over the chunk backwards. The inputs
// the recompute reads are still in cache when the adjoint reads them again.
// kPhase: log a and its gradient are interleaved (l, theta) pairs, i.e. a complex tensor.
template <typename T, bool kPhase>
void backward_block(const T* __restrict dy, const T* __restrict q, const T* __restrict k,
                    const T* __restrict v, const T* __restrict log_a, const T* __restrict ckr, const T* __restrict cki, const T* __restrict dfr,
                    const T* __restrict dfi, T* __restrict dq, T* __restrict dk, T* __restrict dv,
                    T* __restrict dl, T* __restrict dth, T* __restrict dh0r, T* __restrict dh0i,
                    int64_t L, int64_t H, int64_t width, T scale) {
  constexpr int64_t kLogStride = kPhase ? 2 : 1;
  T gr[kBlock], gi[kBlock];
  // the current chunk's states and transitions (4 x 16 KiB in float32: heap, not the stack of an
  // OpenMP worker thread)
  std::vector<T> buffer(4 * kChunk * kBlock);
  T(*hr)[kBlock] = reinterpret_cast<T(*)[kBlock]>(buffer.data());
  T(*hi)[kBlock] = hr + kChunk;
  T(*ar)[kBlock] = hr + 2 * kChunk;
  T(*ai)[kBlock] = hr + 3 * kChunk;
  for (int64_t j = 0; j < width; ++j) {
    gr[j] = dfr[j];
    gi[j] = dfi[j];
  }
  const int64_t chunks = (L + kChunk - 1) / kChunk;
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t n0 = c * kChunk;
    const int64_t n1 = std::min(L, n0 + kChunk);
    const T* __restrict sr0 = ckr + c * H;  // state entering the chunk
    const T* __restrict si0 = cki + c * H;
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t o = n * H;
      const T* __restrict pr = n > n0 ? hr[n - n0 - 1] : sr0;
      const T* __restrict pi = n > n0 ? hi[n - n0 - 1] : si0;
      T* __restrict cr = hr[n - n0];
      T* __restrict ci = hi[n - n0];
      T* __restrict a_r = ar[n - n0];
      T* __restrict a_i = ai[n - n0];
      transitions<T, kPhase>(log_a + o * kLogStride, width, a_r, a_i);
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) {
        const T x = k[o + j] * v[o + j];
        const bool reset = (a_r[j] == T(0)) & (a_i[j] == T(0));  // as in the forward
        cr[j] = reset ? x : a_r[j] * pr[j] - a_i[j] * pi[j] + x;
        ci[j] = reset ? T(0) : a_r[j] * pi[j] + a_i[j] * pr[j];
      }
    }
    for (int64_t n = n1 - 1; n >= n0; --n) {
      const int64_t o = n * H;
      const T* __restrict pr = n > n0 ? hr[n - n0 - 1] : sr0;  // h_{n-1}
      const T* __restrict pi = n > n0 ? hi[n - n0 - 1] : si0;
      const T* __restrict cr = hr[n - n0];  // h_n
      const T* __restrict a_r = ar[n - n0];
      const T* __restrict a_i = ai[n - n0];
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) {
        const T sdy = scale * dy[o + j];
        // a zero cotangent contributes exactly 0, also where q_n is NaN/Inf (0 * NaN = NaN would
        // reach every earlier step through g): such a q_n is read as 0. A finite q_n is used as it
        // is, in the same expression as before, so finite inputs give the same bits.
        // (bitwise & and plain selects, no short-circuit: the loop stays branch-free, vectorised)
        const T q_raw = q[o + j];
        const bool drop_q = (sdy == T(0)) & (q_raw - q_raw != T(0));  // q_raw - q_raw: NaN unless finite
        const T q_n = drop_q ? T(0) : q_raw;
        const T g_r = gr[j] + sdy * q_n;
        const T g_i = gi[j];
        dq[o + j] = times_cotangent(sdy, cr[j]);
        dk[o + j] = times_cotangent(g_r, v[o + j]);
        dv[o + j] = times_cotangent(g_r, k[o + j]);
        // p = a_n h_{n-1};  dl + i dtheta = g conj(p); p = 0 at a reset, whatever h_{n-1} holds
        const bool reset = (a_r[j] == T(0)) & (a_i[j] == T(0));
        const T p_r = reset ? T(0) : a_r[j] * pr[j] - a_i[j] * pi[j];
        const T p_i = reset ? T(0) : a_r[j] * pi[j] + a_i[j] * pr[j];
        dl[(o + j) * kLogStride] = times_cotangent(g_r, p_r) + times_cotangent(g_i, p_i);
        if constexpr (kPhase) {
          dth[(o + j) * kLogStride] = times_cotangent(g_i, p_r) - times_cotangent(g_r, p_i);
        }
        // g <- conj(a_n) g; a zero g stays exactly 0 through a NaN/Inf a_n (as above: only a
        // NaN product of a zero g is replaced, so finite a_n give the same bits), and a reset
        // passes exactly 0 back, also for a NaN/Inf g
        const bool g_zero = ((g_r == T(0)) & (g_i == T(0))) | reset;
        const T ng_r = a_r[j] * g_r + a_i[j] * g_i;
        const T ng_i = a_r[j] * g_i - a_i[j] * g_r;
        gr[j] = (g_zero & (ng_r != ng_r)) ? T(0) : ng_r;
        gi[j] = (g_zero & (ng_i != ng_i)) ? T(0) : ng_i;
      }
    }
  }
  for (int64_t j = 0; j < width; ++j) {
    dh0r[j] = gr[j];
    dh0i[j] = gi[j];
  }
}

// log_a: [B, L, H, 2] (l, theta) pairs, i.e. a complex tensor's view_as_real, or [B, L, H] (l).
bool check_log_a(const torch::Tensor& log_a, const torch::Tensor& q) {
  const bool with_phase = log_a.dim() == 4;
  TORCH_CHECK(log_a.is_contiguous() && log_a.scalar_type() == q.scalar_type(),
              "log_a must be contiguous with q's dtype");
  if (with_phase) {
    TORCH_CHECK(log_a.size(3) == 2 && log_a.sizes().slice(0, 3) == q.sizes(), "log_a must be [B, L, H, 2], got ",
                log_a.sizes());
  } else {
    TORCH_CHECK(log_a.sizes() == q.sizes(), "log_a must be [B, L, H], got ", log_a.sizes());
  }
  return with_phase;
}

// Returns (y, final_r, final_i, ck_r, ck_i): ck [B, ceil(L / kChunk), H] are the checkpointed
// states for the backward (empty unless store_states).
std::vector<torch::Tensor> siso_forward(const torch::Tensor& q, const torch::Tensor& k,
                                        const torch::Tensor& v, const torch::Tensor& log_a,
                                        const torch::Tensor& h0r, const torch::Tensor& h0i, double scale,
                                        bool store_states) {
  TORCH_CHECK(q.dim() == 3, "q must be [B, L, H], got ", q.sizes());
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble,
              "q must be float32 or float64, got ", q.scalar_type());
  check_bl_h(q, "q", q);
  check_bl_h(k, "k", q);
  check_bl_h(v, "v", q);
  const bool with_phase = check_log_a(log_a, q);
  const Shape s = shape_of(q);
  TORCH_CHECK(h0r.sizes() == at::IntArrayRef({s.B, s.H}) && h0r.is_contiguous(), "h0r must be [B, H]");
  TORCH_CHECK(h0i.sizes() == at::IntArrayRef({s.B, s.H}) && h0i.is_contiguous(), "h0i must be [B, H]");
  auto y = torch::empty_like(q);
  auto fr = torch::empty_like(h0r);
  auto fi = torch::empty_like(h0i);
  auto ckr = store_states ? torch::empty({s.B, s.chunks, s.H}, q.options()) : torch::empty({0}, q.options());
  auto cki = store_states ? torch::empty({s.B, s.chunks, s.H}, q.options()) : torch::empty({0}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "gateloop_siso_forward", [&] {
    using T = scalar_t;
    const T* pq = q.data_ptr<T>();
    const T* pk = k.data_ptr<T>();
    const T* pv = v.data_ptr<T>();
    const T* pla = log_a.data_ptr<T>();
    const T* ph0r = h0r.data_ptr<T>();
    const T* ph0i = h0i.data_ptr<T>();
    T* py = y.data_ptr<T>();
    T* pfr = fr.data_ptr<T>();
    T* pfi = fi.data_ptr<T>();
    T* pckr = store_states ? ckr.data_ptr<T>() : nullptr;
    T* pcki = store_states ? cki.data_ptr<T>() : nullptr;
    const auto sc = static_cast<T>(scale);
    auto* block = store_states ? (with_phase ? &forward_block<T, true, true> : &forward_block<T, true, false>)
                               : (with_phase ? &forward_block<T, false, true> : &forward_block<T, false, false>);
    for_each_block(s, [&](const Block& t) {
      block(pq + t.seq, pk + t.seq, pv + t.seq, pla + t.seq * (with_phase ? 2 : 1), ph0r + t.state,
            ph0i + t.state, py + t.seq, store_states ? pckr + t.ckpt : nullptr,
            store_states ? pcki + t.ckpt : nullptr, pfr + t.state, pfi + t.state, s.L, s.H, t.width, sc);
    });
  });
  return {y, fr, fi, ckr, cki};
}

// Returns (dq, dk, dv, d_log_a, dh0r, dh0i); d_log_a has log_a's shape ([B, L, H, 2]: dl, dtheta
// interleaved, a complex gradient's view_as_real).
std::vector<torch::Tensor> siso_backward(const torch::Tensor& dy, const torch::Tensor& q,
                                         const torch::Tensor& k, const torch::Tensor& v,
                                         const torch::Tensor& log_a, const torch::Tensor& ckr,
                                         const torch::Tensor& cki, const torch::Tensor& dfr,
                                         const torch::Tensor& dfi, double scale) {
  TORCH_CHECK(q.dim() == 3, "q must be [B, L, H], got ", q.sizes());
  for (const auto* t : {&dy, &k, &v}) {
    check_bl_h(*t, "tensor", q);
  }
  const bool with_phase = check_log_a(log_a, q);
  const Shape s = shape_of(q);
  for (const auto* t : {&ckr, &cki}) {
    TORCH_CHECK(t->sizes() == at::IntArrayRef({s.B, s.chunks, s.H}) && t->is_contiguous(),
                "checkpoints must be [B, ceil(L / 64), H]");
  }
  for (const auto* t : {&dfr, &dfi}) {
    TORCH_CHECK(t->sizes() == at::IntArrayRef({s.B, s.H}) && t->is_contiguous(), "state must be [B, H]");
  }
  auto dq = torch::empty_like(q);
  auto dk = torch::empty_like(q);
  auto dv = torch::empty_like(q);
  auto d_log_a = torch::empty_like(log_a);
  auto dh0r = torch::empty_like(dfr);
  auto dh0i = torch::empty_like(dfi);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "gateloop_siso_backward", [&] {
    using T = scalar_t;
    const auto sc = static_cast<T>(scale);
    const int64_t stride = with_phase ? 2 : 1;
    auto* block = with_phase ? &backward_block<T, true> : &backward_block<T, false>;
    for_each_block(s, [&](const Block& t) {
      T* dl = d_log_a.data_ptr<T>() + t.seq * stride;
      block(dy.data_ptr<T>() + t.seq, q.data_ptr<T>() + t.seq, k.data_ptr<T>() + t.seq, v.data_ptr<T>() + t.seq,
            log_a.data_ptr<T>() + t.seq * stride, ckr.data_ptr<T>() + t.ckpt, cki.data_ptr<T>() + t.ckpt,
            dfr.data_ptr<T>() + t.state, dfi.data_ptr<T>() + t.state, dq.data_ptr<T>() + t.seq,
            dk.data_ptr<T>() + t.seq, dv.data_ptr<T>() + t.seq, dl, with_phase ? dl + 1 : nullptr,
            dh0r.data_ptr<T>() + t.state, dh0i.data_ptr<T>() + t.state, s.L, s.H, t.width, sc);
    });
  });
  return {dq, dk, dv, d_log_a, dh0r, dh0i};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("siso_forward", &siso_forward, "fused SISO GateLoop recurrence, forward");
  m.def("siso_backward", &siso_backward, "fused SISO GateLoop recurrence, backward");
}
