// The CPU emulation of the SIMT primitive layer (csrc/core/simt.h): every thread of a thread-block cluster runs as a
// fiber (its own stack) on one OS thread, and the scheduler switches lanes only where the CUDA programming guide
// puts a collective:
//   - a warp shuffle (full mask, width 32) or __syncwarp completes when all 32 lanes of the warp reached the SAME
//     collective (the k-th of each lane); each lane deposits its value, then reads its source lane's. Lanes at
//     different collectives, or exited lanes, are reported as warp divergence (undefined behaviour on the GPU).
//   - mma_bf16_16816 / mma_tf32_1688 (mma.sync) are warp collectives too: each lane deposits its A, B, C registers,
//     and once all 32 lanes are there each lane computes its own D elements from the warp's deposits (the PTX ISA's
//     fragment layouts, csrc/core/simt.h): the fp32 sum, in k order, of C and the exact products of the operands
//     (a bf16 x bf16 or tf32 x tf32 product is exact in fp32; the hardware's internal order is unspecified, so
//     the tests compare with tolerances). tf32 registers are read as the mma reads them: their top 19 bits.
//   - sync() (bar.sync 0) completes when every thread of the block arrived; named_sync(id, n) when n threads
//     arrived at barrier id; cluster_sync() when every thread of every block of the cluster arrived. A barrier that
//     can never complete (a thread exited, or waits elsewhere) is reported as a deadlock.
//   - split cluster barrier (barrier.cluster.arrive / barrier.cluster.wait): cluster_sync() is arrive + wait. A
//     phase completes when every thread of the cluster arrived; wait returns once the thread's phase completed.
//     Between its arrive and its wait a thread runs on WITHOUT yielding, and the scheduler runs the blocks (and
//     the warps of a block) in reverse order on every other phase: a read there of data another thread writes
//     before its own arrive (only guaranteed after the wait) sees, in one order or the other, the stale value, so
//     the tests see it as a wrong result. Arrive twice, wait without arrive, cluster_sync() between arrive and
//     wait, or exiting between them are reported as errors.
//   - mbarriers (mbar_init / mbar_arrive_cluster / mbar_wait_parity): an mbarrier is an object at an 8-byte
//     aligned offset of a block's shared memory (its words may not be read or written as data once initialised),
//     with its arrival count, pending count and completed phases. Init by one thread; any other thread's use must
//     follow a cluster barrier completed after the init (the fence + barrier of the PTX protocol). An arrive (on
//     the mbarrier at the same offset in any block of the cluster, without yielding, like cluster_arrive) counts
//     down; the last arrival completes the phase. A wait returns at once when the phase of that parity before
//     the current one completed, else the fiber waits until it does; a wait that can never complete (an arrive
//     missing) is reported as a deadlock naming the mbarrier (block, byte offset, phase, arrivals pending).
//   - cluster order (nblocks > 1): a thread's access to a shared word that a thread of another block accessed
//     last must be ordered after that access, by a cluster barrier completed since (the access before the
//     accessor's next arrive), or by a chain of mbarrier phases: an arrive releases what the arriving thread's
//     warp did before its last __syncwarp / block barrier / named barrier of the whole warp (warp epochs: the
//     thread's own accesses since are not released, so a warp's lane arrives for the warp after __syncwarp), and
//     what the thread acquired itself; a wait acquires what the phase's arrivals released; block and named
//     barriers and __syncwarp join what their threads acquired (vector clocks over the cluster's warps). An
//     access ordered by neither is reported. A block's shared memory may not be accessed (or arrived on) by a
//     peer after every thread of the block exited.
//   - shared memory: each block owns a buffer; sh()/ld4()/st4() check that the address lies in the block's (or, via
//     map_rank, a cluster peer's) buffer and is aligned; in bank mode every warp access instruction (matched by
//     call site and per-lane occurrence between two collectives) is replayed against 32 banks of 4 bytes:
//     wavefronts = sum over 128-byte phases of the largest number of distinct words one bank serves.
//   - cp.async (cp_async16 / cp_async_elem, commit, wait<N>): a copy is queued in the issuing thread's open group;
//     commit closes the group; wait<N> performs the copies of the thread's oldest groups until at most N remain
//     (the hardware's cp.async.wait_group N), so the data is in shared memory only from the issuing thread's wait.
//     Checked (errors naming the bytes and the threads): any access to a word with a copy in flight (read before
//     the wait); another thread's access to a word that landed at a wait with no block (or cluster) barrier since
//     (the barrier between the wait and other warps' reads is missing); a copy into a word that another thread
//     accessed since the last barrier (write-after-read: the refill of a buffer still being read); two copies in
//     flight into one word; bounds and alignment (16 bytes, or the element size) like ld4/st4. Accesses are
//     ordered by block and cluster barriers only (a kernel that orders cp.async buffers by named barriers alone
//     would be reported).
// Between two collectives a lane runs alone, so a missing barrier lets a lane read what its block has not written
// yet, exactly the bug the barrier prevents on the GPU: the tests see it as a wrong result.
#pragma once

#include <stdint.h>
#include <string.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/simt.h"

namespace hebm {
namespace emu {

struct Stats {
  int64_t block_barriers = 0;    // sync() completions, summed over blocks
  int64_t cluster_barriers = 0;  // cluster barrier phases completed (cluster_sync or arrive/wait), over clusters
  int64_t named_barriers = 0;
  int64_t mbarrier_phases = 0;   // mbarrier phases completed, summed over the blocks' mbarriers
  int64_t warp_collectives = 0;  // shuffles and syncwarps, per warp
  int64_t smem_instructions = 0; // warp-wide shared-memory access instructions (bank mode)
  int64_t wavefronts = 0;        // their wavefronts
  int64_t ideal_wavefronts = 0;  // their wavefronts without bank conflicts
  int64_t conflicted = 0;        // instructions with at least one conflict
  void add(const Stats& o) {
    block_barriers += o.block_barriers;
    cluster_barriers += o.cluster_barriers;
    named_barriers += o.named_barriers;
    mbarrier_phases += o.mbarrier_phases;
    warp_collectives += o.warp_collectives;
    smem_instructions += o.smem_instructions;
    wavefronts += o.wavefronts;
    ideal_wavefronts += o.ideal_wavefronts;
    conflicted += o.conflicted;
  }
};

class Cluster;

// One queued cp.async copy.
struct AsyncCopy {
  void* dst;
  const void* src;
  int bytes;
};

// One emulated thread.
struct Thread {
  enum State { READY, AT_WARP, AT_BAR, AT_NAMED, AT_CLUSTER, AT_MBAR, DONE };
  Cluster* cl = nullptr;
  int block = 0, tid = 0, lane = 0, warp = 0;
  State state = READY;
  int coll_kind = 0, coll_arg = 0;  // the warp collective waited at
  int64_t coll_count = 0;           // warp collectives executed
  int named_id = 0, named_n = 0;
  bool arrived = false;             // between cluster_arrive and cluster_wait
  int64_t arrive_phase = 0;         // the cluster barrier phase it arrived at
  int64_t arrives = 0, waits = 0;   // cluster barriers arrived at / waited for (completed) so far
  int mbar = -1, mbar_parity = 0;   // the mbarrier (Cluster::mbars_ index) and phase parity waited for
  uint64_t value = 0;               // shuffle operand
  void* fiber = nullptr;            // saved context
  std::unordered_map<uintptr_t, int> site_count;  // bank mode: occurrences of each access site in this epoch
  std::vector<AsyncCopy> async_open;               // cp.async copies not committed yet
  std::deque<std::vector<AsyncCopy>> async_groups; // committed groups, oldest first
};

class Cluster {
 public:
  // `body(ctx)` is the kernel, run by every thread of `nblocks` blocks of `nthreads` threads, each block with
  // `smem_bytes` of shared memory (zero-filled).
  Cluster(int nblocks, int nthreads, size_t smem_bytes, bool banks);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // Runs the kernel once for cluster index `index` (blocks index*nblocks ... ); throws std::runtime_error with the
  // emulation's diagnosis (divergence, deadlock, out-of-bounds shared memory) or the kernel's own exception.
  void run(const std::function<void(class EmuCtx&)>& body, int64_t index);

  const Stats& stats() const { return stats_; }
  int nblocks() const { return nblocks_; }
  int nthreads() const { return nthreads_; }
  int64_t index() const { return index_; }
  char* smem(int b);  // block b's shared memory (64-byte aligned)

  // Called by EmuCtx (on the calling fiber).
  uint64_t warp_collective(Thread* t, int kind, int arg, uint64_t value);
  void warp_mma(Thread* t, int kind, float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);
  void block_barrier(Thread* t);
  void named_barrier(Thread* t, int id, int n);
  void cluster_barrier(Thread* t);
  void cluster_arrive(Thread* t);
  void cluster_wait(Thread* t);
  void mbar_init(Thread* t, uint64_t* bar, int count);
  void mbar_arrive(Thread* t, uint64_t* bar, int rank);
  void mbar_wait(Thread* t, uint64_t* bar, int parity);
  void check(const Thread* t, const void* p, size_t bytes, size_t align, const char* what);
  void record(Thread* t, const void* p, int bytes, uintptr_t site);
  [[noreturn]] void fail(const Thread* t, const std::string& msg);
  void* resolve(const Thread* t, void* p, int rank);
  void cp_async(Thread* t, void* dst, const void* src, int bytes);
  void cp_async_commit(Thread* t);
  void cp_async_wait(Thread* t, int n);

 private:
  struct Access {
    int bytes = 0;
    uint32_t mask = 0;
    uintptr_t addr[32];
  };
  // An mbarrier (shared memory of block `block`, byte `off`).
  struct Mbar {
    int block = 0;
    uintptr_t off = 0;
    int count = 0, pending = 0;
    int64_t phase = 0;               // phases completed
    int32_t init_thread = 0;         // block * nthreads + tid of the initialising thread
    int64_t init_need = 0;           // cluster waits another thread needs before using it (init's arrives + 1)
    std::vector<int32_t> acc;        // what the current phase's arrivals released (warp epochs, per cluster warp)
    std::vector<int32_t> rel[2];     // what the last completed phase of each parity released
  };
  void yield(Thread* t);
  int mbar_find(const Thread* t, const void* bar, int rank, const char* what);
  std::string mbar_name(const Mbar& m) const;
  int32_t* know(const Thread* t) { return &know_[size_t(t->block * nthreads_ + t->tid) * nwarps_all_]; }
  void vc_join(Thread* const* ts, int n);
  void vc_acquire(const Thread* t, const std::vector<int32_t>& rel);
  intptr_t mbar_offset(const Thread* t, const void* bar);
  bool vc_covers(const Thread* t, int b, size_t w);
  void settle_warp(int block, int warp);
  void bank_epoch(int block, int warp);
  bool release_barriers();
  std::string describe() const;

  int nblocks_, nthreads_;
  size_t smem_bytes_;
  bool banks_;
  int64_t index_ = 0;
  int64_t phase_ = 0;     // cluster barrier phases completed in this run
  int64_t arrivals_ = 0;  // arrivals at the current phase
  std::vector<std::vector<char>> smem_;
  std::vector<Thread> threads_;
  std::vector<uint64_t> values_;  // shuffle operands, two slots (by collective parity) per thread
  std::vector<uint32_t> mma_;     // mma operands (a0-a3, b0-b1, c0-c3 bits), two slots of kMmaRegs per thread
  std::vector<std::unique_ptr<char[]>> stacks_;
  void* sched_ = nullptr;  // the scheduler's saved context
  Thread* current_ = nullptr;
  const std::function<void(EmuCtx&)>* body_ = nullptr;
  std::string error_;
  Stats stats_;
  std::vector<std::map<std::pair<uintptr_t, int>, Access>> accesses_;  // per warp (bank mode)
  // The cp.async checks, per block and 4-byte word of its shared memory; threads as block * nthreads + tid.
  struct Shadow {
    std::vector<int32_t> inflight;  // 1 + the thread whose copy into the word is issued, not yet waited for; 0 none
    std::vector<int32_t> landed;    // 1 + the thread whose copy landed at its wait, no barrier since; 0 none
    std::vector<int32_t> epoch;     // the barrier epoch of the word's last access (0: none)
    std::vector<int32_t> who;       // the thread of the accesses in that epoch, -1: several threads
    std::vector<int32_t> landed_words;  // the words with landed != 0
    // Cluster order (nblocks > 1): 1 + the block rank whose threads accessed the word last (0: none), and the
    // cluster waits a thread of another block must have completed before it may access the word (the latest
    // such access's cluster arrives + 1: that access is ordered before the completion of the barrier it arrives
    // at next). sh() returns a reference, so loads count as accesses too (the kernels do no remote loads).
    std::vector<int32_t> xblk;
    std::vector<int64_t> xneed;
    // ... and 1 + the warp epoch of each warp of that block's latest access in its run of accesses (words x warps):
    // the mbarrier route of the order check; 1 on the words of an initialised mbarrier (no data access)
    std::vector<int32_t> xrec;
    std::vector<uint8_t> mbar_word;
    int32_t cur = 1;                // barrier epoch: block and cluster barriers completed + 1
  };
  std::vector<Shadow> shadow_;
  // Cluster order by mbarriers (nblocks > 1): warp epochs (per cluster warp b * warps + w: __syncwarps and whole-warp
  // block / named barriers completed), each thread's vector clock over the cluster's warps (know: the warp epochs
  // below which that warp's accesses are ordered before the thread's present), the mbarriers, the exited blocks.
  int nwarps_all_ = 0;
  std::vector<int32_t> wep_;
  std::vector<int32_t> know_;
  std::vector<int32_t> join_;  // scratch
  std::vector<Mbar> mbars_;
  std::map<std::pair<int, uintptr_t>, int> mbar_at_;
  std::vector<int> done_;      // exited threads per block
  void track(const Thread* t, int b, uintptr_t off, size_t bytes);
  void barrier_epoch(int b);
  std::string who_(int32_t g) const;
  friend void fiber_main(Cluster* c, Thread* t);
};

void fiber_main(Cluster* c, Thread* t);

// The emulated execution context: the primitive layer's interface (csrc/core/simt.h) over Cluster.
class EmuCtx {
 public:
  EmuCtx(Cluster* c, Thread* t) : c_(c), t_(t) {}
  int tid() const { return t_->tid; }
  int nthreads() const { return c_->nthreads(); }
  int lane() const { return t_->lane; }
  int warp() const { return t_->warp; }
  int nwarps() const { return c_->nthreads() / 32; }
  void sync() const { c_->block_barrier(t_); }
  void named_sync(int id, int n) const { c_->named_barrier(t_, id, n); }
  void syncwarp() const { c_->warp_collective(t_, kSyncWarp, 0, 0); }
  template <typename T>
  T shfl_xor(T v, int m) const { return shfl(v, kXor, m); }
  template <typename T>
  T shfl_down(T v, int d) const { return shfl(v, kDown, d); }
  template <typename T>
  T shfl_up(T v, int d) const { return shfl(v, kUp, d); }
  template <typename T>
  T shfl_idx(T v, int src) const { return shfl(v, kIdx, src); }
  int cluster_rank() const { return t_->block; }
  int cluster_size() const { return c_->nblocks(); }
  void cluster_sync() const { c_->cluster_barrier(t_); }
  void cluster_arrive() const { c_->cluster_arrive(t_); }
  void cluster_wait() const { c_->cluster_wait(t_); }
  void mbar_init(uint64_t* bar, int count) const { c_->mbar_init(t_, bar, count); }
  void mbar_arrive_cluster(uint64_t* bar, int rank) const { c_->mbar_arrive(t_, bar, rank); }
  void mbar_wait_parity(uint64_t* bar, int parity) const { c_->mbar_wait(t_, bar, parity); }
  template <typename T>
  T* map_rank(T* p, int r) const {
    return static_cast<T*>(c_->resolve(t_, const_cast<void*>(static_cast<const void*>(p)), r));
  }
  // The cluster's index in the grid (the emulation's blockIdx.x / cluster size).
  int64_t cluster_index() const { return c_->index(); }

  template <typename T>
  __attribute__((noinline)) T& sh(T* p) const {
    c_->check(t_, p, sizeof(T), alignof(T), "access");
    c_->record(t_, p, int(sizeof(T)), reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
    return *p;
  }
  template <typename T>
  __attribute__((noinline)) const T& sh(const T* p) const {
    c_->check(t_, p, sizeof(T), alignof(T), "access");
    c_->record(t_, p, int(sizeof(T)), reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
    return *p;
  }
  template <typename T>
  __attribute__((noinline)) core::Vec4<T> ld4(const T* p) const {
    c_->check(t_, p, 4 * sizeof(T), 4 * sizeof(T), "vector load");
    c_->record(t_, p, int(4 * sizeof(T)), reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
    core::Vec4<T> v;
    memcpy(&v, p, sizeof(v));
    return v;
  }
  template <typename T>
  __attribute__((noinline)) void st4(T* p, const core::Vec4<T>& v) const {
    c_->check(t_, p, 4 * sizeof(T), 4 * sizeof(T), "vector store");
    c_->record(t_, p, int(4 * sizeof(T)), reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
    memcpy(p, &v, sizeof(v));
  }

  // mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 / m16n8k8 ... tf32: see simt.h for the lane layouts.
  void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) const {
    c_->warp_mma(t_, kMmaBf16, d, a, b, c);
  }
  void mma_tf32_1688(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) const {
    c_->warp_mma(t_, kMmaTf32, d, a, b, c);
  }

  enum { kSyncWarp = 1, kXor = 2, kDown = 3, kUp = 4, kIdx = 5, kMmaBf16 = 6, kMmaTf32 = 7 };
  static constexpr int kMmaRegs = 10;
  template <typename T>
  void cp_async16(T* dst, const T* src) const {
    c_->cp_async(t_, static_cast<void*>(dst), static_cast<const void*>(src), 16);
  }
  template <typename T>
  void cp_async_elem(T* dst, const T* src) const {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "cp.async copies 4- or 8-byte elements");
    c_->cp_async(t_, static_cast<void*>(dst), static_cast<const void*>(src), int(sizeof(T)));
  }
  void cp_async_commit() const { c_->cp_async_commit(t_); }
  template <int N>
  void cp_async_wait() const {
    static_assert(N >= 0, "cp.async.wait_group takes a non-negative count");
    c_->cp_async_wait(t_, N);
  }


 private:
  template <typename T>
  T shfl(T v, int kind, int arg) const {
    static_assert(sizeof(T) <= 8, "shuffles move 4- or 8-byte values");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    bits = c_->warp_collective(t_, kind, arg, bits);
    T r;
    memcpy(&r, &bits, sizeof(T));
    return r;
  }
  Cluster* c_;
  Thread* t_;
};

}  // namespace emu
}  // namespace hebm
