// Shared device helpers for the diffcut-gpu kernels.
//
// NVRTC compiles these sources with no host headers and no include path: this file includes
// nothing, and the loader (diffcut_gpu/kernels/loader.py) pastes it in place of
// `#include "common.cuh"`. fp16 / bf16 values travel as raw 16-bit storage and are read with one
// PTX conversion (fp16) or a shift (bf16), so neither cuda_fp16.h nor cuda_bf16.h is needed and
// every kernel but the 16-bit attention scores runs from sm_75 (diffcut_gpu/kernels/limits.py).
//
// DG_EMULATION (defined only by tests/kernels/emu/cuda_emu.h) swaps the few PTX statements for C++
// equivalents, so that the tests can execute these kernels on a CPU, one fiber per CUDA thread.
#pragma once

// Shared memory of a kernel, declared only through these two macros (the emulator places and poisons
// it): `DG_DYNAMIC_SMEM(float4, buf);` declares the dynamic buffer `buf`, `DG_SHARED(Type, name);` a
// static shared variable `name` of a scalar or struct type.
#ifdef DG_EMULATION
#define DG_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(dg_emu_dynamic_smem())
#define DG_SHARED(type, name) type& name = *dg_emu_static_smem<type>([] {})
#else
#define DG_DYNAMIC_SMEM(type, name) extern __shared__ type name[]
#define DG_SHARED(type, name) __shared__ type name
#endif

#define DG_WARP 32
#define DG_FULL_MASK 0xffffffffu
#define DG_INF __int_as_float(0x7f800000)
#define DG_FLT_EPS 1.1920928955078125e-7f
#define DG_FLT_TINY 1.1754943508222875e-38f
#define DG_DBL_TINY 2.2250738585072014e-308

typedef long long i64;

// Storage tags: the kernels are templated on these and read / write 16-bit floats as raw bits.
struct f32_t { typedef float storage; };
struct f64_t { typedef double storage; };
struct f16_t { typedef unsigned short storage; };
struct bf16_t { typedef unsigned short storage; };

#ifndef DG_EMULATION
__device__ __forceinline__ float dg_half_to_float(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
#endif

__device__ __forceinline__ float dg_bf16_to_float(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

// Scalar load of one stored element as fp32.
template <typename T> struct Load;
template <> struct Load<f32_t> {
    static __device__ __forceinline__ float get(const float* p) { return *p; }
};
template <> struct Load<f16_t> {
    static __device__ __forceinline__ float get(const unsigned short* p) { return dg_half_to_float(*p); }
};
template <> struct Load<bf16_t> {
    static __device__ __forceinline__ float get(const unsigned short* p) { return dg_bf16_to_float(*p); }
};

// 16-byte vector of stored elements, unpacked to fp32: VEC = 4 (fp32) or 8 (fp16 / bf16).
template <typename T> struct Vec16;
template <> struct Vec16<f32_t> {
    enum { VEC = 4 };
    static __device__ __forceinline__ void unpack(const uint4& r, float* out) {
        out[0] = __uint_as_float(r.x); out[1] = __uint_as_float(r.y);
        out[2] = __uint_as_float(r.z); out[3] = __uint_as_float(r.w);
    }
};
template <> struct Vec16<f16_t> {
    enum { VEC = 8 };
    static __device__ __forceinline__ void unpack(const uint4& r, float* out) {
        const unsigned int w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {  // the lower address is the low half of each 32-bit word
            out[2 * k] = dg_half_to_float((unsigned short)(w[k] & 0xffffu));
            out[2 * k + 1] = dg_half_to_float((unsigned short)(w[k] >> 16));
        }
    }
};
template <> struct Vec16<bf16_t> {
    enum { VEC = 8 };
    static __device__ __forceinline__ void unpack(const uint4& r, float* out) {
        const unsigned int w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            out[2 * k] = __uint_as_float(w[k] << 16);
            out[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
        }
    }
};

// Streaming 16-byte load (ld.global.cs: evict-first in L1 and L2), for graph rows that are read once
// per pass and must not push the Lanczos basis out of L2. `p` must be 16-byte aligned.
__device__ __forceinline__ uint4 dg_load_stream16(const void* p) {
#ifdef DG_EMULATION
    return *reinterpret_cast<const uint4*>(p);
#else
    uint4 r;
    asm volatile("ld.global.cs.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
#endif
}

// Butterfly sums: every lane ends with the same value, in the same order on every run.
__device__ __forceinline__ float dg_warp_sum(float v) {
#pragma unroll
    for (int o = DG_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(DG_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ double dg_warp_sum(double v) {
#pragma unroll
    for (int o = DG_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(DG_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float dg_warp_max(float v) {
#pragma unroll
    for (int o = DG_WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(DG_FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ int dg_warp_min(int v) {
#pragma unroll
    for (int o = DG_WARP / 2; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(DG_FULL_MASK, v, o));
    return v;
}

// Block-wide reductions. `scratch` holds at least 32 values of the reduced type and may be reused
// right after the call returns (the trailing barrier protects it). Every thread of the block must call.
// One pattern for all three: reduce each warp, stage the warp results, reduce them in every warp
// (lanes past the last warp contribute the operation's identity).
struct DgWarpSum {
    template <typename S>
    __device__ __forceinline__ S operator()(S v) const { return dg_warp_sum(v); }
};
struct DgWarpMax {
    __device__ __forceinline__ float operator()(float v) const { return dg_warp_max(v); }
};
struct DgWarpMin {
    __device__ __forceinline__ int operator()(int v) const { return dg_warp_min(v); }
};

template <typename S, typename WarpOp>
__device__ __forceinline__ S dg_block_reduce(S v, S* scratch, S identity, WarpOp warp_op) {
    const int lane = threadIdx.x % DG_WARP, warp = threadIdx.x / DG_WARP;
    const int nwarps = (blockDim.x + DG_WARP - 1) / DG_WARP;
    v = warp_op(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    S r = lane < nwarps ? scratch[lane] : identity;
    r = warp_op(r);
    __syncthreads();
    return r;
}

template <typename S>
__device__ __forceinline__ S dg_block_sum(S v, S* scratch) { return dg_block_reduce(v, scratch, S(0), DgWarpSum()); }

__device__ __forceinline__ float dg_block_max(float v, float* scratch) {
    return dg_block_reduce(v, scratch, -DG_INF, DgWarpMax());
}

__device__ __forceinline__ int dg_block_min(int v, int* scratch) {
    return dg_block_reduce(v, scratch, 0x7fffffff, DgWarpMin());
}
