// CPU emulation of the CUDA features used by csrc/*.cu, for tests on machines without a GPU.
//
// Every CUDA thread of a block is a fiber on one OS thread; blocks run one after another.
// __syncthreads is a block barrier, warp shuffles and mma.sync exchange values through a per-warp
// buffer between two warp barriers, so that lanes of different warps may be at different points of
// their code, as on a GPU. Shared memory is declared through common.cuh's macros: the dynamic buffer
// and every static DG_SHARED variable live in two emulator-owned buffers, so that both can be
// poisoned (a raw __shared__ declaration does not compile here).
// This checks the logic of the kernels (indexing, barriers, fragment layouts, algorithms), not their
// speed or the GPU memory model.
//
// Options (emu_set_options; all off by default), for the blind spots of a fixed schedule:
//   EMU_SHUFFLE  runnable fibers resume in a fresh random order every scheduling round;
//   EMU_PREEMPT  every read of threadIdx or blockDim (the bounds and strides of block-strided loops)
//                may yield to another fiber (probability yield_per_1024 / 1024): independent thread
//                scheduling, so a missing barrier between one thread's write and another's read shows;
//   EMU_NAN      shared memory (dynamic and static) is filled with 0xff bytes (NaN as float and
//                double, -1 as int) instead of 0x7f bytes (a huge finite float);
//   EMU_FRESH    shared memory is refilled before every block, not once per launch, so that a block
//                cannot read what the previous block left there (it never could on a GPU).
// The block size is the caller's (tests/kernels/emu/harness.py caps it at 64 threads unless asked
// for real sizes).
#pragma once

#include <ffi.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#define DG_EMULATION 1
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct uint4 {
    unsigned x, y, z, w;
};
struct int4 {
    int x, y, z, w;
};
struct float4 {
    float x, y, z, w;
};

#define EMU_SHUFFLE 1u
#define EMU_PREEMPT 2u
#define EMU_NAN 4u
#define EMU_FRESH 8u

namespace emu {

#if defined(__x86_64__)
// Fiber switch: save the callee-saved registers on the current stack, store its pointer in *save,
// load `load` and restore the registers saved there. No signal-mask system call (swapcontext makes
// two per switch, which dominated the run time).
extern "C" void dg_emu_switch(void** save, void* load);
asm(R"(
    .text
    .p2align 4
    .type dg_emu_switch,@function
dg_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size dg_emu_switch, .-dg_emu_switch
)");
#endif

constexpr size_t STACK_BYTES = 64 * 1024;
constexpr size_t STATIC_SMEM_BYTES = 48 * 1024;  // the CUDA limit of static shared memory per block

struct Fiber {
#if defined(__x86_64__)
    void* sp = nullptr;
#else
    ucontext_t ctx;
#endif
    char* stack = nullptr;
    dim3 tid;
    int wait = 0;  // 0 runnable, 1 block barrier, 2 warp barrier
    bool done = false;
};

struct State {
    dim3 grid, block, bid;
    std::vector<Fiber> fibers;
    std::vector<char> stacks;
    std::vector<int> order;
#if defined(__x86_64__)
    void* sched_sp = nullptr;
#else
    ucontext_t sched;
#endif
    int cur = 0;
    bool in_fiber = false;
    std::vector<char> smem;
    std::vector<char> static_smem = std::vector<char>(STATIC_SMEM_BYTES);  // never reallocated
    size_t static_used = 0;
    std::vector<unsigned long long> xchg;  // warp exchange buffer, 8 slots per lane
    std::function<void()> body;
    unsigned flags = 0;
    unsigned yield_per_1024 = 0;
    unsigned long long rng = 0x9E3779B97F4A7C15ull;
    unsigned long long switches = 0;
};

inline State& st() {
    static State s;
    return s;
}

inline unsigned long long next_random() {  // xorshift64*
    State& s = st();
    s.rng ^= s.rng >> 12;
    s.rng ^= s.rng << 25;
    s.rng ^= s.rng >> 27;
    return s.rng * 0x2545F4914F6CDD1Dull;
}

inline void to_scheduler() {
    State& s = st();
    ++s.switches;
#if defined(__x86_64__)
    dg_emu_switch(&s.fibers[s.cur].sp, s.sched_sp);
#else
    swapcontext(&s.fibers[s.cur].ctx, &s.sched);
#endif
}

inline void to_fiber(int t) {
    State& s = st();
    s.cur = t;
    s.in_fiber = true;
#if defined(__x86_64__)
    dg_emu_switch(&s.sched_sp, s.fibers[t].sp);
#else
    swapcontext(&s.sched, &s.fibers[t].ctx);
#endif
    s.in_fiber = false;
}

inline void fiber_entry() {
    State& s = st();
    s.body();
    s.fibers[s.cur].done = true;
    to_scheduler();
    std::abort();  // a finished fiber is never resumed
}

inline void yield_wait(int kind) {
    State& s = st();
    s.fibers[s.cur].wait = kind;
    to_scheduler();
}

// EMU_PREEMPT: a possible switch to another fiber (any point is legal under independent scheduling).
inline void preempt_point() {
    State& s = st();
    if ((s.flags & EMU_PREEMPT) && s.in_fiber && (next_random() & 1023u) < s.yield_per_1024) yield_wait(0);
}

inline void start_fiber(int t) {
    State& s = st();
    Fiber& f = s.fibers[t];
    f.stack = s.stacks.data() + (size_t)t * STACK_BYTES;
#if defined(__x86_64__)
    // Initial frame for dg_emu_switch: six zero registers, then fiber_entry as the return address,
    // placed so that fiber_entry starts with the stack alignment of a normal call (rsp + 8 = 0 mod 16).
    uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + STACK_BYTES) & ~uintptr_t(15);
    void** frame = reinterpret_cast<void**>(top - 16);
    frame[0] = reinterpret_cast<void*>(&fiber_entry);
    frame -= 6;
    for (int r = 0; r < 6; ++r) frame[r] = nullptr;
    f.sp = frame;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = STACK_BYTES;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
#endif
}

// Release waiters whose barrier is complete; returns false on deadlock.
inline bool release() {
    State& s = st();
    const int n = (int)s.fibers.size();
    bool all_block = true, any_block = false;
    for (auto& f : s.fibers) {
        if (f.done) continue;
        if (f.wait != 1) all_block = false;
        else any_block = true;
    }
    if (any_block && all_block) {
        for (auto& f : s.fibers) f.wait = 0;
        return true;
    }
    bool progressed = false;
    for (int w0 = 0; w0 < n; w0 += 32) {
        bool all_warp = true, any_warp = false;
        for (int l = w0; l < w0 + 32 && l < n; ++l) {
            if (s.fibers[l].done) continue;
            if (s.fibers[l].wait != 2) all_warp = false;
            else any_warp = true;
        }
        if (any_warp && all_warp) {
            for (int l = w0; l < w0 + 32 && l < n; ++l) s.fibers[l].wait = 0;
            progressed = true;
        }
    }
    return progressed;
}

inline void poison_shared() {
    State& s = st();
    const char byte = (s.flags & EMU_NAN) ? (char)0xff : (char)0x7f;
    std::memset(s.smem.data(), byte, s.smem.size());
    std::memset(s.static_smem.data(), byte, s.static_smem.size());
}

// Offset of a new static shared variable in the arena (once per declaration, at its first use).
inline size_t static_alloc(size_t bytes, size_t align) {
    State& s = st();
    const size_t offset = (s.static_used + align - 1) / align * align;
    if (offset + bytes > STATIC_SMEM_BYTES) {
        std::fprintf(stderr, "emu: static shared memory over %zu bytes\n", STATIC_SMEM_BYTES);
        std::abort();
    }
    s.static_used = offset + bytes;
    return offset;
}

inline void shuffle_order(std::vector<int>& order) {
    for (int i = (int)order.size() - 1; i > 0; --i) {
        const int j = (int)(next_random() % (unsigned long long)(i + 1));
        const int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

inline void launch(dim3 grid, dim3 block, size_t smem_bytes, std::function<void()> body) {
    State& s = st();
    s.grid = grid;
    s.block = block;
    s.body = std::move(body);
    const int nthreads = (int)(block.x * block.y * block.z);
    s.smem.resize(smem_bytes + 16);
    s.xchg.assign((size_t)((nthreads + 31) / 32) * 32 * 8, 0ull);
    if (s.stacks.size() < (size_t)nthreads * STACK_BYTES) s.stacks.resize((size_t)nthreads * STACK_BYTES);
    s.order.resize(nthreads);
    poison_shared();  // reading unwritten shared memory shows up
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                s.bid.x = bx;
                s.bid.y = by;
                s.bid.z = bz;
                if ((s.flags & EMU_FRESH) && (bx | by | bz)) poison_shared();
                s.fibers.assign(nthreads, Fiber());
                for (int t = 0; t < nthreads; ++t) {
                    Fiber& f = s.fibers[t];
                    f.tid.x = t % block.x;
                    f.tid.y = (t / block.x) % block.y;
                    f.tid.z = t / (block.x * block.y);
                    start_fiber(t);
                    s.order[t] = t;
                }
                while (true) {
                    bool ran = false, pending = false;
                    if (s.flags & EMU_SHUFFLE) shuffle_order(s.order);
                    for (int k = 0; k < nthreads; ++k) {
                        const int t = s.order[k];
                        Fiber& f = s.fibers[t];
                        if (f.done) continue;
                        pending = true;
                        if (f.wait) continue;
                        to_fiber(t);
                        ran = true;
                    }
                    if (!pending) break;
                    if (!ran && !release()) {
                        std::fprintf(stderr, "emu: deadlock in block (%u, %u, %u)\n", bx, by, bz);
                        std::abort();
                    }
                }
            }
}

inline void syncthreads() { yield_wait(1); }
inline void syncwarp() { yield_wait(2); }
inline int lane_id() { return st().cur % 32; }
inline unsigned long long* warp_slots() { return &st().xchg[(size_t)(st().cur / 32) * 32 * 8]; }

template <typename T>
inline T exchange(T v, int src_lane) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    unsigned long long* slots = warp_slots();
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    slots[lane_id() * 8] = bits;
    syncwarp();
    T out;
    std::memcpy(&out, &slots[src_lane * 8], sizeof(T));
    syncwarp();
    return out;
}

inline const dim3& thread_index() {
    preempt_point();
    State& s = st();
    return s.fibers[s.cur].tid;
}

inline const dim3& block_dim() {
    preempt_point();
    return st().block;
}

}  // namespace emu

#define threadIdx (emu::thread_index())
#define blockIdx (emu::st().bid)
#define blockDim (emu::block_dim())
#define gridDim (emu::st().grid)

inline void __syncthreads() { emu::syncthreads(); }
// DG_SHARED(T, name) in emulation: one arena slot per declaration (Key: the closure type of a lambda
// written at the declaration, unique per template instantiation too), the same for every thread.
template <typename T, typename Key>
inline T* dg_emu_static_smem(Key) {
    static const size_t offset = emu::static_alloc(sizeof(T), alignof(T));
    return reinterpret_cast<T*>(emu::st().static_smem.data() + offset);
}

inline void* dg_emu_dynamic_smem() {
    return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(emu::st().smem.data()) + 15) & ~uintptr_t(15));
}

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int o) { return emu::exchange(v, emu::lane_id() ^ o); }
template <typename T>
inline T __shfl_up_sync(unsigned, T v, int o) {
    const int src = emu::lane_id() - o;
    return emu::exchange(v, src >= 0 ? src : emu::lane_id());
}

template <typename T>
inline T __ldg(const T* p) { return *p; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
using std::max;
using std::min;
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

inline float dg_half_to_float(unsigned short h) { _Float16 v; std::memcpy(&v, &h, 2); return (float)v; }

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: the fragment layouts of the PTX ISA, decoded
// independently of the kernel's loading code.
inline float emu_unpack16(unsigned word, int high, bool bf16) {
    const unsigned short h = (unsigned short)(high ? word >> 16 : word & 0xffffu);
    return bf16 ? __uint_as_float(((unsigned)h) << 16) : dg_half_to_float(h);
}

inline void dg_emu_mma_m16n8k16(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                unsigned b1, bool bf16) {
    unsigned long long* slots = emu::warp_slots();
    const int lane = emu::lane_id();
    const unsigned regs[6] = {a0, a1, a2, a3, b0, b1};
    for (int r = 0; r < 6; ++r) slots[lane * 8 + r] = regs[r];
    emu::syncwarp();
    auto A = [&](int row, int k) {  // a0: (g, 2t..2t+1), a1: (g+8, ..), a2: (g, 2t+8..), a3: (g+8, 2t+8..)
        const int src = (row % 8) * 4 + (k % 8) / 2;
        const int reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
        return emu_unpack16((unsigned)slots[src * 8 + reg], k % 2, bf16);
    };
    auto B = [&](int k, int col) {  // b0: (k = 2t..2t+1, n = g), b1: (k = 2t+8.., n = g)
        const int src = col * 4 + (k % 8) / 2;
        return emu_unpack16((unsigned)slots[src * 8 + 4 + (k >= 8 ? 1 : 0)], k % 2, bf16);
    };
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {  // c0, c1: (g, 2t + {0,1}); c2, c3: (g + 8, 2t + {0,1})
        const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        float acc = c[i];
        for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
        c[i] = acc;
    }
    emu::syncwarp();
}

// Options of the following launches (see the top of this file); `seed` seeds the random order.
extern "C" void emu_set_options(unsigned flags, unsigned yield_per_1024, unsigned long long seed) {
    emu::State& s = emu::st();
    s.flags = flags;
    s.yield_per_1024 = yield_per_1024;
    s.rng = seed ? seed : 0x9E3779B97F4A7C15ull;
}

// Fiber switches since the library was loaded (a cost measure for the tests' sizes).
extern "C" unsigned long long emu_switches() { return emu::st().switches; }

// Bytes of static shared variables placed so far (all kernels of the library that have run).
extern "C" unsigned long emu_static_shared_bytes() { return (unsigned long)emu::st().static_used; }

// Generic launcher for ctypes: runs kernel `fn` over the grid with `nargs` arguments, kinds[i] =
// 0 pointer, 1 int32, 2 int64, 3 float32, 4 float64, values[i] pointing at each value. Returns 0 on
// success. libffi makes the call inside each fiber, so one entry point serves every kernel signature.
extern "C" int emu_launch(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned long smem,
                          int nargs, const int* kinds, void** values) {
    std::vector<ffi_type*> types(nargs);
    for (int i = 0; i < nargs; ++i) {
        switch (kinds[i]) {
            case 0: types[i] = &ffi_type_pointer; break;
            case 1: types[i] = &ffi_type_sint32; break;
            case 2: types[i] = &ffi_type_sint64; break;
            case 3: types[i] = &ffi_type_float; break;
            case 4: types[i] = &ffi_type_double; break;
            default: return 1;
        }
    }
    ffi_cif cif;
    if (ffi_prep_cif(&cif, FFI_DEFAULT_ABI, nargs, &ffi_type_void, types.data()) != FFI_OK) return 2;
    dim3 grid, block;
    grid.x = gx; grid.y = gy; grid.z = gz; block.x = bx;
    emu::launch(grid, block, smem, [&]() { ffi_call(&cif, FFI_FN(fn), nullptr, values); });
    return 0;
}
