// Fibers and the lane scheduler of the SIMT emulation (simt_emulation.h describes the semantics).
#include "cpu/simt_emulation.h"

#include <stdlib.h>

#include <algorithm>
#include <set>
#include <sstream>

#if defined(__x86_64__) && (defined(__linux__) || defined(__APPLE__))
#define HEBM_EMU_ASM_SWITCH 1
#else
#define HEBM_EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

namespace hebm {
namespace emu {

namespace {

constexpr size_t kStack = 256 * 1024;  // per fiber; the kernels keep only small register arrays on the stack

struct Abort {};  // unwinds a fiber after Cluster::fail recorded the diagnosis

}  // namespace

#if HEBM_EMU_ASM_SWITCH
// A minimal context switch (the callee-saved registers of the System V ABI, MXCSR and the x87 control word): the
// emulation switches fibers at every shuffle, so this is its inner loop (ucontext would add a system call).
extern "C" void hebm_emu_switch(void** save_sp, void* to_sp);
extern "C" void hebm_emu_trampoline();
#if defined(__APPLE__)
#define HEBM_SYM(x) "_" #x
#else
#define HEBM_SYM(x) #x
#endif
asm(".text\n"
    ".p2align 4\n"
    ".globl " HEBM_SYM(hebm_emu_switch) "\n" HEBM_SYM(hebm_emu_switch) ":\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $16, %rsp\n  stmxcsr 8(%rsp)\n  fnstcw (%rsp)\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  ldmxcsr 8(%rsp)\n  fldcw (%rsp)\n  addq $16, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n  ret\n"
    ".p2align 4\n"
    ".globl " HEBM_SYM(hebm_emu_trampoline) "\n" HEBM_SYM(hebm_emu_trampoline) ":\n"
    "  movq %r12, %rdi\n  movq %r13, %rsi\n  callq *%r14\n  ud2\n");

namespace {
extern "C" void hebm_emu_entry(Cluster* c, Thread* t) { fiber_main(c, t); }

void* fresh_context(char* stack, Cluster* c, Thread* t) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + kStack - 64) & ~uintptr_t(15);
  uint64_t* sp = reinterpret_cast<uint64_t*>(top - 72);  // after the switch's ret, rsp = top (16-byte aligned)
  uint32_t mxcsr;
  uint16_t fpcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  sp[0] = fpcw;
  sp[1] = mxcsr;
  sp[2] = 0;                                              // r15
  sp[3] = reinterpret_cast<uint64_t>(&hebm_emu_entry);    // r14: the function
  sp[4] = reinterpret_cast<uint64_t>(t);                  // r13: second argument
  sp[5] = reinterpret_cast<uint64_t>(c);                  // r12: first argument
  sp[6] = 0;                                              // rbx
  sp[7] = 0;                                              // rbp
  sp[8] = reinterpret_cast<uint64_t>(&hebm_emu_trampoline);
  return sp;
}
void switch_to(void** save, void* to) { hebm_emu_switch(save, to); }
}  // namespace
#else
namespace {
struct UC {
  ucontext_t uc;
};
thread_local Cluster* g_start_c;
thread_local Thread* g_start_t;
void uc_entry() { fiber_main(g_start_c, g_start_t); }
void* fresh_context(char* stack, Cluster* c, Thread* t) {
  UC* u = new UC;
  getcontext(&u->uc);
  u->uc.uc_stack.ss_sp = stack;
  u->uc.uc_stack.ss_size = kStack;
  u->uc.uc_link = nullptr;
  makecontext(&u->uc, uc_entry, 0);
  (void)c;
  (void)t;
  return u;
}
void switch_to(void** save, void* to) {
  if (!*save) *save = new UC;
  UC* from = static_cast<UC*>(*save);
  swapcontext(&from->uc, &static_cast<UC*>(to)->uc);
}
#endif

void fiber_main(Cluster* c, Thread* t) {
  try {
    EmuCtx ctx(c, t);
    (*c->body_)(ctx);
  } catch (const Abort&) {
  } catch (const std::exception& e) {
    if (c->error_.empty()) c->error_ = e.what();
  } catch (...) {
    if (c->error_.empty()) c->error_ = "unknown exception in the emulated kernel";
  }
  if (t->arrived && c->error_.empty()) {
    std::ostringstream s;
    s << "emulation: block " << (c->index_ * c->nblocks_ + t->block) << " thread " << t->tid
      << " exited between cluster_arrive and cluster_wait (an arrive without its wait)";
    c->error_ = s.str();
  }
  t->state = Thread::DONE;
  ++c->done_[t->block];
  switch_to(&t->fiber, c->sched_);
  abort();  // a finished fiber is never resumed
}

Cluster::Cluster(int nblocks, int nthreads, size_t smem_bytes, bool banks)
    : nblocks_(nblocks), nthreads_(nthreads), smem_bytes_(smem_bytes), banks_(banks) {
  if (nblocks < 1 || nblocks > 8) throw std::invalid_argument("emulation: cluster size must be in [1, 8]");
  if (nthreads < 32 || nthreads > 1024 || nthreads % 32)
    throw std::invalid_argument("emulation: threads per block must be a multiple of 32 in [32, 1024]");
  for (int b = 0; b < nblocks; ++b) smem_.emplace_back((smem_bytes + 64 + 63) / 64 * 64 + 64);
  threads_.resize(size_t(nblocks) * nthreads);
  values_.resize(threads_.size() * 2);
  mma_.resize(threads_.size() * 2 * EmuCtx::kMmaRegs);
  for (size_t i = 0; i < threads_.size(); ++i) stacks_.emplace_back(new char[kStack]);
  accesses_.resize(size_t(nblocks) * (nthreads / 32));
  shadow_.resize(nblocks);
  const size_t words = (smem_bytes + 3) / 4;
  for (Shadow& sh : shadow_) {
    sh.inflight.resize(words);
    sh.landed.resize(words);
    sh.epoch.resize(words);
    sh.who.resize(words);
    sh.mbar_word.resize(words);
    if (nblocks > 1) {
      sh.xblk.resize(words);
      sh.xneed.resize(words);
      sh.xrec.resize(words * size_t(nthreads / 32));
    }
  }
  nwarps_all_ = nblocks * (nthreads / 32);
  wep_.resize(size_t(nwarps_all_));
  if (nblocks > 1) know_.resize(threads_.size() * size_t(nwarps_all_));
  done_.resize(size_t(nblocks));
}

Cluster::~Cluster() {
#if !HEBM_EMU_ASM_SWITCH
  for (auto& t : threads_) delete static_cast<UC*>(t.fiber);
  delete static_cast<UC*>(sched_);
#endif
}

// The block's buffer, 64-byte aligned inside its vector.
static char* aligned(std::vector<char>& v) {
  return reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(v.data()) + 63) & ~uintptr_t(63));
}

char* Cluster::smem(int b) { return aligned(smem_[b]); }

void Cluster::run(const std::function<void(EmuCtx&)>& body, int64_t index) {
  body_ = &body;
  index_ = index;
  error_.clear();
  for (int b = 0; b < nblocks_; ++b) memset(aligned(smem_[b]), 0, smem_bytes_);
  for (int b = 0; b < nblocks_; ++b)
    for (int i = 0; i < nthreads_; ++i) {
      Thread& t = threads_[size_t(b) * nthreads_ + i];
#if !HEBM_EMU_ASM_SWITCH
      delete static_cast<UC*>(t.fiber);
#endif
      t = Thread();
      t.cl = this;
      t.block = b;
      t.tid = i;
      t.lane = i % 32;
      t.warp = i / 32;
      t.fiber = fresh_context(stacks_[size_t(b) * nthreads_ + i].get(), this, &t);
    }
  for (auto& a : accesses_) a.clear();
  for (Shadow& sh : shadow_) {
    std::fill(sh.inflight.begin(), sh.inflight.end(), 0);
    std::fill(sh.landed.begin(), sh.landed.end(), 0);
    std::fill(sh.epoch.begin(), sh.epoch.end(), 0);
    std::fill(sh.xblk.begin(), sh.xblk.end(), 0);
    std::fill(sh.xneed.begin(), sh.xneed.end(), 0);
    std::fill(sh.xrec.begin(), sh.xrec.end(), 0);
    std::fill(sh.mbar_word.begin(), sh.mbar_word.end(), 0);
    sh.landed_words.clear();
    sh.cur = 1;
  }
  phase_ = 0;
  arrivals_ = 0;
  std::fill(wep_.begin(), wep_.end(), 0);
  std::fill(know_.begin(), know_.end(), 0);
  std::fill(done_.begin(), done_.end(), 0);
  mbars_.clear();
  mbar_at_.clear();
  const int nw = nthreads_ / 32;
  for (;;) {
    bool ran_any = false;
    // reverse order on odd cluster phases: a thread between arrive and wait runs before, or after, the others
    const bool rev = phase_ & 1;
    for (int bi = 0; bi < nblocks_; ++bi)
      for (int wi = 0; wi < nw; ++wi) {
        const int b = rev ? nblocks_ - 1 - bi : bi, w = rev ? nw - 1 - wi : wi;
        for (;;) {
          bool ran = false;
          for (int l = 0; l < 32; ++l) {
            Thread* t = &threads_[size_t(b) * nthreads_ + w * 32 + l];
            if (t->state != Thread::READY) continue;
            current_ = t;
            switch_to(&sched_, t->fiber);
            current_ = nullptr;
            if (!error_.empty()) throw std::runtime_error(error_);
            ran = true;
          }
          if (!ran) break;
          ran_any = true;
          if (banks_) bank_epoch(b, w);
          settle_warp(b, w);
          if (threads_[size_t(b) * nthreads_ + w * 32].state != Thread::READY) break;
        }
      }
    const bool released = release_barriers();
    bool done = true;
    for (const Thread& t : threads_) done = done && t.state == Thread::DONE;
    if (done) break;
    if (!ran_any && !released)
      throw std::runtime_error("emulation: deadlock (a barrier that cannot complete): " + describe());
  }
  body_ = nullptr;
}

void Cluster::yield(Thread* t) { switch_to(&t->fiber, sched_); }

void Cluster::fail(const Thread* t, const std::string& msg) {
  std::ostringstream s;
  s << "emulation: block " << (index_ * nblocks_ + t->block) << " thread " << t->tid << " (warp " << t->warp
    << ", lane " << t->lane << "): " << msg;
  if (error_.empty()) error_ = s.str();
  throw Abort();
}

// All lanes of a warp stopped: when they stopped at a warp collective, they must all be at the same one.
void Cluster::settle_warp(int b, int w) {
  Thread* lanes = &threads_[size_t(b) * nthreads_ + w * 32];
  int at = 0;
  for (int l = 0; l < 32; ++l) at += lanes[l].state == Thread::AT_WARP;
  if (at == 0) return;
  for (int l = 0; l < 32; ++l) {
    const Thread& t = lanes[l];
    if (t.state != Thread::AT_WARP || t.coll_kind != lanes[0].coll_kind || t.coll_count != lanes[0].coll_count) {
      std::ostringstream s;
      s << "emulation: warp divergence in block " << (index_ * nblocks_ + b) << " warp " << w << ": lane 0 waits at "
        << "warp collective #" << lanes[0].coll_count << " (kind " << lanes[0].coll_kind << "), lane " << l
        << (t.state == Thread::DONE ? " has exited"
            : t.state == Thread::AT_WARP ? " waits at a different warp collective"
                                         : " waits at a barrier")
        << " (a full-mask shuffle, __syncwarp or mma.sync needs all 32 lanes at the same instruction)";
      throw std::runtime_error(s.str());
    }
  }
  for (int l = 0; l < 32; ++l) lanes[l].state = Thread::READY;
  ++stats_.warp_collectives;
  if (lanes[0].coll_kind == EmuCtx::kSyncWarp && nblocks_ > 1) {  // __syncwarp orders the lanes' accesses
    Thread* ts[32];
    for (int l = 0; l < 32; ++l) ts[l] = &lanes[l];
    vc_join(ts, 32);
  }
}

uint64_t Cluster::warp_collective(Thread* t, int kind, int arg, uint64_t value) {
  const int64_t n = t->coll_count++;
  t->coll_kind = kind;
  t->coll_arg = arg;
  t->state = Thread::AT_WARP;
  // two slots by parity: a lane that runs ahead to the next collective writes the other slot before the lanes
  // still reading this one are resumed
  values_[(size_t(t->block) * nthreads_ + t->tid) * 2 + (n & 1)] = value;
  yield(t);
  if (kind == EmuCtx::kSyncWarp) return 0;
  int src = t->lane;
  switch (kind) {
    case EmuCtx::kXor: src = t->lane ^ arg; break;
    case EmuCtx::kDown: src = t->lane + arg; break;
    case EmuCtx::kUp: src = t->lane - arg; break;
    case EmuCtx::kIdx: src = ((arg % 32) + 32) % 32; break;
  }
  if (src < 0 || src > 31) src = t->lane;  // outside the warp: the lane's own value (programming guide, width 32)
  return values_[(size_t(t->block) * nthreads_ + t->warp * 32 + src) * 2 + (n & 1)];
}

// Element (r, k) of the warp's A and (k, n) of its B, from the lanes' deposited registers `w` (lane l's at
// w + l * 2 * kMmaRegs), by the PTX ISA's layouts (simt.h: "MMA fragments").
namespace {
constexpr int kSlot = 2 * EmuCtx::kMmaRegs;
float bf16_elem(const uint32_t* w, int lane, int reg, int half) {
  return core::bits_float(((w[lane * kSlot + reg] >> (16 * half)) & 0xffffu) << 16);
}
float tf32_elem(const uint32_t* w, int lane, int reg) {
  return core::bits_float(w[lane * kSlot + reg] & 0xffffe000u);  // the mma reads the top 19 bits
}
float a_elem(int kind, const uint32_t* w, int r, int k) {
  if (kind == EmuCtx::kMmaBf16) return bf16_elem(w, (r & 7) * 4 + ((k & 7) >> 1), (r >> 3) + 2 * (k >> 3), k & 1);
  return tf32_elem(w, (r & 7) * 4 + (k & 3), (r >> 3) + 2 * (k >> 2));
}
float b_elem(int kind, const uint32_t* w, int k, int n) {
  if (kind == EmuCtx::kMmaBf16) return bf16_elem(w, n * 4 + ((k & 7) >> 1), 4 + (k >> 3), k & 1);
  return tf32_elem(w, n * 4 + (k & 3), 4 + (k >> 2));
}
}  // namespace

void Cluster::warp_mma(Thread* t, int kind, float d[4], const uint32_t a[4], const uint32_t b[2],
                       const float c[4]) {
  const int64_t n = t->coll_count++;
  t->coll_kind = kind;
  t->coll_arg = 0;
  t->state = Thread::AT_WARP;
  // the lane's slot of this collective's parity (see warp_collective: a lane running ahead uses the other slot)
  uint32_t* mine = &mma_[(size_t(t->block) * nthreads_ + t->tid) * kSlot + (n & 1) * EmuCtx::kMmaRegs];
  for (int i = 0; i < 4; ++i) mine[i] = a[i];
  for (int i = 0; i < 2; ++i) mine[4 + i] = b[i];
  float cv[4];  // c may alias d
  for (int i = 0; i < 4; ++i) {
    cv[i] = c[i];
    mine[6 + i] = core::float_bits(c[i]);
  }
  yield(t);
  const uint32_t* w = &mma_[(size_t(t->block) * nthreads_ + t->warp * 32) * kSlot + (n & 1) * EmuCtx::kMmaRegs];
  const int K = kind == EmuCtx::kMmaBf16 ? 16 : 8;
  const int g = t->lane >> 2, q = t->lane & 3;
  for (int i = 0; i < 4; ++i) {
    const int r = g + 8 * (i >> 1), col = 2 * q + (i & 1);
    float acc = cv[i];
    for (int k = 0; k < K; ++k) acc += a_elem(kind, w, r, k) * b_elem(kind, w, k, col);  // exact products
    d[i] = acc;
  }
}

void Cluster::block_barrier(Thread* t) {
  t->state = Thread::AT_BAR;
  yield(t);
}

void Cluster::named_barrier(Thread* t, int id, int n) {
  if (id < 1 || id > 15) fail(t, "named barrier id must be in [1, 15] (0 is the block barrier), got " + std::to_string(id));
  if (n < 32 || n % 32 || n > nthreads_)
    fail(t, "named barrier thread count must be a multiple of 32 in [32, " + std::to_string(nthreads_) + "], got " +
                std::to_string(n));
  t->state = Thread::AT_NAMED;
  t->named_id = id;
  t->named_n = n;
  yield(t);
}

void Cluster::cluster_barrier(Thread* t) {
  if (t->arrived) fail(t, "cluster_sync() between cluster_arrive and cluster_wait");
  cluster_arrive(t);
  cluster_wait(t);
}

void Cluster::cluster_arrive(Thread* t) {
  if (t->arrived) fail(t, "cluster_arrive twice without cluster_wait");
  t->arrived = true;
  t->arrive_phase = phase_;
  ++t->arrives;
  if (++arrivals_ == int64_t(threads_.size())) {  // the last arrival completes the phase
    ++phase_;
    arrivals_ = 0;
    ++stats_.cluster_barriers;
    for (int b = 0; b < nblocks_; ++b) barrier_epoch(b);  // cp.async: what landed is visible after the barrier
  }
  // no yield: the thread runs on (its next reads are the ones the wait would order)
}

void Cluster::cluster_wait(Thread* t) {
  if (!t->arrived) fail(t, "cluster_wait without cluster_arrive");
  t->state = Thread::AT_CLUSTER;
  yield(t);
  t->arrived = false;
  ++t->waits;
}

// A barrier of the threads ts completed: each knows what any of them knew, and the warps all of whose 32 lanes took
// part start a new epoch (their accesses so far are ordered before every participant's next ones).
void Cluster::vc_join(Thread* const* ts, int n) {
  if (nblocks_ < 2) return;
  join_.assign(size_t(nwarps_all_), 0);
  std::vector<int> lanes(size_t(nwarps_all_), 0);
  for (int i = 0; i < n; ++i) {
    const int32_t* k = know(ts[i]);
    for (int w = 0; w < nwarps_all_; ++w) join_[w] = std::max(join_[w], k[w]);
    ++lanes[size_t(ts[i]->block * (nthreads_ / 32) + ts[i]->warp)];
  }
  for (int w = 0; w < nwarps_all_; ++w)
    if (lanes[w] == 32) join_[w] = std::max(join_[w], ++wep_[w]);
  for (int i = 0; i < n; ++i) std::copy(join_.begin(), join_.end(), know(ts[i]));
}

// Whether thread t is ordered, by mbarrier phases, after the run of accesses to word w of block b's shared memory
// that the block of rank xblk - 1 made last (the warp epochs recorded per warp of that block).
bool Cluster::vc_covers(const Thread* t, int b, size_t w) {
  const Shadow& S = shadow_[b];
  const int nw = nthreads_ / 32, pb = S.xblk[w] - 1;
  const int32_t* rec = &S.xrec[w * size_t(nw)];
  const int32_t* k = &know_[size_t(t->block * nthreads_ + t->tid) * nwarps_all_ + size_t(pb * nw)];
  for (int i = 0; i < nw; ++i)
    if (rec[i] > k[i]) return false;
  return true;
}

bool Cluster::release_barriers() {
  bool any = false;
  // mbarrier waits whose phase completed: they acquire what its arrivals released
  for (Thread& t : threads_)
    if (t.state == Thread::AT_MBAR) {
      const Mbar& m = mbars_[size_t(t.mbar)];
      if ((m.phase & 1) != t.mbar_parity) {
        vc_acquire(&t, m.rel[t.mbar_parity]);
        t.state = Thread::READY;
        any = true;
      }
    }
  // cluster barrier: a waiting thread whose phase completed (every thread of every block arrived)
  for (Thread& t : threads_)
    if (t.state == Thread::AT_CLUSTER && t.arrive_phase < phase_) {
      t.state = Thread::READY;
      any = true;
    }
  for (int b = 0; b < nblocks_; ++b) {
    Thread* bt = &threads_[size_t(b) * nthreads_];
    bool full = true;
    for (int i = 0; i < nthreads_; ++i) full = full && bt[i].state == Thread::AT_BAR;
    if (full) {
      if (nblocks_ > 1) {
        std::vector<Thread*> ts(static_cast<size_t>(nthreads_), nullptr);
        for (int i = 0; i < nthreads_; ++i) ts[size_t(i)] = &bt[i];
        vc_join(ts.data(), nthreads_);
      }
      for (int i = 0; i < nthreads_; ++i) bt[i].state = Thread::READY;
      ++stats_.block_barriers;
      barrier_epoch(b);
      any = true;
    }
    for (int id = 1; id <= 15; ++id) {
      int count = 0, n = 0;
      for (int i = 0; i < nthreads_; ++i)
        if (bt[i].state == Thread::AT_NAMED && bt[i].named_id == id) {
          ++count;
          if (n && bt[i].named_n != n)
            throw std::runtime_error("emulation: threads arrive at named barrier " + std::to_string(id) +
                                     " with different thread counts");
          n = bt[i].named_n;
        }
      if (count && count == n) {
        std::vector<Thread*> ts;
        for (int i = 0; i < nthreads_; ++i)
          if (bt[i].state == Thread::AT_NAMED && bt[i].named_id == id) ts.push_back(&bt[i]);
        vc_join(ts.data(), int(ts.size()));
        for (Thread* p : ts) p->state = Thread::READY;
        ++stats_.named_barriers;
        any = true;
      } else if (count > n) {
        throw std::runtime_error("emulation: more threads than its count (" + std::to_string(n) +
                                 ") arrived at named barrier " + std::to_string(id));
      }
    }
  }
  return any;
}

std::string Cluster::describe() const {
  std::ostringstream s;
  const char* names[] = {"ready", "at a warp collective", "at sync()", "at a named barrier", "at cluster_sync()/cluster_wait()",
                         "at an mbarrier wait", "exited"};
  for (int b = 0; b < nblocks_; ++b) {
    int count[7] = {0, 0, 0, 0, 0, 0, 0};
    std::map<std::pair<int, int>, int> waits;  // (mbarrier, parity) -> threads
    for (int i = 0; i < nthreads_; ++i) {
      const Thread& t = threads_[size_t(b) * nthreads_ + i];
      ++count[t.state];
      if (t.state == Thread::AT_MBAR) ++waits[{t.mbar, t.mbar_parity}];
    }
    s << "block " << (index_ * nblocks_ + b) << ":";
    for (int k = 0; k < 7; ++k)
      if (count[k]) s << " " << count[k] << " " << names[k];
    for (const auto& w : waits)
      s << " (" << w.second << " wait on " << mbar_name(mbars_[size_t(w.first.first)]) << " for its phase of parity "
        << w.first.second << ")";
    s << ";";
  }
  return s.str();
}

void Cluster::check(const Thread* t, const void* p, size_t bytes, size_t align, const char* what) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (int b = 0; b < nblocks_; ++b) {
    const uintptr_t lo = reinterpret_cast<uintptr_t>(aligned(smem_[b]));
    if (a >= lo && a < lo + smem_bytes_ + 64) {
      if (a + bytes > lo + smem_bytes_) {
        std::ostringstream s;
        s << "shared-memory " << what << " out of bounds: bytes [" << (a - lo) << ", " << (a - lo + bytes)
          << ") of block rank " << b << "'s " << smem_bytes_ << " bytes";
        fail(t, s.str());
      }
      if (a % align) {
        std::ostringstream s;
        s << "misaligned shared-memory " << what << " of " << bytes << " bytes at byte " << (a - lo)
          << " (needs " << align << "-byte alignment)";
        fail(t, s.str());
      }
      if (b != t->block && done_[size_t(b)] == nthreads_) {
        std::ostringstream s;
        s << "DSMEM " << what << " of bytes [" << (a - lo) << ", " << (a - lo + bytes) << ") of block rank " << b
          << ", whose threads have all exited (its shared memory is gone: a cluster barrier before the exit is "
             "missing)";
        fail(t, s.str());
      }
      track(t, b, a - lo, bytes);
      return;
    }
  }
  fail(t, std::string("shared-memory ") + what + " outside every block's shared memory (a global or stray pointer)");
}

std::string Cluster::who_(int32_t g) const {
  if (g < 0) return "several threads";
  std::ostringstream s;
  s << "block " << (index_ * nblocks_ + g / nthreads_) << " thread " << g % nthreads_ << " (warp "
    << g % nthreads_ / 32 << ", lane " << g % 32 << ")";
  return s.str();
}

static std::string byte_range(int b, uintptr_t off, size_t bytes) {
  std::ostringstream s;
  s << "shared-memory bytes [" << off << ", " << off + bytes << ") of block rank " << b;
  return s.str();
}

// Every access (sh, ld4, st4) of thread t to bytes [off, off + bytes) of block b: the cp.async checks, and on a
// cluster the order of accesses from different blocks: a DSMEM store and the owner's read of it (or the owner's
// last read and a peer's store over it) need a cluster barrier between them (a block barrier orders one block).
void Cluster::track(const Thread* t, int b, uintptr_t off, size_t bytes) {
  Shadow& S = shadow_[b];
  const int32_t g = int32_t(t->block * nthreads_ + t->tid);
  const int nw = nthreads_ / 32;
  for (size_t w = off / 4; w < (off + bytes + 3) / 4; ++w) {
    if (S.mbar_word[w])
      fail(t, "data access to " + byte_range(b, off, bytes) + ", which hold an initialised mbarrier");
    if (nblocks_ > 1) {
      const int32_t mine = t->block + 1;
      int32_t* rec = &S.xrec[w * size_t(nw)];
      if (S.xblk[w] && S.xblk[w] != mine) {
        if (t->waits < S.xneed[w] && !vc_covers(t, b, w)) {
          std::ostringstream m;
          m << "access to " << byte_range(b, off, bytes) << " that a thread of block rank " << (S.xblk[w] - 1)
            << " accessed with no cluster barrier completed since (after its " << (S.xneed[w] - 1)
            << " cluster arrives; this thread has completed " << t->waits
            << ") and no chain of mbarrier phases (arrive after the access, then this thread's wait) ordering "
               "them: a DSMEM store and the other block's read (or a read and the peer's store over it) need a "
               "cluster barrier or an mbarrier phase between them, a block barrier orders one block only";
          fail(t, m.str());
        }
        S.xneed[w] = t->arrives + 1;
        std::fill(rec, rec + nw, 0);
      } else if (S.xneed[w] < t->arrives + 1) {
        S.xneed[w] = t->arrives + 1;
      }
      S.xblk[w] = mine;
      const int32_t e = wep_[size_t(t->block * nw + t->warp)] + 1;
      if (rec[t->warp] < e) rec[t->warp] = e;
    }
    if (S.inflight[w])
      fail(t, "access to " + byte_range(b, off, bytes) + " while a cp.async into them is in flight (issued by " +
                  who_(S.inflight[w] - 1) +
                  " and not yet covered by its cp.async.wait_group: a read before the wait, or a wait too late)");
    if (S.landed[w] && S.landed[w] != g + 1)
      fail(t, "access to " + byte_range(b, off, bytes) + " that " + who_(S.landed[w] - 1) +
                  " copied with cp.async and waited for, with no barrier since (the barrier between the wait and "
                  "the other threads' reads is missing)");
    if (S.epoch[w] != S.cur) {
      S.epoch[w] = S.cur;
      S.who[w] = g;
    } else if (S.who[w] != g) {
      S.who[w] = -1;
    }
  }
}

// A block (or cluster) barrier completed for block b: what landed is visible to every thread, accesses before it
// are ordered before every later copy.
void Cluster::barrier_epoch(int b) {
  Shadow& S = shadow_[b];
  ++S.cur;
  for (int32_t w : S.landed_words) S.landed[w] = 0;
  S.landed_words.clear();
}

void Cluster::cp_async(Thread* t, void* dst, const void* src, int bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
  const uintptr_t lo = reinterpret_cast<uintptr_t>(aligned(smem_[t->block]));
  for (int b = 0; b < nblocks_; ++b) {
    const uintptr_t l = reinterpret_cast<uintptr_t>(aligned(smem_[b]));
    if (s >= l && s < l + smem_bytes_ + 64) fail(t, "cp.async source in shared memory (it copies global -> shared)");
  }
  if (a < lo || a >= lo + smem_bytes_ + 64)
    fail(t, "cp.async destination outside this block's shared memory (a global, peer or stray pointer)");
  if (a + bytes > lo + smem_bytes_) {
    std::ostringstream m;
    m << "cp.async destination out of bounds: bytes [" << (a - lo) << ", " << (a - lo + bytes) << ") of "
      << smem_bytes_ << " bytes";
    fail(t, m.str());
  }
  if (a % bytes || s % bytes) {
    std::ostringstream m;
    m << "misaligned cp.async of " << bytes << " bytes: shared byte " << (a - lo) << ", global address " << s
      << " (both need " << bytes << "-byte alignment)";
    fail(t, m.str());
  }
  Shadow& S = shadow_[t->block];
  const int32_t g = int32_t(t->block * nthreads_ + t->tid);
  const uintptr_t off = a - lo;
  for (uintptr_t w = off / 4; w < (off + bytes) / 4; ++w) {
    if (S.inflight[w])
      fail(t, "cp.async into " + byte_range(t->block, off, bytes) + " while " + who_(S.inflight[w] - 1) +
                  "'s copy into them is still in flight");
    if (S.landed[w] && S.landed[w] != g + 1)
      fail(t, "cp.async into " + byte_range(t->block, off, bytes) + " that " + who_(S.landed[w] - 1) +
                  " copied and waited for, with no barrier since");
    if (S.epoch[w] == S.cur && S.who[w] != g)
      fail(t, "cp.async overwrites " + byte_range(t->block, off, bytes) + " that " + who_(S.who[w]) +
                  " accessed since the last barrier (write-after-read: a barrier is missing between the last reads "
                  "of this buffer and its refill)");
  }
  for (uintptr_t w = off / 4; w < (off + bytes) / 4; ++w) S.inflight[w] = g + 1;
  t->async_open.push_back(AsyncCopy{dst, src, bytes});
}

void Cluster::cp_async_commit(Thread* t) {
  t->async_groups.push_back(std::move(t->async_open));
  t->async_open.clear();
}

// cp.async.wait_group n: the thread's groups but the newest n complete (the copies are performed now).
void Cluster::cp_async_wait(Thread* t, int n) {
  Shadow& S = shadow_[t->block];
  const int32_t g = int32_t(t->block * nthreads_ + t->tid);
  const uintptr_t lo = reinterpret_cast<uintptr_t>(aligned(smem_[t->block]));
  while (int(t->async_groups.size()) > n) {
    for (const AsyncCopy& c : t->async_groups.front()) {
      memcpy(c.dst, c.src, size_t(c.bytes));
      const uintptr_t off = reinterpret_cast<uintptr_t>(c.dst) - lo;
      for (uintptr_t w = off / 4; w < (off + c.bytes) / 4; ++w) {
        S.inflight[w] = 0;
        if (S.landed[w] != g + 1) S.landed_words.push_back(int32_t(w));
        S.landed[w] = g + 1;
      }
    }
    t->async_groups.pop_front();
  }
}

std::string Cluster::mbar_name(const Mbar& m) const {
  std::ostringstream s;
  s << "the mbarrier at shared byte " << m.off << " of block " << (index_ * nblocks_ + m.block) << " (phase "
    << m.phase << " in progress, " << m.pending << " of " << m.count << " arrivals pending)";
  return s.str();
}

// The byte offset of the mbarrier bar in this thread's block's shared memory, or -1 when it is not an 8-byte
// aligned object there.
intptr_t Cluster::mbar_offset(const Thread* t, const void* bar) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(bar), lo = reinterpret_cast<uintptr_t>(aligned(smem_[t->block]));
  if (a < lo || a + 8 > lo + smem_bytes_ || (a - lo) % 8) return -1;
  return intptr_t(a - lo);
}

// A thread acquires what a completed mbarrier phase released (the warp epochs: its vector clock joins them).
void Cluster::vc_acquire(const Thread* t, const std::vector<int32_t>& rel) {
  if (nblocks_ < 2) return;
  int32_t* k = know(t);
  for (int w = 0; w < nwarps_all_; ++w) k[w] = std::max(k[w], rel[size_t(w)]);
}

// The mbarrier at bar's offset in block `rank` (bar: in this thread's shared memory, as mapa takes it).
int Cluster::mbar_find(const Thread* t, const void* bar, int rank, const char* what) {
  if (rank < 0 || rank >= nblocks_)
    fail(t, std::string(what) + " an mbarrier of cluster rank " + std::to_string(rank) + " outside [0, " +
                std::to_string(nblocks_) + ")");
  const intptr_t at = mbar_offset(t, bar);
  if (at < 0)
    fail(t, std::string(what) + " an mbarrier that is not an 8-byte aligned object in this block's shared memory");
  const uintptr_t off = uintptr_t(at);
  const auto it = mbar_at_.find({rank, off});
  if (it == mbar_at_.end()) {
    std::ostringstream m;
    m << what << " the mbarrier at shared byte " << off << " of block rank " << rank
      << ", which is not initialised (mbar_init)";
    fail(t, m.str());
  }
  const Mbar& m = mbars_[size_t(it->second)];
  if (int32_t(t->block * nthreads_ + t->tid) != m.init_thread && t->waits < m.init_need)
    fail(t, std::string(what) + " " + mbar_name(m) +
                " with no cluster barrier completed since its init (fence.mbarrier_init + a cluster barrier make "
                "the init visible to the cluster)");
  return it->second;
}

void Cluster::mbar_init(Thread* t, uint64_t* bar, int count) {
  const intptr_t at = mbar_offset(t, bar);
  if (at < 0) fail(t, "mbar_init: the mbarrier must be an 8-byte aligned object in this block's shared memory");
  const uintptr_t off = uintptr_t(at);
  if (count < 1 || count >= (1 << 20))
    fail(t, "mbar_init: the arrival count must be in [1, 2^20 - 1], got " + std::to_string(count));
  if (mbar_at_.count({t->block, off}))
    fail(t, "mbar_init: " + mbar_name(mbars_[size_t(mbar_at_[{t->block, off}])]) + " is initialised already");
  Mbar m;
  m.block = t->block;
  m.off = off;
  m.count = m.pending = count;
  m.init_thread = int32_t(t->block * nthreads_ + t->tid);
  m.init_need = t->arrives + 1;
  m.acc.assign(size_t(nwarps_all_), 0);
  m.rel[0].assign(size_t(nwarps_all_), 0);
  m.rel[1].assign(size_t(nwarps_all_), 0);
  mbar_at_[{t->block, off}] = int(mbars_.size());
  mbars_.push_back(std::move(m));
  shadow_[t->block].mbar_word[off / 4] = shadow_[t->block].mbar_word[off / 4 + 1] = 1;
}

// One arrival (release): what this thread's warp did before its epoch, and what this thread acquired.
void Cluster::mbar_arrive(Thread* t, uint64_t* bar, int rank) {
  const int i = mbar_find(t, bar, rank, "arrive on");
  Mbar& m = mbars_[size_t(i)];
  if (rank != t->block && done_[size_t(rank)] == nthreads_)
    fail(t, "arrive on " + mbar_name(m) + ", whose block's threads have all exited");
  if (nblocks_ > 1) {
    const int32_t* k = know(t);
    for (int w = 0; w < nwarps_all_; ++w) m.acc[size_t(w)] = std::max(m.acc[size_t(w)], k[w]);
    const size_t own = size_t(t->block * (nthreads_ / 32) + t->warp);
    m.acc[own] = std::max(m.acc[own], wep_[own]);
  }
  if (--m.pending == 0) {  // the last arrival completes the phase
    m.rel[m.phase & 1] = m.acc;
    std::fill(m.acc.begin(), m.acc.end(), 0);
    ++m.phase;
    m.pending = m.count;
    ++stats_.mbarrier_phases;
  }
  // no yield (as cluster_arrive)
}

void Cluster::mbar_wait(Thread* t, uint64_t* bar, int parity) {
  if (parity != 0 && parity != 1) fail(t, "mbar_wait_parity: the parity must be 0 or 1, got " + std::to_string(parity));
  const int i = mbar_find(t, bar, t->block, "wait on");
  const Mbar& m = mbars_[size_t(i)];
  if ((m.phase & 1) != parity) {  // the phase of this parity before the current one completed: no wait
    vc_acquire(t, m.rel[parity]);
    return;
  }
  t->state = Thread::AT_MBAR;
  t->mbar = i;
  t->mbar_parity = parity;
  yield(t);  // released (and its clock joined with the phase's) by release_barriers
}

void* Cluster::resolve(const Thread* t, void* p, int rank) {
  if (rank < 0 || rank >= nblocks_)
    fail(t, "map_rank: cluster rank " + std::to_string(rank) + " outside [0, " + std::to_string(nblocks_) + ")");
  char* own = aligned(smem_[t->block]);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), lo = reinterpret_cast<uintptr_t>(own);
  if (a < lo || a > lo + smem_bytes_) fail(t, "map_rank: the pointer is not in this block's shared memory");
  return aligned(smem_[rank]) + (a - lo);
}

void Cluster::record(Thread* t, const void* p, int bytes, uintptr_t site) {
  if (!banks_) return;
  const int occ = t->site_count[site]++;
  Access& a = accesses_[size_t(t->block) * (nthreads_ / 32) + t->warp][{site, occ}];
  a.bytes = bytes;
  a.mask |= 1u << t->lane;
  // bank of the byte address inside whichever block's buffer holds it
  uintptr_t off = reinterpret_cast<uintptr_t>(p);
  for (int b = 0; b < nblocks_; ++b) {
    const uintptr_t lo = reinterpret_cast<uintptr_t>(aligned(smem_[b]));
    if (off >= lo && off < lo + smem_bytes_) {
      off -= lo;
      break;
    }
  }
  a.addr[t->lane] = off;
}

// Replays the warp's access instructions of the epoch that just ended against 32 banks of 4 bytes.
void Cluster::bank_epoch(int b, int w) {
  auto& acc = accesses_[size_t(b) * (nthreads_ / 32) + w];
  for (auto& kv : acc) {
    const Access& a = kv.second;
    const int per_phase = std::max(1, 128 / a.bytes);
    int64_t wf = 0, ideal = 0;
    for (int l0 = 0; l0 < 32; l0 += per_phase) {
      std::set<uintptr_t> words[32];
      bool active = false;
      for (int l = l0; l < l0 + per_phase && l < 32; ++l) {
        if (!(a.mask >> l & 1u)) continue;
        active = true;
        for (int q = 0; q < (a.bytes + 3) / 4; ++q) {
          const uintptr_t word = a.addr[l] / 4 + q;
          words[word % 32].insert(word);
        }
      }
      if (!active) continue;
      size_t m = 1;
      for (auto& s : words) m = std::max(m, s.size());
      wf += int64_t(m);
      ideal += 1;
    }
    ++stats_.smem_instructions;
    stats_.wavefronts += wf;
    stats_.ideal_wavefronts += ideal;
    stats_.conflicted += wf > ideal;
  }
  acc.clear();
  for (int l = 0; l < 32; ++l) threads_[size_t(b) * nthreads_ + w * 32 + l].site_count.clear();
}

}  // namespace emu
}  // namespace hebm
