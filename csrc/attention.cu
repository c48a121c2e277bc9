// Fused recording of head-averaged self-attention probabilities.
//
//   out[b, i, j] (+)= weight / H * sum_h softmax_j(scale * q[b, h, i, :] . k[b, h, j, :])
//
// Same contract as diffcut_gpu/attention/probs.py::head_mean_attention (no mask). Two kernels; neither
// materialises the (B, H, Nq, Nk) probabilities:
//   attn_stats_<dt>       grid (ceil(Nq / 64), H, B): for every (b, h, query) the row maximum m and the
//                         sum l of exp2(t - m), t = s * scale * log2(e), streaming over 64-key tiles
//                         (online softmax).
//   attn_accumulate_<dt>  grid (ceil(Nk / 64), ceil(Nq / 64), B): one 64 x 64 output tile per block;
//                         for each head the score tile is recomputed and exp2(t - m) / l summed in
//                         registers, then out is read and written once.
// Scores: fp16 / bf16 inputs use tensor cores (mma.sync m16n8k16, fp32 accumulation; products of
// 16-bit values are exact in fp32, so this is the fp32 computation up to summation order; sm_80 and
// newer only); fp32 inputs use SIMT FMAs (any supported GPU). Block: AT_THREADS = 4 warps, warp w owns query rows 16w .. 16w + 15 of the tile and
// every thread holds the mma C-fragment layout: rows gid and gid + 8 (gid = lane / 4), columns
// nb * 8 + 2 * (lane % 4) + {0, 1} for nb = 0..7.
// Dynamic shared memory: the Q and K tiles, 2 * 64 * dp elements; the wrapper passes dk (the head
// dim rounded up to the mma K step, 16, for 16-bit inputs; d for fp32) and dp (row pitch: dk + 8
// halves for 16-bit, odd for fp32, to spread shared-memory banks).
#include "common.cuh"

#define AT_TILE 64
#define AT_THREADS 128

// Q or K tile rows [0, 64) x columns [0, dk) into shared memory, zero beyond `rows_valid` and `d`.
template <typename S>
__device__ void at_load_tile(S* dst, int dp, int dk, const S* src, i64 row_stride, int rows_valid, int d) {
    for (int idx = threadIdx.x; idx < AT_TILE * dk; idx += blockDim.x) {
        const int r = idx / dk, c = idx - r * dk;
        S v = S(0);
        if (r < rows_valid && c < d) v = src[(i64)r * row_stride + c];
        dst[r * dp + c] = v;
    }
}

template <bool BF16>
__device__ __forceinline__ void at_mma(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                       unsigned b1) {
#ifdef DG_EMULATION
    dg_emu_mma_m16n8k16(c, a0, a1, a2, a3, b0, b1, BF16);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    // mma.m16n8k16 needs sm_80. Compiling it out keeps the float32 entry points of this module usable
    // on older GPUs; the wrapper refuses 16-bit inputs there (limits.min_compute_capability).
    __trap();
#else
    if (BF16) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
#endif
}

// Raw scores s = Q_tile K_tile^T for this warp's 16 rows x 64 keys, in C-fragment layout.
template <typename T> struct AtScores;

template <bool BF16>
__device__ __forceinline__ void at_scores_mma(const unsigned short* Qs, const unsigned short* Ks, int dp, int dk,
                                              float s[8][4]) {
    const int lane = threadIdx.x % DG_WARP, warp = threadIdx.x / DG_WARP;
    const int gid = lane >> 2, tig = lane & 3;
    const unsigned short* qa = Qs + (warp * 16 + gid) * dp + tig * 2;
    const unsigned short* qb = qa + 8 * dp;
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f;
    for (int kk = 0; kk < dk; kk += 16) {
        const unsigned a0 = *reinterpret_cast<const unsigned*>(qa + kk);
        const unsigned a1 = *reinterpret_cast<const unsigned*>(qb + kk);
        const unsigned a2 = *reinterpret_cast<const unsigned*>(qa + kk + 8);
        const unsigned a3 = *reinterpret_cast<const unsigned*>(qb + kk + 8);
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
            const unsigned short* kr = Ks + (nb * 8 + gid) * dp + tig * 2 + kk;
            const unsigned b0 = *reinterpret_cast<const unsigned*>(kr);
            const unsigned b1 = *reinterpret_cast<const unsigned*>(kr + 8);
            at_mma<BF16>(s[nb], a0, a1, a2, a3, b0, b1);
        }
    }
}

template <> struct AtScores<f16_t> {
    static __device__ __forceinline__ void run(const unsigned short* Qs, const unsigned short* Ks, int dp, int dk,
                                               float s[8][4]) {
        at_scores_mma<false>(Qs, Ks, dp, dk, s);
    }
};

template <> struct AtScores<bf16_t> {
    static __device__ __forceinline__ void run(const unsigned short* Qs, const unsigned short* Ks, int dp, int dk,
                                               float s[8][4]) {
        at_scores_mma<true>(Qs, Ks, dp, dk, s);
    }
};

template <> struct AtScores<f32_t> {
    static __device__ __forceinline__ void run(const float* Qs, const float* Ks, int dp, int dk, float s[8][4]) {
        const int lane = threadIdx.x % DG_WARP, warp = threadIdx.x / DG_WARP;
        const int gid = lane >> 2, tig = lane & 3;
        const float* qa = Qs + (warp * 16 + gid) * dp;
        const float* qb = qa + 8 * dp;
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f;
        for (int kk = 0; kk < dk; ++kk) {
            const float xa = qa[kk], xb = qb[kk];
#pragma unroll
            for (int nb = 0; nb < 8; ++nb) {
                const float* kr = Ks + (nb * 8 + tig * 2) * dp + kk;
                const float k0 = kr[0], k1 = kr[dp];
                s[nb][0] = fmaf(xa, k0, s[nb][0]);
                s[nb][1] = fmaf(xa, k1, s[nb][1]);
                s[nb][2] = fmaf(xb, k0, s[nb][2]);
                s[nb][3] = fmaf(xb, k1, s[nb][3]);
            }
        }
    }
};

// Merge two partial softmax statistics (m1, l1), (m2, l2) of disjoint column sets.
__device__ __forceinline__ void at_merge(float& m, float& l, float m2, float l2) {
    const float mn = fmaxf(m, m2);
    if (mn == -DG_INF) return;  // both empty
    l = (m == -DG_INF ? 0.f : l * exp2f(m - mn)) + (m2 == -DG_INF ? 0.f : l2 * exp2f(m2 - mn));
    m = mn;
}

template <typename T>
__device__ void attn_stats(const typename T::storage* q, const typename T::storage* k, i64 sqb, i64 sqh, i64 sqn,
                           i64 skb, i64 skh, i64 skn, int H, int Nq, int Nk, int d, int dk, int dp, float sl2,
                           float* mstat, float* lstat) {
    typedef typename T::storage S;
    DG_DYNAMIC_SMEM(int4, at_dyn_smem);
    S* Qs = reinterpret_cast<S*>(at_dyn_smem);
    S* Ks = Qs + AT_TILE * dp;
    const int q0 = blockIdx.x * AT_TILE, h = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x % DG_WARP, warp = threadIdx.x / DG_WARP;
    const int gid = lane >> 2, tig = lane & 3;
    const S* qbh = q + (i64)b * sqb + (i64)h * sqh;
    const S* kbh = k + (i64)b * skb + (i64)h * skh;
    at_load_tile<S>(Qs, dp, dk, qbh + (i64)q0 * sqn, sqn, min(AT_TILE, Nq - q0), d);
    float mrun[2] = {-DG_INF, -DG_INF}, lrun[2] = {0.f, 0.f};
    for (int k0 = 0; k0 < Nk; k0 += AT_TILE) {
        __syncthreads();  // the previous K tile is consumed (and the Q tile written, the first time)
        at_load_tile<S>(Ks, dp, dk, kbh + (i64)k0 * skn, skn, min(AT_TILE, Nk - k0), d);
        __syncthreads();
        float s[8][4];
        AtScores<T>::run(Qs, Ks, dp, dk, s);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            float mx = -DG_INF;
#pragma unroll
            for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int col = k0 + nb * 8 + tig * 2 + e;
                    const float t = col < Nk ? s[nb][hh * 2 + e] * sl2 : -DG_INF;
                    s[nb][hh * 2 + e] = t;
                    mx = fmaxf(mx, t);
                }
            }
            float l = 0.f;
            if (mx != -DG_INF) {
#pragma unroll
                for (int nb = 0; nb < 8; ++nb) l += exp2f(s[nb][hh * 2] - mx) + exp2f(s[nb][hh * 2 + 1] - mx);
            }
            at_merge(mrun[hh], lrun[hh], mx, l);
        }
    }
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {  // the 4 lanes of a quad share rows
            const float m2 = __shfl_xor_sync(DG_FULL_MASK, mrun[hh], o);
            const float l2 = __shfl_xor_sync(DG_FULL_MASK, lrun[hh], o);
            at_merge(mrun[hh], lrun[hh], m2, l2);
        }
        const int row = q0 + warp * 16 + gid + hh * 8;
        if (tig == 0 && row < Nq) {
            const i64 idx = ((i64)b * H + h) * Nq + row;
            mstat[idx] = mrun[hh];
            lstat[idx] = lrun[hh];
        }
    }
}

template <typename T>
__device__ void attn_accumulate(const typename T::storage* q, const typename T::storage* k, i64 sqb, i64 sqh,
                                i64 sqn, i64 skb, i64 skh, i64 skn, int H, int Nq, int Nk, int d, int dk, int dp,
                                float sl2, const float* mstat, const float* lstat, float* out, i64 sob, i64 soq,
                                float factor, int accumulate) {
    typedef typename T::storage S;
    DG_DYNAMIC_SMEM(int4, at_dyn_smem);
    S* Qs = reinterpret_cast<S*>(at_dyn_smem);
    S* Ks = Qs + AT_TILE * dp;
    const int k0 = blockIdx.x * AT_TILE, q0 = blockIdx.y * AT_TILE, b = blockIdx.z;
    const int lane = threadIdx.x % DG_WARP, warp = threadIdx.x / DG_WARP;
    const int gid = lane >> 2, tig = lane & 3;
    const int ra = q0 + warp * 16 + gid, rb = ra + 8;
    float acc[8][4];
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) acc[nb][0] = acc[nb][1] = acc[nb][2] = acc[nb][3] = 0.f;
    for (int h = 0; h < H; ++h) {
        __syncthreads();  // the previous head's tiles are consumed
        at_load_tile<S>(Qs, dp, dk, q + (i64)b * sqb + (i64)h * sqh + (i64)q0 * sqn, sqn, min(AT_TILE, Nq - q0), d);
        at_load_tile<S>(Ks, dp, dk, k + (i64)b * skb + (i64)h * skh + (i64)k0 * skn, skn, min(AT_TILE, Nk - k0), d);
        __syncthreads();
        const i64 base = ((i64)b * H + h) * Nq;
        const float ma = ra < Nq ? mstat[base + ra] : 0.f, la = ra < Nq ? 1.f / lstat[base + ra] : 0.f;
        const float mb = rb < Nq ? mstat[base + rb] : 0.f, lb = rb < Nq ? 1.f / lstat[base + rb] : 0.f;
        float s[8][4];
        AtScores<T>::run(Qs, Ks, dp, dk, s);
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {  // columns >= Nk hold finite junk and are never written
            acc[nb][0] += exp2f(s[nb][0] * sl2 - ma) * la;
            acc[nb][1] += exp2f(s[nb][1] * sl2 - ma) * la;
            acc[nb][2] += exp2f(s[nb][2] * sl2 - mb) * lb;
            acc[nb][3] += exp2f(s[nb][3] * sl2 - mb) * lb;
        }
    }
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int row = c < 2 ? ra : rb;
            const int col = k0 + nb * 8 + tig * 2 + (c & 1);
            if (row < Nq && col < Nk) {
                float* o = out + (i64)b * sob + (i64)row * soq + col;
                const float val = acc[nb][c] * factor;
                *o = accumulate ? *o + val : val;
            }
        }
    }
}

#define AT_QK_PARAMS(S)                                                                                  \
    const S *q, const S *k, i64 sqb, i64 sqh, i64 sqn, i64 skb, i64 skh, i64 skn, int H, int Nq, int Nk, \
        int d, int dk, int dp, float sl2
#define AT_QK_ARGS q, k, sqb, sqh, sqn, skb, skh, skn, H, Nq, Nk, d, dk, dp, sl2

#define AT_INSTANTIATE(SUFFIX, TAG, S)                                                                   \
    extern "C" __global__ void __launch_bounds__(AT_THREADS)                                            \
        attn_stats_##SUFFIX(AT_QK_PARAMS(S), float* mstat, float* lstat) {                               \
        attn_stats<TAG>(AT_QK_ARGS, mstat, lstat);                                                       \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(AT_THREADS) attn_accumulate_##SUFFIX(                  \
        AT_QK_PARAMS(S), const float* mstat, const float* lstat, float* out, i64 sob, i64 soq,           \
        float factor, int accumulate) {                                                                  \
        attn_accumulate<TAG>(AT_QK_ARGS, mstat, lstat, out, sob, soq, factor, accumulate);               \
    }

AT_INSTANTIATE(f32, f32_t, float)
AT_INSTANTIATE(f16, f16_t, unsigned short)
AT_INSTANTIATE(bf16, bf16_t, unsigned short)
