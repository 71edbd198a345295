// Fused CPU step of BAMSProd (core/optim/bamsprod.py, `fused=True`): two passes per tensor.
//
// The algorithm is docs/algorithm.md. Per parameter tensor p (gradient g, step t):
//
//   pass 1 (reads g, m, v, v_max, p; writes m, v, v_max):
//       g <- g + wd p;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  v_max <- max(v_max, v)
//       and sums v_max and, for binary groups, the per-channel abs-sums S_c = sum|p_c| and
//       ||p||^2 (p before this step's update); double accumulators, fed by float partial sums
//       over runs of kRun elements (see update_moments).
//   scalars: e = max(0, 1 - (sum_c S_c^2 / n_c) / ||p||^2)   (0 when ||p|| = 0), because
//       sum_c ||p_c - a_c sign(p_c)||^2 = ||p||^2 - sum_c n_c a_c^2 with a_c = S_c / n_c;
//       zeta = mean(v_max) / (1 - b2^t) * (1 + kappa e); c_l, c_u as in bound_schedule.
//   pass 2 (reads v_max, m, p; writes p):
//       v^ = clamp(v_max / (1 - b2^t), c_l, c_u);  p <- p - lr / (1 - b1^t) m / (sqrt(v^) + eps)
//       and the latent clip.
//
// Work is cut into items of at most kChunk elements (a binary tensor's items hold whole channels,
// or pieces of one channel when a channel is longer than kChunk); each item's partial sums are
// kept apart and added in item order, so the result does not depend on the thread count or on
// which thread did what (tests hold it bit-identical for 1, 2 and 3 threads).
//
// Scheduling (threads: at::parallel_for, i.e. torch.get_num_threads()). Each tensor's pass 2
// follows its own pass 1 at once, so that it finds part of its data still in cache. A big
// tensor (over 1/(4 threads) of the group's elements) is split between the threads, each on the
// same elements in both passes; every other tensor is done whole by one thread, biggest first,
// all of them in one parallel region. Every point where threads wait for each other costs a
// scheduler delay when the machine is busy (torch's fused Adam has one per tensor), so there
// are as few as load balance allows: 7 for ResNet-18's 20 binary convs with 2 threads.
//
// Measured on a 2-core AVX-512 VM (noisy) and not kept: walking pass 2 backwards; a read-only
// pass 1 followed by one full pass (13 tensor passes, not 12, and no better in practice);
// double accumulation element by element (slower than float runs); claiming items one at a time
// or stealing them (the prefetchers restart at every jump); blocks of several tensors in both
// passes split between threads (as fast on an idle machine, far slower on a busy one).
//
// Every tensor must be contiguous, on the CPU, float32 or float64 (the Python side checks and
// sends anything else to the foreach path).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace {

// Tuning knobs (a -D flag overrides them; see the comments at the top for what they do).
#ifndef BAMSPROD_CHUNK_LOG2
#define BAMSPROD_CHUNK_LOG2 15
#endif
#ifndef BAMSPROD_RUN
#define BAMSPROD_RUN 512
#endif
constexpr int64_t kChunk = int64_t{1} << BAMSPROD_CHUNK_LOG2;  // elements per work item
constexpr int64_t kGrain = int64_t{1} << 15;  // fewer threads below this many elements each
constexpr int64_t kRun = BAMSPROD_RUN;  // elements per float partial sum (see update_moments)

struct Hyper {
  double lr, beta1, beta2, eps, gamma, kappa, weight_decay;
  bool qerr;  // measure e(p): binary group and gamma > 0
  bool project;  // gamma > 0
  bool clip;
  double latent_clip;
};

struct Slot {  // one parameter tensor
  void* p;
  const void* g;
  void* m;
  void* v;
  void* vmax;
  bool is_double;
  int64_t numel;
  int64_t channel;  // elements per channel (dim 0); numel for 0-d and 1-d tensors
  bool split;  // channels longer than kChunk: each item is a piece of one channel
  int64_t step;
  // set between the passes
  double vhat_scale;  // 1 / (1 - beta2^t)
  double neg_step;  // -lr / (1 - beta1^t)
  double lower, upper;
};

struct Item {
  int64_t slot, begin, end;
};

struct Partial {
  double vsum = 0.0;  // sum of v_max
  double sq = 0.0;  // sum of p^2
  double l1 = 0.0;  // sum over whole channels of S_c^2 / n_c, or S of a channel piece
};

// Pass 1 over n elements. sum(v_max) and sum|p| run in T over runs of kRun elements (kRun / 16
// terms per vector lane with AVX-512), each run's total then added in double: a run's relative
// rounding error is at most ~kRun / 16 ulp of T (2e-6 for float32, ~3e-7 typically), and the
// runs add up without further loss; converting every element to double costs more than the rest
// of pass 1's arithmetic. p^2 is summed in double element by element: in float32 it would
// underflow for |p| < 1e-19 (and overflow above 1e19), and e(p) is a difference of two sums.
template <typename T, bool WD, bool SUM, bool QERR, bool UPDATE = true>
inline void update_moments(
    T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
    T* __restrict__ vm, int64_t n, const Hyper& h, double& vsum, double& sabs, double& sq) {
  const T b1 = static_cast<T>(h.beta1), c1 = static_cast<T>(1.0 - h.beta1);
  const T b2 = static_cast<T>(h.beta2), c2 = static_cast<T>(1.0 - h.beta2);
  const T wd = static_cast<T>(h.weight_decay);
  const int64_t run = (SUM || QERR) ? kRun : n;
  for (int64_t b = 0; b < n; b += run) {
    const int64_t e = std::min(n, b + run);
    T vs = 0, sa = 0;
    double ss = 0.0;
#pragma omp simd reduction(+ : vs, sa, ss)
    for (int64_t i = b; i < e; ++i) {
      const T pi = p[i];
      if constexpr (UPDATE) {
        T gi = g[i];
        if constexpr (WD) gi = gi + wd * pi;
        const T mi = m[i] * b1 + c1 * gi;
        const T vi = v[i] * b2 + c2 * gi * gi;
        T vmi = vm[i];
        vmi = (vmi < vi || vi != vi) ? vi : vmi;  // torch.maximum: NaN propagates
        m[i] = mi;
        v[i] = vi;
        vm[i] = vmi;
        if constexpr (SUM) vs += vmi;
      }
      if constexpr (QERR) {
        const double pd = static_cast<double>(pi);
        sa += std::abs(pi);
        ss += pd * pd;
      }
    }
    vsum += static_cast<double>(vs);
    sabs += static_cast<double>(sa);
    sq += ss;
  }
}

template <typename T, bool WD, bool SUM, bool QERR, bool UPDATE = true>
void pass1_item(const Slot& s, const Item& it, const Hyper& h, Partial& out) {
  T* p = static_cast<T*>(s.p);
  const T* g = static_cast<const T*>(s.g);
  T* m = static_cast<T*>(s.m);
  T* v = static_cast<T*>(s.v);
  T* vm = static_cast<T*>(s.vmax);
  double vsum = 0.0, sq = 0.0, l1 = 0.0;
  if constexpr (QERR) {
    // One channel (or one piece of one channel) at a time.
    const int64_t len = s.split ? it.end - it.begin : s.channel;
    for (int64_t b = it.begin; b < it.end; b += len) {
      double sabs = 0.0;
      update_moments<T, WD, SUM, QERR, UPDATE>(p + b, g + b, m + b, v + b, vm + b, len, h, vsum, sabs, sq);
      l1 += s.split ? sabs : sabs * sabs / static_cast<double>(s.channel);
    }
  } else {
    double unused = 0.0;
    update_moments<T, WD, SUM, QERR, UPDATE>(p + it.begin, g + it.begin, m + it.begin, v + it.begin,
                                     vm + it.begin, it.end - it.begin, h, vsum, unused, sq);
  }
  out.vsum = vsum;
  out.sq = sq;
  out.l1 = l1;
}

template <typename T>
void pass1_dispatch(const Slot& s, const Item& it, const Hyper& h, Partial& out) {
  const bool wd = h.weight_decay != 0.0;
  if (h.qerr) {
    if (wd) pass1_item<T, true, true, true>(s, it, h, out);
    else pass1_item<T, false, true, true>(s, it, h, out);
  } else if (h.project) {
    if (wd) pass1_item<T, true, true, false>(s, it, h, out);
    else pass1_item<T, false, true, false>(s, it, h, out);
  } else {
    if (wd) pass1_item<T, true, false, false>(s, it, h, out);
    else pass1_item<T, false, false, false>(s, it, h, out);
  }
}

template <typename T, bool PROJECT, bool CLIP>
void pass2_item(const Slot& s, const Item& it, const Hyper& h) {
  T* __restrict__ p = static_cast<T*>(s.p) + it.begin;
  const T* __restrict__ m = static_cast<const T*>(s.m) + it.begin;
  const T* __restrict__ vm = static_cast<const T*>(s.vmax) + it.begin;
  const int64_t n = it.end - it.begin;
  const T scale = static_cast<T>(s.vhat_scale), eps = static_cast<T>(h.eps);
  const T step = static_cast<T>(s.neg_step);
  const T lo = static_cast<T>(s.lower), hi = static_cast<T>(s.upper);
  const T c = static_cast<T>(h.latent_clip);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    T vh = vm[i] * scale;
    if constexpr (PROJECT) {
      vh = vh < lo ? lo : vh;  // NaN stays NaN, as torch.clamp
      vh = vh > hi ? hi : vh;
    }
    const T denom = std::sqrt(vh) + eps;
    T pi = p[i] + step * (m[i] / denom);
    if constexpr (CLIP) {
      pi = pi < -c ? -c : pi;
      pi = pi > c ? c : pi;
    }
    p[i] = pi;
  }
}

template <typename T>
void pass2_dispatch(const Slot& s, const Item& it, const Hyper& h) {
  if (h.project) {
    if (h.clip) pass2_item<T, true, true>(s, it, h);
    else pass2_item<T, true, false>(s, it, h);
  } else {
    if (h.clip) pass2_item<T, false, true>(s, it, h);
    else pass2_item<T, false, false>(s, it, h);
  }
}

// e(p) from one slot's items' partial sums (in item order): with S_c = sum|p_c| over the n_c
// elements of channel c, sum_c ||p_c - a_c sign(p_c)||^2 = ||p||^2 - sum_c S_c^2 / n_c.
double quantization_error(const Slot& s, const Item* items, const Partial* parts, int64_t count) {
  double sq = 0.0, l1 = 0.0, piece = 0.0;
  for (const auto k : c10::irange(count)) {
    sq += parts[k].sq;
    if (s.split) {
      piece += parts[k].l1;
      if (items[k].end % s.channel == 0) {  // the channel's last piece
        l1 += piece * piece / static_cast<double>(s.channel);
        piece = 0.0;
      }
    } else {
      l1 += parts[k].l1;
    }
  }
  if (sq == 0.0) return 0.0;  // ||p|| = 0 (NaN goes on: then e is NaN, as the reference's)
  const double e = 1.0 - l1 / sq;
  return e < 0.0 ? 0.0 : e;  // rounding: the residual is never negative
}

// The per-tensor scalars from the items' partial sums (items of one slot, in order).
void finish_slot(Slot& s, const Item* items, const Partial* parts, int64_t count, const Hyper& h) {
  const double t = static_cast<double>(s.step);
  const double bc1 = 1.0 - std::pow(h.beta1, t);
  const double bc2 = 1.0 - std::pow(h.beta2, t);
  s.vhat_scale = 1.0 / bc2;
  s.neg_step = -h.lr / bc1;
  s.lower = 0.0;
  s.upper = std::numeric_limits<double>::infinity();
  if (!h.project) return;
  double vsum = 0.0;
  for (const auto k : c10::irange(count)) vsum += parts[k].vsum;
  const double e = h.qerr ? quantization_error(s, items, parts, count) : 0.0;
  const double zeta = vsum / static_cast<double>(s.numel) * s.vhat_scale * (1.0 + h.kappa * e);
  if (std::isnan(zeta)) {
    // The reference's bounds are NaN, so every v^ and every updated p is NaN.
    s.neg_step = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  const double gt = h.gamma * t;
  s.lower = zeta * (1.0 - 1.0 / (gt + 1.0));
  s.upper = zeta * (1.0 + 1.0 / gt);
}

// Cut one slot into items: whole channels per item when the channel sums are needed (pieces of
// one channel when a channel is longer than kChunk), else plain runs of kChunk elements.
void make_items(Slot& s, int64_t idx, bool qerr, std::vector<Item>& items) {
  const int64_t n = s.numel;
  s.split = qerr && s.channel > kChunk;
  if (!qerr) {
    for (int64_t b = 0; b < n; b += kChunk) items.push_back({idx, b, std::min(b + kChunk, n)});
  } else if (!s.split) {
    const int64_t per = std::max<int64_t>(1, kChunk / s.channel) * s.channel;
    for (int64_t b = 0; b < n; b += per) items.push_back({idx, b, std::min(b + per, n)});
  } else {
    const int64_t pieces = (s.channel + kChunk - 1) / kChunk;
    const int64_t len = (s.channel + pieces - 1) / pieces;
    for (int64_t c = 0; c < n; c += s.channel) {
      for (int64_t b = c; b < c + s.channel; b += len) {
        items.push_back({idx, b, std::min(b + len, c + s.channel)});
      }
    }
  }
}

// Items of [first, last) cut into `parts` runs of about equal element counts.
std::vector<int64_t> partition(const std::vector<Item>& items, int64_t first, int64_t last,
                               int64_t parts) {
  int64_t total = 0;
  for (int64_t k = first; k < last; ++k) total += items[k].end - items[k].begin;
  std::vector<int64_t> bounds{first};
  int64_t done = 0;
  int64_t k = first;
  for (int64_t part = 1; part < parts; ++part) {
    const int64_t target = total * part / parts;
    while (k < last && done + (items[k].end - items[k].begin) / 2 < target) {
      done += items[k].end - items[k].begin;
      ++k;
    }
    bounds.push_back(k);
  }
  bounds.push_back(last);
  return bounds;
}

void check_tensor(const at::Tensor& t, const at::Tensor& p, const char* what) {
  TORCH_CHECK(t.device().is_cpu(), "bamsprod fused: ", what, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == p.scalar_type(), "bamsprod fused: ", what,
              " must have the parameter's dtype");
  TORCH_CHECK(t.numel() == p.numel(), "bamsprod fused: ", what,
              " must have the parameter's shape");
  TORCH_CHECK(t.is_contiguous(), "bamsprod fused: ", what, " must be contiguous");
}

void fused_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                at::TensorList steps, double lr, double beta1, double beta2, double eps,
                double gamma, double kappa, double weight_decay, bool binary,
                std::optional<double> latent_clip) {
  const size_t count = params.size();
  TORCH_CHECK(grads.size() == count && exp_avgs.size() == count &&
                  exp_avg_sqs.size() == count && max_exp_avg_sqs.size() == count &&
                  steps.size() == count,
              "bamsprod fused: the tensor lists and steps must have one entry per parameter");
  Hyper h{lr, beta1, beta2, eps, gamma, kappa, weight_decay, binary && gamma > 0.0, gamma > 0.0,
          binary && latent_clip.has_value(), latent_clip.value_or(0.0)};

  std::vector<Slot> slots;
  slots.reserve(count);
  std::vector<Item> items;
  std::vector<int64_t> slot_items;  // first item of each slot, then the end
  for (const auto i : c10::irange(count)) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(p.scalar_type() == at::kFloat || p.scalar_type() == at::kDouble,
                "bamsprod fused: parameters must be float32 or float64, got ", p.scalar_type());
    check_tensor(p, p, "a parameter");
    check_tensor(grads[i], p, "a gradient");
    check_tensor(exp_avgs[i], p, "exp_avg");
    check_tensor(exp_avg_sqs[i], p, "exp_avg_sq");
    check_tensor(max_exp_avg_sqs[i], p, "max_exp_avg_sq");
    TORCH_CHECK(steps[i].numel() == 1 && steps[i].device().is_cpu(),
                "bamsprod fused: each step count must be a one-element CPU tensor");
    const int64_t step = static_cast<int64_t>(steps[i].item<double>());
    TORCH_CHECK(step >= 1, "bamsprod fused: step counts start at 1");
    const int64_t n = p.numel();
    if (n == 0) continue;
    Slot s{};
    s.p = p.data_ptr();
    s.g = grads[i].data_ptr();
    s.m = exp_avgs[i].data_ptr();
    s.v = exp_avg_sqs[i].data_ptr();
    s.vmax = max_exp_avg_sqs[i].data_ptr();
    s.is_double = p.scalar_type() == at::kDouble;
    s.numel = n;
    s.channel = p.dim() > 1 ? n / p.size(0) : n;
    s.step = step;
    slot_items.push_back(static_cast<int64_t>(items.size()));
    make_items(s, static_cast<int64_t>(slots.size()), h.qerr, items);
    slots.push_back(s);
  }
  slot_items.push_back(static_cast<int64_t>(items.size()));
  std::vector<Partial> partials(items.size());
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());

  const int64_t nslots = static_cast<int64_t>(slots.size());
  auto pass1 = [&](int64_t k) {
    const Slot& s = slots[items[k].slot];
    if (s.is_double) pass1_dispatch<double>(s, items[k], h, partials[k]);
    else pass1_dispatch<float>(s, items[k], h, partials[k]);
  };
  auto finish = [&](int64_t i) {
    const int64_t a = slot_items[i], b = slot_items[i + 1];
    finish_slot(slots[i], items.data() + a, partials.data() + a, b - a, h);
  };
  auto pass2 = [&](int64_t k) {
    const Slot& s = slots[items[k].slot];
    if (s.is_double) pass2_dispatch<double>(s, items[k], h);
    else pass2_dispatch<float>(s, items[k], h);
  };
  // One tensor from start to end on the calling thread: pass 1, its scalars, pass 2.
  auto whole = [&](int64_t i) {
    for (int64_t k = slot_items[i]; k < slot_items[i + 1]; ++k) pass1(k);
    finish(i);
    for (int64_t k = slot_items[i]; k < slot_items[i + 1]; ++k) pass2(k);
  };
  int64_t total = 0;
  for (const auto& s : slots) total += s.numel;
  if (threads == 1 || total <= kGrain) {
    for (int64_t i = 0; i < nslots; ++i) whole(i);
  } else {
    // Big tensors (more than 1 / (4 threads) of the group) are split between the threads:
    // pass 1, their scalars, pass 2, each thread on the same elements in both passes. Every
    // other tensor goes whole to one thread, biggest first, in one parallel region: each point
    // where threads wait for each other costs a scheduler delay when the machine is busy, so
    // there are as few as the load balance allows.
    const int64_t big = std::max<int64_t>(kGrain, total / (4 * threads));
    std::vector<int64_t> small;
    for (int64_t i = 0; i < nslots; ++i) {
      if (slots[i].numel <= big) {
        small.push_back(i);
        continue;
      }
      const int64_t first = slot_items[i], last = slot_items[i + 1];
      const int64_t parts = std::clamp<int64_t>(slots[i].numel / kGrain, 1, threads);
      const auto bounds = partition(items, first, last, parts);
      auto run = [&](auto&& body) {
        at::parallel_for(0, parts, 1, [&](int64_t pb, int64_t pe) {
          for (int64_t part = pb; part < pe; ++part) {
            for (int64_t k = bounds[part]; k < bounds[part + 1]; ++k) body(k);
          }
        });
      };
      run(pass1);
      finish(i);
      run(pass2);
    }
    std::stable_sort(small.begin(), small.end(),
                     [&](int64_t a, int64_t b) { return slots[a].numel > slots[b].numel; });
    int64_t small_numel = 0;
    for (const auto i : small) small_numel += slots[i].numel;
    if (small_numel <= kGrain) {
      for (const auto i : small) whole(i);
    } else {
      std::atomic<size_t> next{0};
      at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
        for (size_t j = next.fetch_add(1); j < small.size(); j = next.fetch_add(1)) {
          whole(small[j]);
        }
      });
    }
  }
  // Written through raw pointers: tell autograd, as torch's in-place ops do.
  for (const auto i : c10::irange(count)) {
    for (const at::Tensor* t : {&params[i], &exp_avgs[i], &exp_avg_sqs[i], &max_exp_avg_sqs[i]}) {
      t->unsafeGetTensorImpl()->bump_version();
    }
  }
}

// The step with a tensor lr (`step.tensor_lr`, as torch's `_fused_adam_.tensor_lr`): inside a
// torch.compile'd step the lr is a graph input, not a constant baked in, so a scheduler that
// moves it in place never recompiles. Read here, on the CPU, so nothing syncs in Python.
void fused_step_tensor_lr(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                          at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                          at::TensorList steps, const at::Tensor& lr, double beta1, double beta2,
                          double eps, double gamma, double kappa, double weight_decay,
                          bool binary, std::optional<double> latent_clip) {
  TORCH_CHECK(lr.numel() == 1 && lr.device().is_cpu(),
              "bamsprod fused: a tensor lr must be a one-element CPU tensor");
  fused_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr.item<double>(),
             beta1, beta2, eps, gamma, kappa, weight_decay, binary, latent_clip);
}

// e(w) of each tensor, by the same items, pass-1 sums and closed form as the step (for tests).
at::Tensor quantization_errors(at::TensorList tensors) {
  std::vector<double> out;
  const Hyper h{};
  for (const auto& w : tensors) {
    TORCH_CHECK(w.device().is_cpu() && w.is_contiguous(),
                "bamsprod fused: quantization_errors needs contiguous CPU tensors");
    TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble,
                "bamsprod fused: quantization_errors needs float32 or float64 tensors");
    Slot s{};
    s.p = const_cast<void*>(w.const_data_ptr());
    s.numel = w.numel();
    s.channel = w.dim() > 1 ? s.numel / w.size(0) : s.numel;
    if (s.numel == 0) {
      out.push_back(0.0);
      continue;
    }
    std::vector<Item> items;
    make_items(s, 0, true, items);
    std::vector<Partial> parts(items.size());
    for (const auto k : c10::irange(items.size())) {
      if (w.scalar_type() == at::kDouble) {
        pass1_item<double, false, false, true, false>(s, items[k], h, parts[k]);
      } else {
        pass1_item<float, false, false, true, false>(s, items[k], h, parts[k]);
      }
    }
    out.push_back(quantization_error(s, items.data(), parts.data(),
                                     static_cast<int64_t>(items.size())));
  }
  at::Tensor result = at::empty({static_cast<int64_t>(out.size())}, at::kDouble);
  std::copy(out.begin(), out.end(), result.data_ptr<double>());
  return result;
}

}  // namespace

TORCH_LIBRARY(bamsprod_fused, m) {
  m.def(
      "step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
      "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] max_exp_avg_sqs, Tensor[] steps, float lr, "
      "float beta1, float beta2, float eps, float gamma, float kappa, float weight_decay, "
      "bool binary, float? latent_clip) -> ()");
  m.def(
      "step.tensor_lr(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
      "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] max_exp_avg_sqs, Tensor[] steps, Tensor lr, "
      "float beta1, float beta2, float eps, float gamma, float kappa, float weight_decay, "
      "bool binary, float? latent_clip) -> ()");
  m.def("quantization_errors(Tensor[] tensors) -> Tensor");
}

TORCH_LIBRARY_IMPL(bamsprod_fused, CPU, m) {
  m.impl("step", &fused_step);
  m.impl("step.tensor_lr", &fused_step_tensor_lr);
  m.impl("quantization_errors", &quantization_errors);
}
