// Unit tests of the header-only core (ctest): Philox known-answer vectors, Box-Muller moments, activation
// derivatives against finite differences, program parsing errors. No ATen, no test framework.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "core/activations.h"
#include "core/fastmath.h"
#include "core/philox.h"
#include "core/program.h"
#include "core/schedule.h"

using namespace hebm::core;

static int failures = 0;
#define CHECK(cond, ...)                             \
  do {                                               \
    if (!(cond)) {                                   \
      ++failures;                                    \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                      \
      std::printf("\n");                             \
    }                                                \
  } while (0)

static void test_philox_kat() {
  // Random123 tests/kat_vectors, "philox4x32 10": counter, key, expected output.
  struct Kat { uint32_t c[4], k[2], out[4]; };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const Kat& t : kats) {
    const Philox4Out o = philox4x32_10(t.c[0], t.c[1], t.c[2], t.c[3], t.k[0], t.k[1]);
    for (int i = 0; i < 4; ++i) CHECK(o.w[i] == t.out[i], "philox word %d: got %08x expected %08x", i, o.w[i], t.out[i]);
  }
}

template <typename T>
static void test_normals() {
  // Moments of 400k normals over (chain, dim) at one step, and independence of neighbouring streams.
  const int n_chain = 1000, n_dim = 400;
  double s1 = 0, s2 = 0, s4 = 0, cross = 0;
  for (int b = 0; b < n_chain; ++b)
    for (int d = 0; d < n_dim; ++d) {
      const double x = normal_at<T>(12345, 7, b, d);
      const double y = normal_at<T>(12345, 8, b, d);  // next step, same element
      s1 += x;
      s2 += x * x;
      s4 += x * x * x * x;
      cross += x * y;
    }
  const double n = double(n_chain) * n_dim;
  const double m = s1 / n, v = s2 / n - m * m, k = s4 / n;
  CHECK(std::fabs(m) < 0.01, "normal mean %g", m);
  CHECK(std::fabs(v - 1) < 0.01, "normal variance %g", v);
  CHECK(std::fabs(k - 3) < 0.05, "normal fourth moment %g", k);
  CHECK(std::fabs(cross / n) < 0.01, "correlation between steps %g", cross / n);
  // pure function of the address
  CHECK(normal_at<T>(1, 2, 3, 4) == normal_at<T>(1, 2, 3, 4), "not deterministic");
  CHECK(normal_at<T>(1, 2, 3, 4) != normal_at<T>(2, 2, 3, 4), "seed ignored");
}

template <int A>
static void test_activation(const char* name, double slope = 0.2) {
  for (double x = -4.0; x <= 4.0; x += 0.37) {
    double y, dy, yp, dyp, ym, dym;
    act_value_grad<A, double>(x, slope, y, dy);
    const double h = 1e-6;
    act_value_grad<A, double>(x + h, slope, yp, dyp);
    act_value_grad<A, double>(x - h, slope, ym, dym);
    const double fd = (yp - ym) / (2 * h);
    CHECK(std::fabs(fd - dy) < 1e-7 * std::fmax(1.0, std::fabs(slope)), "%s'(%g) (param %g): analytic %.12g finite difference %.12g", name, x, slope, dy, fd);
  }
  double y, dy;
  act_value_grad<A, double>(0.0, slope, y, dy);
  CHECK(y == 0.0, "%s(0) = %g, the kernels' zero padding needs 0", name, y);
  // float agrees with double
  for (double x = -3.0; x <= 3.0; x += 0.5) {
    float yf, dyf;
    act_value_grad<A, float>(float(x), float(slope), yf, dyf);
    act_value_grad<A, double>(x, slope, y, dy);
    CHECK(std::fabs(yf - y) < 1e-5 * std::fmax(1.0, std::fabs(y)) && std::fabs(dyf - dy) < 1e-5, "%s float/double mismatch at %g (param %g)", name, x, slope);
  }
}

static void test_values() {
  double y, dy;
  act_value_grad<ACT_GELU, double>(1.0, 0.0, y, dy);
  CHECK(std::fabs(y - 0.8413447460685429) < 1e-14, "gelu(1) = %.16g", y);
  act_value_grad<ACT_SILU, double>(1.0, 0.0, y, dy);
  CHECK(std::fabs(y - 0.7310585786300049) < 1e-14, "silu(1) = %.16g", y);
  act_value_grad<ACT_LRELU, double>(-2.0, 0.2, y, dy);
  CHECK(y == -0.4 && dy == 0.2, "lrelu(-2) = %g, %g", y, dy);
  act_value_grad<ACT_LRELU, double>(0.0, 0.0, y, dy);
  CHECK(y == 0.0 && dy == 0.0, "relu (lrelu slope 0) at 0 = %g, %g (PyTorch: 0, 0)", y, dy);
  act_value_grad<ACT_GELU_TANH, double>(1.0, 0.0, y, dy);
  CHECK(std::fabs(y - 0.8411919906082768) < 1e-14, "gelu_tanh(1) = %.16g", y);
  act_value_grad<ACT_ELU, double>(-1.0, 1.5, y, dy);
  CHECK(std::fabs(y - 1.5 * (std::exp(-1.0) - 1)) < 1e-15 && std::fabs(dy - 1.5 * std::exp(-1.0)) < 1e-15, "elu(-1)");
  act_value_grad<ACT_ELU, double>(0.0, 1.5, y, dy);
  CHECK(y == 0.0 && dy == 1.5, "elu at 0 = %g, %g (PyTorch's derivative at 0 is alpha)", y, dy);
  act_value_grad<ACT_SOFTPLUS, double>(1.0, 1.0, y, dy);
  CHECK(std::fabs(y - 0.6201145069582775) < 1e-14, "softplus0(1) = %.16g", y);
  act_value_grad<ACT_SOFTPLUS, double>(30.0, 1.0, y, dy);  // past PyTorch's threshold 20: linear
  CHECK(std::fabs(y - (30.0 - std::log(2.0))) < 1e-13 && dy == 1.0, "softplus0(30) = %.16g, %g", y, dy);
  act_value_grad<ACT_SOFTPLUS, double>(5.0, 8.0, y, dy);  // beta x = 40 > 20
  CHECK(std::fabs(y - (5.0 - std::log(2.0) / 8.0)) < 1e-13 && dy == 1.0, "softplus0(5; beta 8) = %.16g", y);
}

static void test_program_errors() {
  // one layer of 4 dims, gaussian base, one head 4 -> 3 -> 1 (lrelu)
  std::vector<int64_t> prog = {kProgramMagic, kProgramVersion, 4, 1, BASE_GAUSSIAN, 0, 0, 1, 2,
                               0, 4,
                               NET_HEAD, 0, 4, 2, -1, 1, 0,
                               4, 3, 2, 14, -1, ACT_LRELU, 1,
                               3, 1, 17, 20, -1, ACT_IDENTITY, -1};
  ProgramDesc p;
  ParseResult r = parse_program(prog.data(), int64_t(prog.size()), 21, p);
  CHECK(r.ok, "valid program rejected: %s", r.msg);
  CHECK(p.n_heads == 1 && p.max_width == 4 && p.max_hidden == 3, "parsed fields wrong");
  r = parse_program(prog.data(), int64_t(prog.size()), 20, p);
  CHECK(!r.ok, "bias past the end of the parameters accepted");
  std::vector<int64_t> bad = prog;
  const int lin0 = kHeaderInts + 2 + kNetInts, lin1 = lin0 + kLinearInts;
  bad[lin1] = 4;  // second linear's input width 4 != 3
  r = parse_program(bad.data(), int64_t(bad.size()), 21, p);
  CHECK(!r.ok, "broken width chain accepted");
  bad = prog;
  bad[lin1 + 5] = ACT_TANH;  // an activation on the head's output layer
  r = parse_program(bad.data(), int64_t(bad.size()), 21, p);
  CHECK(!r.ok, "activation on an output layer accepted");
  bad = prog;
  bad[lin0 + 6] = -1;  // lrelu without its slope
  r = parse_program(bad.data(), int64_t(bad.size()), 21, p);
  CHECK(!r.ok, "lrelu without a slope accepted");
  bad = prog;
  bad[lin0 + 5] = ACT_TANH;  // tanh given a parameter
  r = parse_program(bad.data(), int64_t(bad.size()), 21, p);
  CHECK(!r.ok, "a parameter for tanh accepted");
  bad = prog;
  bad[lin0 + 5] = ACT_COUNT;
  r = parse_program(bad.data(), int64_t(bad.size()), 21, p);
  CHECK(!r.ok, "unknown activation accepted");
  bad = prog;
  bad[lin0 + 5] = ACT_ELU;  // elu with its alpha: fine
  r = parse_program(bad.data(), int64_t(bad.size()), 21, p);
  CHECK(r.ok, "elu with alpha rejected: %s", r.msg);
  bad = prog;
  bad[0] = 7;
  r = parse_program(bad.data(), int64_t(bad.size()), 21, p);
  CHECK(!r.ok, "bad magic accepted");
  ScheduleDesc s;
  const int64_t K[2] = {3, 4};
  const double c[12] = {0};
  CHECK(parse_schedule(K, 2, c, 12, s) == nullptr && s.total_steps == 7 && s.max_steps == 4, "schedule parse");
  CHECK(parse_schedule(K, 2, c, 11, s) != nullptr, "short coefficient list accepted");
}

static void test_fastmath() {
  // float32 branch-free functions against double-precision libm
  double worst_exp = 0, worst_tanh = 0, worst_erf = 0, worst_log = 0, worst_sc = 0;
  for (int i = 0; i <= 200000; ++i) {
    const double x = -20.0 + 40.0 * i / 200000.0;
    const double e = std::exp(double(float(x)));
    worst_exp = std::fmax(worst_exp, std::fabs(fast::exp(float(x)) - e) / e);
    worst_tanh = std::fmax(worst_tanh, std::fabs(fast::tanh(float(x)) - std::tanh(double(float(x)))));
    worst_erf = std::fmax(worst_erf, std::fabs(fast::erf(float(x)) - std::erf(double(float(x)))));
  }
  for (int i = 1; i <= 200000; ++i) {
    const float u = float(i) / 200000.0f;
    worst_log = std::fmax(worst_log, std::fabs(fast::log(u) - std::log(double(u))) / std::fmax(1.0, std::fabs(std::log(double(u)))));
    float s, c;
    fast::sincos_2pi(u * 0.999999f, s, c);
    const double a = 6.283185307179586 * double(u * 0.999999f);
    worst_sc = std::fmax(worst_sc, std::fmax(std::fabs(s - std::sin(a)), std::fabs(c - std::cos(a))));
  }
  CHECK(worst_exp < 4e-7, "fast exp relative error %g", worst_exp);
  CHECK(worst_tanh < 3e-7, "fast tanh error %g", worst_tanh);
  CHECK(worst_erf < 6e-7, "fast erf error %g", worst_erf);
  CHECK(worst_log < 3e-7, "fast log error %g", worst_log);
  CHECK(worst_sc < 3e-7, "fast sincos error %g", worst_sc);
  CHECK(fast::exp(-200.0f) >= 0.0f && fast::exp(200.0f) < 3.4e38f, "fast exp clamping");
  std::printf("fastmath worst errors: exp %.2e tanh %.2e erf %.2e log %.2e sincos %.2e\n", worst_exp, worst_tanh,
              worst_erf, worst_log, worst_sc);
}

int main() {
  test_fastmath();
  test_philox_kat();
  test_normals<float>();
  test_normals<double>();
  test_activation<ACT_LRELU>("lrelu");
  test_activation<ACT_GELU>("gelu");
  test_activation<ACT_SILU>("silu");
  test_activation<ACT_TANH>("tanh");
  test_activation<ACT_GELU_TANH>("gelu_tanh");
  test_activation<ACT_IDENTITY>("identity");
  for (double p : {0.0, 0.2, 1.0, 2.5}) test_activation<ACT_LRELU>("lrelu", p);
  for (double p : {0.2, 1.0, 2.5}) test_activation<ACT_ELU>("elu", p);
  for (double p : {0.2, 1.0, 8.0}) test_activation<ACT_SOFTPLUS>("softplus0", p);
  test_values();
  test_program_errors();
  if (failures) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("core tests passed\n");
  return 0;
}
