// One LSTM direction's recurrence as XLA FFI custom calls (tiles and threads: tiles.h). Formulas as
// s2l_jax/lstm_vjp.py.
#include "tiles.h"

using namespace s2l;

namespace {

// Forward. x (T, B, E); wp packed (H/U, H + E, 4U) with U = kUnits: block u's columns are [i f g o] x units
// uU..uU+U-1 of [W_hh; W_ih]^T pre-scaled; bp (H/U, 4U) likewise; mask (T, B) uint8. Outputs ys (T, B, H) zero
// where masked, h_n, c_n; with residuals hx (T, B, H + E) = [h_prev, x_t], c_prev (T, B, H), pre (T, B, 4H) in
// torch order.
struct Fwd {
  int T, B, E, H;
  bool reverse, keep;
  const float *x, *wp, *bp;
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
  vec acc[kRows][4];
  gate_dot(acc, r0, B, s.bp + u * 4 * kUnits, h, H, xt, E, w);
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
    return ffi::Error::InvalidArgument("lstm_forward: hidden size must be a multiple of S2lTileUnits(), weights packed");
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

void bwd_tile(Bwd& s, int p, int r0, int u, int nv) {
  const int B = s.B, H = s.H;
  const int t = s.reverse ? p : s.T - 1 - p;             // the time step this phase finishes (p < T)
  const int t_prev = s.reverse ? p - 1 : s.T - p;         // the step the previous phase handled
  vec dh[kRows][kBackVecs];  // after the first phase: what the step passed on + da_{t_prev} @ W_hh
  back_dh(dh, r0, B, H, u, nv, p == 0 ? s.dhn : s.pass.data(),
          p == 0 ? nullptr : s.da + size_t(t_prev) * B * 4 * H, 4 * H, s.whh);
  for (int r = 0; r < kRows && r0 + r < B; r++) {
    const size_t b = r0 + r;
    for (int v = 0; v < nv; v++) {
      const int j = (u + v) * kUnits;
      if (p == s.T) {  // the final phase: only dh0 (and dc0, already in the carry)
        store(s.dh0 + b * H + j, dh[r][v]);
        store(s.dc0 + b * H + j, load(s.dc.data() + b * H + j));
        continue;
      }
      const size_t bh = size_t(t) * B * H + b * H + j;
      const float* pr = s.pre + size_t(t) * B * 4 * H + b * 4 * H + j;
      vec i = 0.5f * vtanh(load(pr)) + 0.5f, f = 0.5f * vtanh(load(pr + H)) + 0.5f;
      vec g = vtanh(load(pr + 2 * H)), o = 0.5f * vtanh(load(pr + 3 * H)) + 0.5f;
      vec c = load(s.cprev + bh);
      vec th = vtanh(f * c + i * g);
      float* dcp = s.dc.data() + b * H + j;
      vec dc_carry = load(dcp);
      bool m = s.mask[size_t(t) * B + b];
      vec dh_new = m ? dh[r][v] + load(s.dys + bh) : vec{};
      vec dc_in = m ? dc_carry : vec{};
      vec dc_new = dc_in + dh_new * o * (1.0f - th * th);
      float* da = s.da + size_t(t) * B * 4 * H + b * 4 * H + j;
      store(da, dc_new * g * i * (1.0f - i));
      store(da + H, dc_new * c * f * (1.0f - f));
      store(da + 2 * H, dc_new * i * (1.0f - g * g));
      store(da + 3 * H, dh_new * th * o * (1.0f - o));
      store(dcp, dc_new * f + (m ? vec{} : dc_carry));
      store(s.pass.data() + b * H + j, m ? vec{} : dh[r][v]);
    }
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
    return ffi::Error::InvalidArgument("lstm_backward: hidden size must be a multiple of S2lTileUnits(), weights packed");
  s.dys = dys.typed_data(); s.cprev = cprev.typed_data(); s.pre = pre.typed_data(); s.whh = whh.typed_data();
  s.dhn = dhn.typed_data(); s.dcn = dcn.typed_data(); s.mask = mask.typed_data();
  s.da = da->typed_data(); s.dh0 = dh0->typed_data(); s.dc0 = dc0->typed_data();
  const size_t bh = size_t(s.B) * s.H;
  s.pass.assign(bh, 0.0f);
  s.dc.assign(s.dcn, s.dcn + bh);
  const BackTiles tiles(s.B, s.H);
  if (s.B > 0)
    run_phases(pool, s.T + 1, tiles.count(),
               [&s, &tiles](int p, int i) { bwd_tile(s, p, tiles.r0(i), tiles.u(i), tiles.nv(i)); });
  return ffi::Error::Success();
}

}  // namespace

// Hidden units per tile on this build: the hidden size must be a multiple (s2l_jax.native_rnn packs by it).
extern "C" int S2lTileUnits() { return kUnits; }

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
