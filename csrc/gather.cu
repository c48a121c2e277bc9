// Dense induced sub-graphs: out[s] = W[image_index[s]][node_index[s]][:, node_index[s]].
//
// Same contract as diffcut_gpu/spectral/subgraph.py::gather_subgraphs: out is (S, n, n) in W's dtype,
// exactly 0 outside each valid block [:sizes[s], :sizes[s]]. Pure data movement, so the kernel is
// templated on the element width only (f16 and bf16 share the 16-bit instance).
// Grid (ceil(n / GA_TILE_ROWS), S), GA_THREADS threads; dynamic shared memory: n ints (the column
// ids of sub-graph s). Each warp writes whole output rows (coalesced) and gathers their entries from
// one source row of W (cached reads). Ids are clamped into [0, N) and [0, B), so a bad id can never
// read outside W (the wrapper documents that such ids give unspecified values, unlike torch indexing).
#include "common.cuh"

#define GA_THREADS 256
#define GA_TILE_ROWS 32

template <typename S>
__device__ void gather_subgraphs(const S* W, i64 stride_b, i64 ldw, int B, int N, const i64* image_index,
                                 const i64* node_index, const i64* sizes, int n, S* out) {
    DG_DYNAMIC_SMEM(int, ga_dyn_smem);
    int* cols = ga_dyn_smem;
    const int s = blockIdx.y;
    const int r_begin = blockIdx.x * GA_TILE_ROWS;
    if (r_begin >= n) return;
    const int size = (int)min(max(sizes[s], (i64)0), (i64)n);
    const i64 img = min(max(image_index[s], (i64)0), (i64)(B - 1));
    for (int c = threadIdx.x; c < n; c += blockDim.x)
        cols[c] = (int)min(max(node_index[(i64)s * n + c], (i64)0), (i64)(N - 1));
    __syncthreads();
    const S* Wb = W + img * stride_b;
    const int lane = threadIdx.x % DG_WARP, warp = threadIdx.x / DG_WARP, nwarps = blockDim.x / DG_WARP;
    const int r_end = min(r_begin + GA_TILE_ROWS, n);
    for (int r = r_begin + warp; r < r_end; r += nwarps) {
        S* dst = out + ((i64)s * n + r) * n;
        if (r >= size) {
            for (int c = lane; c < n; c += DG_WARP) dst[c] = S(0);
        } else {
            const S* src = Wb + (i64)cols[r] * ldw;
            for (int c = lane; c < n; c += DG_WARP) dst[c] = c < size ? __ldg(src + cols[c]) : S(0);
        }
    }
}

#define GA_INSTANTIATE(SUFFIX, S)                                                                     \
    extern "C" __global__ void __launch_bounds__(GA_THREADS) gather_subgraphs_##SUFFIX(               \
        const S* W, i64 stride_b, i64 ldw, int B, int N, const i64* image_index, const i64* node_index, \
        const i64* sizes, int n, S* out) {                                                            \
        gather_subgraphs<S>(W, stride_b, ldw, B, N, image_index, node_index, sizes, n, out);           \
    }

GA_INSTANTIATE(f16, unsigned short)
GA_INSTANTIATE(bf16, unsigned short)
GA_INSTANTIATE(f32, unsigned int)
GA_INSTANTIATE(f64, unsigned long long)
