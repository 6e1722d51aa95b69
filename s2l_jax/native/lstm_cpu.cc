// One LSTM direction's recurrence on the CPU as XLA FFI custom calls (s2l_jax/native_lstm.py builds and
// registers them). XLA:CPU runs a scan's body on one thread, an op at a time; these run each time step as tiles
// of (kRows batch rows x kLanes hidden units): the tile's gate columns [i f g o] x kLanes are one register-
// blocked dot over [h, x_t], and its cell update follows in registers. The tiles of a step are shared between the
// calling thread and helpers on XLA's intra-op pool (claimed by an atomic counter, so the caller never waits for
// a helper to start). Formulas as s2l_jax/lstm_vjp.py: gates pre-scaled for sigmoid(a) = 0.5 * tanh(a / 2) + 0.5.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Vector width and tile height by instruction set: a forward tile keeps kRows x 4 vectors of accumulators and the
// 4 weight vectors of one k in registers (32 registers with AVX-512 or NEON, 16 with AVX2 / SSE).
#if defined(__AVX512F__)
constexpr int kLanes = 16, kRows = 4;
#elif defined(__AVX__)
constexpr int kLanes = 8, kRows = 2;
#elif defined(__SSE2__)
constexpr int kLanes = 4, kRows = 2;
#else
constexpr int kLanes = 4, kRows = 4;
#endif
typedef float vec __attribute__((vector_size(4 * kLanes)));  // one vector: kLanes hidden units

inline vec load(const float* p) { vec v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(float* p, vec v) { std::memcpy(p, &v, sizeof v); }
inline vec splat(float s) { return vec{} + s; }

// Keeps a loaded vector in a register: GCC otherwise folds the load into each row's FMA, loading it once per row.
inline void in_register(vec& v) {
#if defined(__AVX512F__)
  asm("" : "+v"(v));
#elif defined(__x86_64__)
  asm("" : "+x"(v));
#elif defined(__aarch64__)
  asm("" : "+w"(v));
#else
  (void)v;
#endif
}

// tanh as XLA:CPU and Eigen compute it in float32: a rational approximation on [-7.9053, 7.9053] (NaN stays NaN).
inline vec vtanh(vec x) {
  const float clamp = 7.90531110763549805f;
  x = x > clamp ? splat(clamp) : x;
  x = x < -clamp ? splat(-clamp) : x;
  vec x2 = x * x;
  vec p = splat(-2.76076847742355e-16f);
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  vec q = splat(1.19825839466702e-06f);
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

constexpr int kBack = 8;   // batch rows per backward tile
constexpr int kUnits = kLanes;  // hidden units per tile (one vector)

// Runs `phases` phases of `tiles` tiles each, phase after phase; tile(phase, index) may run on any thread.
// Helpers join through the pool when it has a free thread; the caller claims tiles too and waits only for
// tiles that were claimed, so the work completes whether or not a helper ever starts.
struct Phases {
  std::atomic<int64_t> claimed{0};  // phase * tiles + next tile index, for the current phase
  std::atomic<int64_t> done{0};     // tiles finished, over all phases
  std::atomic<int> phase{-1};
  std::atomic<bool> finished{false};
  std::thread::id caller = std::this_thread::get_id();
};

inline void pause() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

template <typename Tile>
void run_phases(ffi::ThreadPool& pool, int phases, int tiles, const Tile& tile) {
  auto state = std::make_shared<Phases>();
  auto work = [state, phases, tiles, &tile](int p) {
    for (;;) {
      int64_t c = state->claimed.load(std::memory_order_relaxed);
      int64_t base = int64_t(p) * tiles;
      if (c < base || c >= base + tiles) return;
      if (!state->claimed.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel)) continue;
      tile(p, int(c - base));
      state->done.fetch_add(1, std::memory_order_acq_rel);
    }
  };
  // one thread per core in all, the caller included
  int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  int helpers = int(std::min<int64_t>({pool.num_threads(), cores - 1, tiles / 2}));
  for (int i = 0; i < helpers; i++) {
    pool.Schedule([state, work]() {
      if (std::this_thread::get_id() == state->caller) return;  // a pool that runs tasks inline: no helper
      int seen = -1;
      while (!state->finished.load(std::memory_order_acquire)) {
        int p = state->phase.load(std::memory_order_acquire);
        if (p != seen && p >= 0) { work(p); seen = p; }
        else std::this_thread::yield();
      }
    });
  }
  for (int p = 0; p < phases; p++) {
    state->claimed.store(int64_t(p) * tiles, std::memory_order_release);
    state->phase.store(p, std::memory_order_release);
    work(p);
    int64_t target = int64_t(p + 1) * tiles;
    // a helper still finishing a tile: spin briefly, then let it have the core (more threads than cores)
    for (int spins = 0; state->done.load(std::memory_order_acquire) < target;) {
      if (spins < 4096) { spins++; pause(); } else { std::this_thread::yield(); }
    }
  }
  // helpers only touch `tile` inside a claimed tile, and every claimed tile is done: safe to return.
  state->finished.store(true, std::memory_order_release);
}

// Forward. x (T, B, E); wp packed (H/U, H + E, 4U) with U = kUnits: block u's columns are [i f g o] x units
// uU..uU+U-1 of [W_hh; W_ih]^T pre-scaled; bp (H/U, 4U) likewise; mask (T, B) uint8. Outputs ys (T, B, H) zero
// where masked, h_n, c_n; with residuals hx (T, B, H + E) = [h_prev, x_t], c_prev (T, B, H), pre (T, B, 4H) in
// torch order.
struct Fwd {
  int T, B, E, H;
  bool reverse, keep;
  const float *x, *wp, *bp, *h0, *c0;
  const uint8_t* mask;
  float *ys, *hn, *cn, *hx, *cprev, *pre;
  std::vector<float> hbuf;  // (2, B, H): the step's input h and its output
};

void fwd_tile(Fwd& s, int p, int r0, int u) {
  const int t = s.reverse ? s.T - 1 - p : p, B = s.B, E = s.E, H = s.H, K = H + E;
  const float* h = s.hbuf.data() + size_t(p % 2) * B * H;
  float* h_out = s.hbuf.data() + size_t((p + 1) % 2) * B * H;
  const float* xt = s.x + size_t(t) * B * E;
  const float* w = s.wp + size_t(u) * K * 4 * kUnits;
  int rows[kRows];
  for (int r = 0; r < kRows; r++) rows[r] = std::min(r0 + r, B - 1);
  vec acc[kRows][4];
  for (int g = 0; g < 4; g++) {
    vec b = load(s.bp + (u * 4 + g) * kUnits);
    for (int r = 0; r < kRows; r++) acc[r][g] = b;
  }
  for (int k = 0; k < H; k++, w += 4 * kUnits) {
    vec w0 = load(w), w1 = load(w + kUnits), w2 = load(w + 2 * kUnits), w3 = load(w + 3 * kUnits);
    in_register(w0); in_register(w1); in_register(w2); in_register(w3);
    for (int r = 0; r < kRows; r++) {
      float a = h[size_t(rows[r]) * H + k];
      acc[r][0] += a * w0; acc[r][1] += a * w1; acc[r][2] += a * w2; acc[r][3] += a * w3;
    }
  }
  for (int k = 0; k < E; k++, w += 4 * kUnits) {
    vec w0 = load(w), w1 = load(w + kUnits), w2 = load(w + 2 * kUnits), w3 = load(w + 3 * kUnits);
    in_register(w0); in_register(w1); in_register(w2); in_register(w3);
    for (int r = 0; r < kRows; r++) {
      float a = xt[size_t(rows[r]) * E + k];
      acc[r][0] += a * w0; acc[r][1] += a * w1; acc[r][2] += a * w2; acc[r][3] += a * w3;
    }
  }
  const int j = u * kUnits;
  for (int r = 0; r < kRows && r0 + r < B; r++) {
    const size_t b = r0 + r, bh = size_t(t) * B * H + b * H + j;
    float* c = s.cn + b * H + j;  // the carry lives in c_n
    vec c_old = load(c), h_old = load(h + b * H + j);
    if (s.keep) {
      float* pr = s.pre + size_t(t) * B * 4 * H + b * 4 * H + j;
      for (int g = 0; g < 4; g++) store(pr + g * H, acc[r][g]);
      store(s.cprev + bh, c_old);
      store(s.hx + size_t(t) * B * K + b * K + j, h_old);
    }
    vec i = 0.5f * vtanh(acc[r][0]) + 0.5f, f = 0.5f * vtanh(acc[r][1]) + 0.5f;
    vec g = vtanh(acc[r][2]), o = 0.5f * vtanh(acc[r][3]) + 0.5f;
    vec c_new = f * c_old + i * g;
    vec h_new = o * vtanh(c_new);
    if (s.mask[size_t(t) * B + b]) {
      store(c, c_new); store(h_out + b * H + j, h_new); store(s.ys + bh, h_new);
    } else {
      store(h_out + b * H + j, h_old); store(s.ys + bh, vec{});
    }
  }
  if (s.keep && u == 0) {  // x_t beside h_prev in the residual
    for (int r = 0; r < kRows && r0 + r < B; r++) {
      const size_t b = r0 + r;
      std::memcpy(s.hx + size_t(t) * B * K + b * K + H, xt + b * E, sizeof(float) * E);
    }
  }
}

ffi::Error lstm_forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U8> mask,
                        ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::F32> bp, ffi::Buffer<ffi::F32> h0,
                        ffi::Buffer<ffi::F32> c0, bool reverse, bool keep, ffi::ResultBuffer<ffi::F32> ys,
                        ffi::ResultBuffer<ffi::F32> hn, ffi::ResultBuffer<ffi::F32> cn,
                        ffi::ResultBuffer<ffi::F32> hx, ffi::ResultBuffer<ffi::F32> cprev,
                        ffi::ResultBuffer<ffi::F32> pre) {
  auto xd = x.dimensions();
  if (xd.size() != 3) return ffi::Error::InvalidArgument("lstm_forward: x must be (time, batch, input)");
  Fwd s;
  s.T = int(xd[0]); s.B = int(xd[1]); s.E = int(xd[2]); s.H = int(h0.dimensions()[1]);
  if (s.H % kUnits || wp.element_count() != size_t(s.H + s.E) * 4 * s.H)
    return ffi::Error::InvalidArgument("lstm_forward: hidden size must be a multiple of S2lLstmUnits(), weights packed");
  s.reverse = reverse; s.keep = keep;
  s.x = x.typed_data(); s.wp = wp.typed_data(); s.bp = bp.typed_data(); s.mask = mask.typed_data();
  s.ys = ys->typed_data(); s.hn = hn->typed_data(); s.cn = cn->typed_data();
  s.hx = hx->typed_data(); s.cprev = cprev->typed_data(); s.pre = pre->typed_data();
  const size_t bh = size_t(s.B) * s.H;
  s.hbuf.resize(2 * bh);
  std::memcpy(s.hbuf.data(), h0.typed_data(), sizeof(float) * bh);
  std::memcpy(s.cn, c0.typed_data(), sizeof(float) * bh);
  const int row_tiles = (s.B + kRows - 1) / kRows, units = s.H / kUnits;
  if (s.T > 0 && s.B > 0)
    run_phases(pool, s.T, row_tiles * units,
               [&s, row_tiles](int p, int i) { fwd_tile(s, p, (i % row_tiles) * kRows, i / row_tiles); });
  std::memcpy(s.hn, s.hbuf.data() + size_t(s.T % 2) * bh, sizeof(float) * bh);
  return ffi::Error::Success();
}

// Backward of the recurrence: from the residuals and cotangents, da (T, B, 4H) (gradient of the unscaled gate
// pre-activations, torch order) and (dh0, dc0). Phase p handles time t (in backward order) and first finishes the
// previous phase's dh: dh = da_{prev} @ W_hh (whh packed (H/U, 4H, U): block u is W_hh[:, uU..uU+U-1]).
struct Bwd {
  int T, B, H;
  bool reverse;
  const float *dys, *cprev, *pre, *whh, *dhn, *dcn;
  const uint8_t* mask;
  float *da, *dh0, *dc0;
  std::vector<float> pass;  // (B, H): dh passed through masked steps, added to the next dh
  std::vector<float> dc;    // (B, H) carry
};

void bwd_tile(Bwd& s, int p, int r0, int u) {
  const int B = s.B, H = s.H, j = u * kUnits;
  const int t = s.reverse ? p : s.T - 1 - p;             // the time step this phase finishes (p < T)
  const int t_prev = s.reverse ? p - 1 : s.T - p;         // the step the previous phase handled
  int rows[kBack];
  for (int r = 0; r < kBack; r++) rows[r] = std::min(r0 + r, B - 1);
  vec dh[kBack];
  if (p == 0) {
    for (int r = 0; r < kBack; r++) dh[r] = load(s.dhn + size_t(rows[r]) * H + j);
  } else {  // dh = da_{t_prev} @ W_hh[:, block] + what masked steps passed through
    const float* da = s.da + size_t(t_prev) * B * 4 * H;
    const float* w = s.whh + size_t(u) * 4 * H * kUnits;
    for (int r = 0; r < kBack; r++) dh[r] = load(s.pass.data() + size_t(rows[r]) * H + j);
    for (int k = 0; k < 4 * H; k++, w += kUnits) {
      vec wk = load(w);
      for (int r = 0; r < kBack; r++) dh[r] += da[size_t(rows[r]) * 4 * H + k] * wk;
    }
  }
  if (p == s.T) {  // the final phase: only dh0 (and dc0, already in the carry)
    for (int r = 0; r < kBack && r0 + r < B; r++) {
      store(s.dh0 + size_t(r0 + r) * H + j, dh[r]);
      store(s.dc0 + size_t(r0 + r) * H + j, load(s.dc.data() + size_t(r0 + r) * H + j));
    }
    return;
  }
  for (int r = 0; r < kBack && r0 + r < B; r++) {
    const size_t b = r0 + r, bh = size_t(t) * B * H + b * H + j;
    const float* pr = s.pre + size_t(t) * B * 4 * H + b * 4 * H + j;
    vec i = 0.5f * vtanh(load(pr)) + 0.5f, f = 0.5f * vtanh(load(pr + H)) + 0.5f;
    vec g = vtanh(load(pr + 2 * H)), o = 0.5f * vtanh(load(pr + 3 * H)) + 0.5f;
    vec c = load(s.cprev + bh);
    vec th = vtanh(f * c + i * g);
    float* dcp = s.dc.data() + b * H + j;
    vec dc_carry = load(dcp);
    bool m = s.mask[size_t(t) * B + b];
    vec dh_new = m ? dh[r] + load(s.dys + bh) : vec{};
    vec dc_in = m ? dc_carry : vec{};
    vec dc_new = dc_in + dh_new * o * (1.0f - th * th);
    float* da = s.da + size_t(t) * B * 4 * H + b * 4 * H + j;
    store(da, dc_new * g * i * (1.0f - i));
    store(da + H, dc_new * c * f * (1.0f - f));
    store(da + 2 * H, dc_new * i * (1.0f - g * g));
    store(da + 3 * H, dh_new * th * o * (1.0f - o));
    store(dcp, dc_new * f + (m ? vec{} : dc_carry));
    store(s.pass.data() + b * H + j, m ? vec{} : dh[r]);
  }
}

ffi::Error lstm_backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dys, ffi::Buffer<ffi::U8> mask,
                         ffi::Buffer<ffi::F32> cprev, ffi::Buffer<ffi::F32> pre, ffi::Buffer<ffi::F32> whh,
                         ffi::Buffer<ffi::F32> dhn, ffi::Buffer<ffi::F32> dcn, bool reverse,
                         ffi::ResultBuffer<ffi::F32> da, ffi::ResultBuffer<ffi::F32> dh0,
                         ffi::ResultBuffer<ffi::F32> dc0) {
  auto d = dys.dimensions();
  if (d.size() != 3) return ffi::Error::InvalidArgument("lstm_backward: dys must be (time, batch, hidden)");
  Bwd s;
  s.T = int(d[0]); s.B = int(d[1]); s.H = int(d[2]); s.reverse = reverse;
  if (s.H % kUnits || whh.element_count() != size_t(4) * s.H * s.H)
    return ffi::Error::InvalidArgument("lstm_backward: hidden size must be a multiple of S2lLstmUnits(), weights packed");
  s.dys = dys.typed_data(); s.cprev = cprev.typed_data(); s.pre = pre.typed_data(); s.whh = whh.typed_data();
  s.dhn = dhn.typed_data(); s.dcn = dcn.typed_data(); s.mask = mask.typed_data();
  s.da = da->typed_data(); s.dh0 = dh0->typed_data(); s.dc0 = dc0->typed_data();
  const size_t bh = size_t(s.B) * s.H;
  s.pass.assign(bh, 0.0f);
  s.dc.assign(s.dcn, s.dcn + bh);
  const int row_tiles = (s.B + kBack - 1) / kBack, units = s.H / kUnits;
  if (s.B > 0)
    run_phases(pool, s.T + 1, row_tiles * units,
               [&s, row_tiles](int p, int i) { bwd_tile(s, p, (i % row_tiles) * kBack, i / row_tiles); });
  return ffi::Error::Success();
}

}  // namespace

// Hidden units per tile on this build: the hidden size must be a multiple (s2l_jax.native_lstm packs by it).
extern "C" int S2lLstmUnits() { return kUnits; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(S2lLstmForward, lstm_forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("keep")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(S2lLstmBackward, lstm_backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("reverse")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
