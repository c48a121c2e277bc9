// Exact sweep cut along a Fiedler vector, for a batch of graphs.
//
// Same contract as diffcut_gpu/spectral/sweep.py::sweep_cut. The wrapper sorts x (torch.sort, stable,
// padding last) into `order`; then for sorted position i with node p = order[i]:
//   lower_i = sum_{rank(c) < i} W[p, c],   upper_i = sum_{rank(c) > i} W[p, c],   deg_i = row sum,
// and the cut of the first i + 1 sorted nodes is cut_i = sum_{a <= i} (upper_a - lower_a).
//   sweep_rows_<dt>  grid (ceil(N / SW_TILE_ROWS), B): one pass over the valid block, reading each
//                    graph row once (contiguous, 16-byte vectors) and looking up column ranks in
//                    shared memory; writes diff_i = upper_i - lower_i and deg_i in float64.
//   sweep_scan       one block per graph: float64 prefix sums, NCut of every split, first minimum
//                    among the splits allowed by min_side, and the mask of S.
#include "common.cuh"

#define SW_ROWS 4
#define SW_THREADS 256
#define SW_TILE_ROWS 32       // 8 warps x SW_ROWS
#define SW_SCAN_THREADS 1024

#define SW_DINF __longlong_as_double(0x7ff0000000000000LL)

// Dynamic shared memory: N ints (column ranks of the graph), 16-byte aligned.
template <typename T>
__device__ void sweep_rows(const void* W, i64 stride_b, i64 ldw, const i64* sizes, const i64* order, int N,
                           double* diff, double* deg) {
    typedef typename T::storage S;
    enum { VEC = Vec16<T>::VEC };
    DG_DYNAMIC_SMEM(int4, sw_dyn_smem);
    int* rank = reinterpret_cast<int*>(sw_dyn_smem);
    const int b = blockIdx.y, n = (int)sizes[b];
    const int i_begin = blockIdx.x * SW_TILE_ROWS;
    if (i_begin >= n) return;
    const int i_end = min(i_begin + SW_TILE_ROWS, n);
    const i64* ord = order + (i64)b * N;
    // The wrapper sorts the valid nodes 0..n-1 first, so ord[0..n) is a permutation of them. Should it
    // not be, every rank is still set (n: after all) and no row outside the valid block is read.
    for (int t = threadIdx.x; t < n; t += blockDim.x) rank[t] = n;
    __syncthreads();
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        const i64 p = ord[t];
        if (p >= 0 && p < n) rank[(int)p] = t;
    }
    __syncthreads();

    const S* Wb = reinterpret_cast<const S*>(W) + (i64)b * stride_b;
    const int lane = threadIdx.x % DG_WARP, warp = threadIdx.x / DG_WARP, nwarps = blockDim.x / DG_WARP;
    const int n_full = (n / VEC) * VEC;
    for (int i0 = i_begin + warp * SW_ROWS; i0 < i_end; i0 += nwarps * SW_ROWS) {
        const S* rowp[SW_ROWS];
        int pos[SW_ROWS];
#pragma unroll
        for (int rr = 0; rr < SW_ROWS; ++rr) {
            pos[rr] = min(i0 + rr, i_end - 1);
            rowp[rr] = Wb + min(max(ord[pos[rr]], (i64)0), (i64)(n - 1)) * ldw;
        }
        float lo[SW_ROWS], up[SW_ROWS], dg[SW_ROWS];
#pragma unroll
        for (int rr = 0; rr < SW_ROWS; ++rr) lo[rr] = up[rr] = dg[rr] = 0.f;
#pragma unroll 2
        for (int c = lane * VEC; c < n_full; c += DG_WARP * VEC) {
            int rk[VEC];
#pragma unroll
            for (int e = 0; e < VEC; e += 4) {
                const int4 r4 = *reinterpret_cast<const int4*>(rank + c + e);
                rk[e] = r4.x; rk[e + 1] = r4.y; rk[e + 2] = r4.z; rk[e + 3] = r4.w;
            }
#pragma unroll
            for (int rr = 0; rr < SW_ROWS; ++rr) {
                float w[VEC];
                Vec16<T>::unpack(dg_load_stream16(rowp[rr] + c), w);
#pragma unroll
                for (int e = 0; e < VEC; ++e) {
                    lo[rr] += rk[e] < pos[rr] ? w[e] : 0.f;
                    up[rr] += rk[e] > pos[rr] ? w[e] : 0.f;
                    dg[rr] += rk[e] == pos[rr] ? w[e] : 0.f;
                }
            }
        }
        const int c_tail = n_full + lane;
        if (c_tail < n) {
            const int rt = rank[c_tail];
#pragma unroll
            for (int rr = 0; rr < SW_ROWS; ++rr) {
                const float w = Load<T>::get(rowp[rr] + c_tail);
                lo[rr] += rt < pos[rr] ? w : 0.f;
                up[rr] += rt > pos[rr] ? w : 0.f;
                dg[rr] += rt == pos[rr] ? w : 0.f;
            }
        }
#pragma unroll
        for (int rr = 0; rr < SW_ROWS; ++rr) {
            const double l = dg_warp_sum((double)lo[rr]);
            const double u = dg_warp_sum((double)up[rr]);
            const double g = dg_warp_sum((double)dg[rr]);
            if (lane == 0 && i0 + rr < i_end) {
                diff[(i64)b * N + i0 + rr] = u - l;
                deg[(i64)b * N + i0 + rr] = u + l + g;
            }
        }
    }
}

// Exclusive block scan of two float64 sequences at once; returns the block totals in ta, tb.
__device__ void sw_block_scan2(double& a, double& b, double& ta, double& tb, double* sa, double* sb) {
    const int lane = threadIdx.x % DG_WARP, warp = threadIdx.x / DG_WARP;
    const int nwarps = blockDim.x / DG_WARP;
    double ia = a, ib = b;  // inclusive warp scan
#pragma unroll
    for (int o = 1; o < DG_WARP; o <<= 1) {
        const double xa = __shfl_up_sync(DG_FULL_MASK, ia, o);
        const double xb = __shfl_up_sync(DG_FULL_MASK, ib, o);
        if (lane >= o) { ia += xa; ib += xb; }
    }
    if (lane == DG_WARP - 1) { sa[warp] = ia; sb[warp] = ib; }
    __syncthreads();
    if (warp == 0) {
        double wa = lane < nwarps ? sa[lane] : 0.0, wb = lane < nwarps ? sb[lane] : 0.0;
#pragma unroll
        for (int o = 1; o < DG_WARP; o <<= 1) {
            const double xa = __shfl_up_sync(DG_FULL_MASK, wa, o);
            const double xb = __shfl_up_sync(DG_FULL_MASK, wb, o);
            if (lane >= o) { wa += xa; wb += xb; }
        }
        sa[lane] = wa;  // inclusive scan of the warp totals
        sb[lane] = wb;
    }
    __syncthreads();
    const double base_a = warp > 0 ? sa[warp - 1] : 0.0, base_b = warp > 0 ? sb[warp - 1] : 0.0;
    ta = sa[nwarps - 1];
    tb = sb[nwarps - 1];
    a = base_a + ia - a;
    b = base_b + ib - b;
    __syncthreads();
}

__device__ __forceinline__ double sw_safe_ratio(double num, double den) { return den > 0.0 ? num / den : 0.0; }

struct SwScanShared {
    double sa[DG_WARP], sb[DG_WARP];  // scan of the warp totals
    double best_v[DG_WARP];           // per-warp minimum and its index
    int best_i[DG_WARP];
};

// One block of SW_SCAN_THREADS per graph.
extern "C" __global__ void __launch_bounds__(SW_SCAN_THREADS)
sweep_scan(const i64* sizes, const i64* order, const double* diff, const double* deg, int N, int min_side,
           double* ncut, unsigned char* mask) {
    DG_SHARED(SwScanShared, sh);
    double* sa = sh.sa;
    double* sb = sh.sb;
    double* best_v = sh.best_v;
    int* best_i = sh.best_i;
    const int b = blockIdx.x, n = (int)sizes[b];
    const double* df = diff + (i64)b * N;
    const double* dg = deg + (i64)b * N;
    const int chunk = (n + blockDim.x - 1) / blockDim.x;
    const int lo = min((int)threadIdx.x * chunk, n), hi = min(lo + chunk, n);
    double cd = 0.0, cg = 0.0;
    for (int i = lo; i < hi; ++i) { cd += df[i]; cg += dg[i]; }
    double total_d, total_g;
    sw_block_scan2(cd, cg, total_d, total_g, sa, sb);

    double best = SW_DINF;
    int arg = 0x7fffffff;
    for (int i = lo; i < hi; ++i) {
        cd += df[i];
        cg += dg[i];
        const double cut = fmax(cd, 0.0), vol_s = cg, vol_t = fmax(total_g - cg, 0.0);
        const double score = sw_safe_ratio(cut, vol_s) + sw_safe_ratio(cut, vol_t);
        const int side = i + 1;
        if (side >= min_side && n - side >= min_side && score < best) { best = score; arg = i; }
    }
    // Block argmin: smallest value, then smallest index (the first minimum, like torch.argmin).
    const int lane = threadIdx.x % DG_WARP, warp = threadIdx.x / DG_WARP, nwarps = blockDim.x / DG_WARP;
#pragma unroll
    for (int o = DG_WARP / 2; o > 0; o >>= 1) {
        const double v2 = __shfl_xor_sync(DG_FULL_MASK, best, o);
        const int i2 = __shfl_xor_sync(DG_FULL_MASK, arg, o);
        if (v2 < best || (v2 == best && i2 < arg)) { best = v2; arg = i2; }
    }
    if (lane == 0) { best_v[warp] = best; best_i[warp] = arg; }
    __syncthreads();
    best = best_v[0];
    arg = best_i[0];
    for (int w = 1; w < nwarps; ++w)
        if (best_v[w] < best || (best_v[w] == best && best_i[w] < arg)) { best = best_v[w]; arg = best_i[w]; }
    const bool found = best < SW_DINF;
    if (threadIdx.x == 0) ncut[b] = best;
    const i64* ord = order + (i64)b * N;
    for (int t = threadIdx.x; t < N; t += blockDim.x)
        mask[(i64)b * N + ord[t]] = (found && t < n && t <= arg) ? 1 : 0;
}

#define SW_INSTANTIATE(SUFFIX, TAG)                                                                    \
    extern "C" __global__ void __launch_bounds__(SW_THREADS) sweep_rows_##SUFFIX(                      \
        const void* W, i64 stride_b, i64 ldw, const i64* sizes, const i64* order, int N, double* diff,  \
        double* deg) {                                                                                 \
        sweep_rows<TAG>(W, stride_b, ldw, sizes, order, N, diff, deg);                                 \
    }

SW_INSTANTIATE(f32, f32_t)
SW_INSTANTIATE(f16, f16_t)
SW_INSTANTIATE(bf16, bf16_t)
