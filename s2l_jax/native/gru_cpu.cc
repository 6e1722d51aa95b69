// One GRU direction's recurrence as XLA FFI custom calls (tiles and threads: tiles.h). Formulas as
// s2l_jax/gru_vjp.py: r, z = sigmoid(a_r), sigmoid(a_z) (pre-scaled by 0.5), h_n = h W_hn^T + b_hn,
// n = tanh(x_n + r * h_n), h' = (h - n) * z + n.
#include "tiles.h"

using namespace s2l;

namespace {

// Forward. x (T, B, E); wp packed (H/U, H + E, 4U) with U = kUnits: block u's four column vectors are
// [r, z, x_n, h_n] of units uU..uU+U-1, the h rows [W_hr, W_hz, 0, W_hn]^T and the x rows [W_ir, W_iz, W_in, 0]^T
// (r, z scaled by 0.5); bp (H/U, 4U) [b_ir + b_hr, b_iz + b_hz, b_in, b_hn] likewise. Outputs ys (T, B, H) zero
// where masked and h_n; with residuals h_prev (T, B, H), pre_rz (T, B, 2H), pre_n (T, B, H), hn (T, B, H).
struct Fwd {
  int T, B, E, H;
  bool reverse, keep;
  const float *x, *wp, *bp;
  const uint8_t* mask;
  float *ys, *hlast, *hprev, *prerz, *pren, *hn;
  std::vector<float> hbuf;  // (2, B, H): the step's input h and its output
};

void fwd_tile(Fwd& s, int p, int r0, int u) {
  const int t = s.reverse ? s.T - 1 - p : p, B = s.B, E = s.E, H = s.H;
  const float* h = s.hbuf.data() + size_t(p % 2) * B * H;
  float* h_out = s.hbuf.data() + size_t((p + 1) % 2) * B * H;
  vec acc[kRows][4];
  gate_dot(acc, r0, B, s.bp + u * 4 * kUnits, h, H, s.x + size_t(t) * B * E, E,
           s.wp + size_t(u) * (H + E) * 4 * kUnits);
  const int j = u * kUnits;
  for (int r = 0; r < kRows && r0 + r < B; r++) {
    const size_t b = r0 + r, bh = size_t(t) * B * H + b * H + j;
    vec h_old = load(h + b * H + j);
    vec rg = 0.5f * vtanh(acc[r][0]) + 0.5f, z = 0.5f * vtanh(acc[r][1]) + 0.5f;
    vec pre_n = acc[r][2] + rg * acc[r][3];
    vec n = vtanh(pre_n);
    vec h_new = (h_old - n) * z + n;
    if (s.keep) {
      float* prz = s.prerz + size_t(t) * B * 2 * H + b * 2 * H + j;
      store(prz, acc[r][0]); store(prz + H, acc[r][1]);
      store(s.pren + bh, pre_n); store(s.hn + bh, acc[r][3]); store(s.hprev + bh, h_old);
    }
    bool m = s.mask[size_t(t) * B + b];
    store(h_out + b * H + j, m ? h_new : h_old);
    store(s.ys + bh, m ? h_new : vec{});
  }
}

ffi::Error gru_forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U8> mask,
                       ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::F32> bp, ffi::Buffer<ffi::F32> h0, bool reverse,
                       bool keep, ffi::ResultBuffer<ffi::F32> ys, ffi::ResultBuffer<ffi::F32> hlast,
                       ffi::ResultBuffer<ffi::F32> hprev, ffi::ResultBuffer<ffi::F32> prerz,
                       ffi::ResultBuffer<ffi::F32> pren, ffi::ResultBuffer<ffi::F32> hn) {
  auto xd = x.dimensions();
  if (xd.size() != 3) return ffi::Error::InvalidArgument("gru_forward: x must be (time, batch, input)");
  Fwd s;
  s.T = int(xd[0]); s.B = int(xd[1]); s.E = int(xd[2]); s.H = int(h0.dimensions()[1]);
  if (s.H % kUnits || wp.element_count() != size_t(s.H + s.E) * 4 * s.H)
    return ffi::Error::InvalidArgument("gru_forward: hidden size must be a multiple of S2lTileUnits(), weights packed");
  s.reverse = reverse; s.keep = keep;
  s.x = x.typed_data(); s.wp = wp.typed_data(); s.bp = bp.typed_data(); s.mask = mask.typed_data();
  s.ys = ys->typed_data(); s.hlast = hlast->typed_data(); s.hprev = hprev->typed_data();
  s.prerz = prerz->typed_data(); s.pren = pren->typed_data(); s.hn = hn->typed_data();
  const size_t bh = size_t(s.B) * s.H;
  s.hbuf.resize(2 * bh);
  std::memcpy(s.hbuf.data(), h0.typed_data(), sizeof(float) * bh);
  const int row_tiles = (s.B + kRows - 1) / kRows, units = s.H / kUnits;
  if (s.T > 0 && s.B > 0)
    run_phases(pool, s.T, row_tiles * units,
               [&s, row_tiles](int p, int i) { fwd_tile(s, p, (i % row_tiles) * kRows, i / row_tiles); });
  std::memcpy(s.hlast, s.hbuf.data() + size_t(s.T % 2) * bh, sizeof(float) * bh);
  return ffi::Error::Success();
}

// Backward of the recurrence: dxg = d(x W_ih^T + b_ih) and dhg = d(h W_hh^T + b_hh), both (T, B, 3H) in torch's
// gate order, and dh0. Phase p handles time t (in backward order) and first finishes the previous phase's dh:
// dh = dhg_{prev} @ W_hh (whh packed (H/U, 3H, U)) + what that phase passed on (dh * z, or dh where masked).
struct Bwd {
  int T, B, H;
  bool reverse;
  const float *dys, *hprev, *prerz, *pren, *hn, *whh, *dhlast;
  const uint8_t* mask;
  float *dxg, *dhg, *dh0;
  std::vector<float> pass;  // (B, H)
};

void bwd_tile(Bwd& s, int p, int r0, int u, int nv) {
  const int B = s.B, H = s.H;
  const int t = s.reverse ? p : s.T - 1 - p;
  const int t_prev = s.reverse ? p - 1 : s.T - p;
  vec dh[kRows][kBackVecs];  // after the first phase: what the step passed on + da_{t_prev} @ W_hh
  back_dh(dh, r0, B, H, u, nv, p == 0 ? s.dhlast : s.pass.data(),
          p == 0 ? nullptr : s.dhg + size_t(t_prev) * B * 3 * H, 3 * H, s.whh);
  for (int r = 0; r < kRows && r0 + r < B; r++) {
    const size_t b = r0 + r;
    for (int v = 0; v < nv; v++) {
      const int j = (u + v) * kUnits;
      if (p == s.T) {
        store(s.dh0 + b * H + j, dh[r][v]);
        continue;
      }
      const size_t bh = size_t(t) * B * H + b * H + j;
      const float* prz = s.prerz + size_t(t) * B * 2 * H + b * 2 * H + j;
      vec rg = 0.5f * vtanh(load(prz)) + 0.5f, z = 0.5f * vtanh(load(prz + H)) + 0.5f;
      vec n = vtanh(load(s.pren + bh)), hn = load(s.hn + bh), h = load(s.hprev + bh);
      bool m = s.mask[size_t(t) * B + b];
      vec dh_new = m ? dh[r][v] + load(s.dys + bh) : vec{};
      vec da_n = dh_new * (1.0f - z) * (1.0f - n * n);
      vec da_r = da_n * hn * rg * (1.0f - rg);
      vec da_z = dh_new * (h - n) * z * (1.0f - z);
      float* dx = s.dxg + size_t(t) * B * 3 * H + b * 3 * H + j;
      float* dhg = s.dhg + size_t(t) * B * 3 * H + b * 3 * H + j;
      store(dx, da_r); store(dx + H, da_z); store(dx + 2 * H, da_n);
      store(dhg, da_r); store(dhg + H, da_z); store(dhg + 2 * H, da_n * rg);
      store(s.pass.data() + b * H + j, m ? dh_new * z : dh[r][v]);
    }
  }
}

ffi::Error gru_backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dys, ffi::Buffer<ffi::U8> mask,
                        ffi::Buffer<ffi::F32> hprev, ffi::Buffer<ffi::F32> prerz, ffi::Buffer<ffi::F32> pren,
                        ffi::Buffer<ffi::F32> hn, ffi::Buffer<ffi::F32> whh, ffi::Buffer<ffi::F32> dhlast,
                        bool reverse, ffi::ResultBuffer<ffi::F32> dxg, ffi::ResultBuffer<ffi::F32> dhg,
                        ffi::ResultBuffer<ffi::F32> dh0) {
  auto d = dys.dimensions();
  if (d.size() != 3) return ffi::Error::InvalidArgument("gru_backward: dys must be (time, batch, hidden)");
  Bwd s;
  s.T = int(d[0]); s.B = int(d[1]); s.H = int(d[2]); s.reverse = reverse;
  if (s.H % kUnits || whh.element_count() != size_t(3) * s.H * s.H)
    return ffi::Error::InvalidArgument("gru_backward: hidden size must be a multiple of S2lTileUnits(), weights packed");
  s.dys = dys.typed_data(); s.hprev = hprev.typed_data(); s.prerz = prerz.typed_data(); s.pren = pren.typed_data();
  s.hn = hn.typed_data(); s.whh = whh.typed_data(); s.dhlast = dhlast.typed_data(); s.mask = mask.typed_data();
  s.dxg = dxg->typed_data(); s.dhg = dhg->typed_data(); s.dh0 = dh0->typed_data();
  s.pass.assign(size_t(s.B) * s.H, 0.0f);
  const BackTiles tiles(s.B, s.H);
  if (s.B > 0)
    run_phases(pool, s.T + 1, tiles.count(),
               [&s, &tiles](int p, int i) { bwd_tile(s, p, tiles.r0(i), tiles.u(i), tiles.nv(i)); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(S2lGruForward, gru_forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(S2lGruBackward, gru_backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("reverse")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
