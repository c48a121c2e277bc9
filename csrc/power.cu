// Row renormalisation of a batch of (B, N, N) matrices, in place: P[b, r, :] /= max(sum_c P[b, r, c], tiny).
//
// The fused step of diffcut_gpu/spectral/graph.py::power_walk: the GEMMs of the repeated squaring run
// in cuBLAS (torch.bmm); this kernel replaces the reference's sum / clamp / divide (three passes and a
// temporary) with one read-reduce-divide pass per row. One warp per row, the row sum in the matrix's
// dtype (float32 or float64) like the reference, in a fixed order (bit-identical repeated runs).
// Grid (ceil(N / PW_TILE_ROWS), B), PW_THREADS threads.
#include "common.cuh"

#define PW_THREADS 256
#define PW_TILE_ROWS 32

template <typename R>
__device__ void renorm_rows(R* P, i64 stride_b, i64 ldp, int N, R tiny) {
    const int b = blockIdx.y;
    const int lane = threadIdx.x % DG_WARP, warp = threadIdx.x / DG_WARP, nwarps = blockDim.x / DG_WARP;
    const int r_end = min((int)(blockIdx.x + 1) * PW_TILE_ROWS, N);
    for (int r = blockIdx.x * PW_TILE_ROWS + warp; r < r_end; r += nwarps) {
        R* row = P + (i64)b * stride_b + (i64)r * ldp;
        R s = R(0);
        for (int c = lane; c < N; c += DG_WARP) s += row[c];
        s = dg_warp_sum(s);
        const R d = s < tiny ? tiny : s;  // clamp_min semantics: a NaN sum stays NaN
        for (int c = lane; c < N; c += DG_WARP) row[c] = row[c] / d;
    }
}

extern "C" __global__ void __launch_bounds__(PW_THREADS) renorm_rows_f32(float* P, i64 stride_b, i64 ldp, int N) {
    renorm_rows<float>(P, stride_b, ldp, N, DG_FLT_TINY);
}

extern "C" __global__ void __launch_bounds__(PW_THREADS) renorm_rows_f64(double* P, i64 stride_b, i64 ldp, int N) {
    renorm_rows<double>(P, stride_b, ldp, N, DG_DBL_TINY);
}
