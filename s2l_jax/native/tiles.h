// Shared by the recurrent kernels (lstm_cpu.cc, gru_cpu.cc; s2l_jax/native_rnn.py builds and registers them).
// XLA:CPU runs a scan's body on one thread, an op at a time; the kernels run each time step as tiles of (kRows
// batch rows x kLanes hidden units): the tile's four gate-column vectors per row are one register-blocked dot over
// [h, x_t] (`gate_dot`), and the cell update follows in registers. The tiles of a step are shared between the
// calling thread and helpers on XLA's intra-op pool (`run_phases`: claimed by an atomic counter, so the caller
// never waits for a helper to start). Gates are pre-scaled for sigmoid(a) = 0.5 * tanh(a / 2) + 0.5.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace s2l {

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
  // one thread per core in all, the caller included
  int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  int helpers = int(std::min<int64_t>({pool.num_threads(), cores - 1, tiles / 2}));
  // Claims shrink as the phase runs out (guided scheduling): a share of what is left, so that the threads meet
  // on the shared counter a few times a phase rather than once a tile, and still finish together.
  const int64_t share = 2 * (int64_t(helpers) + 1);
  auto work = [state, tiles, share, &tile](int p) {
    for (;;) {
      int64_t c = state->claimed.load(std::memory_order_relaxed);
      int64_t base = int64_t(p) * tiles, end = base + tiles;
      if (c < base || c >= end) return;
      int64_t n = std::max<int64_t>(1, (end - c) / share);
      if (!state->claimed.compare_exchange_weak(c, c + n, std::memory_order_acq_rel)) continue;
      for (int64_t i = c; i < c + n; i++) tile(p, int(i - base));
      state->done.fetch_add(n, std::memory_order_acq_rel);
    }
  };
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

// acc[r][g] = bias[g-th vector] + [h, x_t][row r0 + r] . w[:, g-th vector] for the tile's rows (clamped to the
// batch: rows past it are computed and not stored); bias: (4U,), w: (H + E, 4U).
inline void gate_dot(vec (&acc)[kRows][4], int r0, int B, const float* bias, const float* h, int H,
                     const float* xt, int E, const float* w) {
  int rows[kRows];
  for (int r = 0; r < kRows; r++) rows[r] = std::min(r0 + r, B - 1);
  for (int g = 0; g < 4; g++) {
    vec b = load(bias + g * kUnits);
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
}

// Backward tiles: kRows batch rows x up to kBackVecs consecutive unit vectors, the forward tile's shape (its
// dot over da_prev has the same register blocking: 8 rows x 1 vector loaded 9 values per 8 FMAs).
constexpr int kBackVecs = 4;

struct BackTiles {
  int row_tiles, vectors;  // vectors: H / kUnits
  BackTiles(int B, int H) : row_tiles((B + kRows - 1) / kRows), vectors(H / kUnits) {}
  int count() const { return row_tiles * ((vectors + kBackVecs - 1) / kBackVecs); }
  int r0(int i) const { return (i % row_tiles) * kRows; }
  int u(int i) const { return (i / row_tiles) * kBackVecs; }  // the tile's first unit vector
  int nv(int i) const { return std::min(kBackVecs, vectors - u(i)); }
};

template <int NV>
void back_dot_n(vec (&dh)[kRows][kBackVecs], const int (&rows)[kRows], const float* da, int K, const float* w) {
  const size_t block = size_t(K) * kUnits;
  for (int k = 0; k < K; k++, w += kUnits) {
    vec wv[NV];
    for (int v = 0; v < NV; v++) { wv[v] = load(w + v * block); in_register(wv[v]); }
    for (int r = 0; r < kRows; r++) {
      float a = da[size_t(rows[r]) * K + k];
      for (int v = 0; v < NV; v++) dh[r][v] += a * wv[v];
    }
  }
}

// The tile's dh before its step: dh[r][v] = dh_in[row r0 + r, unit vector u + v], plus da[row, :K] . W_hh[:, that
// vector] when da is given, for its rows (clamped to the batch) and nv vectors; w: W_hh packed (H/U, K, U).
inline void back_dh(vec (&dh)[kRows][kBackVecs], int r0, int B, int H, int u, int nv, const float* dh_in,
                    const float* da, int K, const float* w) {
  int rows[kRows];
  for (int r = 0; r < kRows; r++) rows[r] = std::min(r0 + r, B - 1);
  for (int r = 0; r < kRows; r++)
    for (int v = 0; v < nv; v++) dh[r][v] = load(dh_in + size_t(rows[r]) * H + (u + v) * kUnits);
  if (da == nullptr) return;
  w += size_t(u) * K * kUnits;
  switch (nv) {
    case 1: back_dot_n<1>(dh, rows, da, K, w); break;
    case 2: back_dot_n<2>(dh, rows, da, K, w); break;
    case 3: back_dot_n<3>(dh, rows, da, K, w); break;
    default: back_dot_n<4>(dh, rows, da, K, w);
  }
}

}  // namespace s2l
