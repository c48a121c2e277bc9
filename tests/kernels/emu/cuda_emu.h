// CPU emulation of the CUDA features used by csrc/*.cu, for tests on machines without a GPU.
//
// Every CUDA thread of a block is a fiber (ucontext) on one OS thread; blocks run one after another.
// __syncthreads is a block barrier, warp shuffles and mma.sync exchange values through a per-warp
// buffer between two warp barriers, so that lanes of different warps may be at different points of
// their code, as on a GPU. Shared memory is a per-launch buffer (static locals for __shared__
// variables, one block at a time). This checks the logic of the kernels (indexing, barriers, fragment
// layouts, algorithms), not their speed or memory-model corner cases.
#pragma once

#include <ffi.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define DG_EMULATION 1
#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
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

namespace emu {

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    dim3 tid;
    int wait = 0;  // 0 runnable, 1 block barrier, 2 warp barrier
    bool done = false;
};

struct State {
    dim3 grid, block, bid;
    std::vector<Fiber> fibers;
    ucontext_t sched;
    int cur = 0;
    std::vector<char> smem;
    std::vector<unsigned long long> xchg;  // warp exchange buffer, 8 slots per lane
    std::function<void()> body;
};

inline State& st() {
    static State s;
    return s;
}

inline void fiber_entry() {
    State& s = st();
    s.body();
    s.fibers[s.cur].done = true;
    swapcontext(&s.fibers[s.cur].ctx, &s.sched);
}

inline void yield_wait(int kind) {
    State& s = st();
    s.fibers[s.cur].wait = kind;
    swapcontext(&s.fibers[s.cur].ctx, &s.sched);
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

inline void launch(dim3 grid, dim3 block, size_t smem_bytes, std::function<void()> body) {
    State& s = st();
    s.grid = grid;
    s.block = block;
    s.body = std::move(body);
    const int nthreads = (int)(block.x * block.y * block.z);
    s.smem.assign(smem_bytes + 16, (char)0x7f);  // poisoned: reading unwritten shared memory shows up
    s.xchg.assign((size_t)((nthreads + 31) / 32) * 32 * 8, 0ull);
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                s.bid.x = bx;
                s.bid.y = by;
                s.bid.z = bz;
                s.fibers.assign(nthreads, Fiber());
                for (int t = 0; t < nthreads; ++t) {
                    Fiber& f = s.fibers[t];
                    f.tid.x = t % block.x;
                    f.tid.y = (t / block.x) % block.y;
                    f.tid.z = t / (block.x * block.y);
                    f.stack.resize(64 * 1024);
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.data();
                    f.ctx.uc_stack.ss_size = f.stack.size();
                    f.ctx.uc_link = nullptr;
                    makecontext(&f.ctx, fiber_entry, 0);
                }
                while (true) {
                    bool ran = false, pending = false;
                    for (int t = 0; t < nthreads; ++t) {
                        Fiber& f = s.fibers[t];
                        if (f.done) continue;
                        pending = true;
                        if (f.wait) continue;
                        s.cur = t;
                        swapcontext(&s.sched, &f.ctx);
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

}  // namespace emu

#define threadIdx (emu::st().fibers[emu::st().cur].tid)
#define blockIdx (emu::st().bid)
#define blockDim (emu::st().block)
#define gridDim (emu::st().grid)

inline void __syncthreads() { emu::syncthreads(); }
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
inline unsigned short dg_float_to_half(float f) { _Float16 v = (_Float16)f; unsigned short h; std::memcpy(&h, &v, 2); return h; }
inline unsigned short dg_float_to_bf16(float f) {
    unsigned u = __float_as_uint(f);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

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
