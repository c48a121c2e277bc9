// Batched thick-restart Lanczos for the Fiedler pair of a batch of graphs.
//
// Same contract as diffcut_gpu/spectral/lanczos.py (the torch reference), not the same iteration: this
// is single-vector thick-restart Lanczos (the reference multiplies a block of two vectors per pass over
// W), with the true residual tested at the end of every cycle (the reference tests a free estimate at
// checkpoints), in float32 only. `max_iter` means the same in both: passes over W for expansion steps
// (here one vector per pass; each cycle's residual costs one more). diffcut_gpu/kernels/lanczos.py
// lists the differences. One thread block per graph for everything but the matrix-vector product:
//
//   A = D^-1/2 W D^-1/2 on the active nodes (valid, degree > eps^2 * max degree), u0 = sqrt(d)/||sqrt(d)||.
//   Basis rows of V (per graph, fp32, row stride ldv):
//     0          u0 (deflated explicitly: every new vector is orthogonalised against it)
//     1 .. m+1   q_0 .. q_m
//     m+2        v, the current top Ritz vector                      (ROW_TMP)
//     m+3        y, output of the last matvec                        (ROW_Y)
//     m+4, m+5   z = dis * (vector being multiplied), dis = d^-1/2   (tiled path only: the fused
//                kernel keeps both in shared memory)
//   One step:   y = A q_j; CGS2 of y against rows 0..j+1 -> column j of H = Q^T A Q; beta = ||w||;
//               q_{j+1} = w / beta, or the cycle ends when beta <= tau (invariant subspace).
//   Cycle end:  Jacobi eigen-solve of the small symmetric H (in shared memory, one block), top Ritz
//               pair (mu, v), true residual ||A v - mu v|| with one more matvec; finish when it is <= tol
//               or the step budget is spent; otherwise thick restart: keep the `keep` largest Ritz
//               vectors plus the next Lanczos vector (Wu & Simon 2000).
//
// Two launch strategies share every device function below:
//   lanczos_fused_<dt>   one block runs the whole solve of one graph (matvec included), no host
//                        round trip at all. Best when B fills the GPU (B >= #SMs) or N is small.
//   lanczos_degrees_<dt>, lanczos_init, then (lanczos_matvec_<dt>, lanczos_step) repeated:
//                        the matvec is spread over many blocks per graph (row tiles), so a single
//                        large graph still uses the whole GPU; per-graph state lives in `state`.
// All reductions run in a fixed order: repeated runs are bit-identical.
#include "common.cuh"

#define LZ_MAX_M 64         // largest Krylov dimension m (basis vectors per cycle)
#define LZ_MAX_KEEP 16      // most Ritz vectors kept at a thick restart
#define LZ_ROWS 4           // graph rows per warp per pass in the matvec
#define LZ_THREADS 512      // block size of the per-graph kernels
#define LZ_TILE_THREADS 256 // block size of the row-tiled matvec
#define LZ_TILE_ROWS 32     // rows per block of the row-tiled matvec (8 warps x LZ_ROWS)
#define LZ_MAX_SWEEPS 16    // Jacobi sweeps cap
#define LZ_JACOBI_TOL2 1e-13f  // stop Jacobi when off(T)^2 <= this * ||T||_F^2  (~ (3 eps)^2) ...
#define LZ_JACOBI_STALL 0.5f   // ... or when, after 3 sweeps, one fails to halve off(T)^2: rounding floor

#define LZ_EXPAND 0
#define LZ_RESIDUAL 1
#define LZ_DONE 2
#define LZ_STATE_INTS 8
#define LZ_STATE_FLOATS 4

// ---------------------------------------------------------------------------------------------
// Matrix-vector product rows: y[r] = scale[r] * sum_{c < n} W[r, c] * z[c], for the rows
// row_begin + (warp_id + t * warp_count) * LZ_ROWS + {0..LZ_ROWS-1} below row_end.
// W rows are 16-byte aligned (ldw * sizeof(storage) % 16 == 0, checked by the wrapper); each lane
// reads 16-byte vectors with the streaming hint. Columns >= n are never used (padding may hold
// anything, NaN included). ONES: z = 1 (row sums). scale == nullptr: no scaling.
template <typename T, bool ONES>
__device__ void lz_rows_times(const typename T::storage* __restrict__ Wb, i64 ldw, int n,
                              const float* z, const float* scale, float* y,
                              int row_begin, int row_end, int warp_id, int warp_count) {
    typedef typename T::storage S;
    enum { VEC = Vec16<T>::VEC };
    const int lane = threadIdx.x % DG_WARP;
    const int n_full = (n / VEC) * VEC;
    for (int r0 = row_begin + warp_id * LZ_ROWS; r0 < row_end; r0 += warp_count * LZ_ROWS) {
        const S* rowp[LZ_ROWS];
#pragma unroll
        for (int rr = 0; rr < LZ_ROWS; ++rr) rowp[rr] = Wb + (i64)min(r0 + rr, row_end - 1) * ldw;
        float acc[LZ_ROWS];
#pragma unroll
        for (int rr = 0; rr < LZ_ROWS; ++rr) acc[rr] = 0.f;
#pragma unroll 2
        for (int c = lane * VEC; c < n_full; c += DG_WARP * VEC) {
            float zv[VEC];
            if (ONES) {
#pragma unroll
                for (int e = 0; e < VEC; ++e) zv[e] = 1.f;
            } else {
#pragma unroll
                for (int e = 0; e < VEC; e += 4) {
                    const float4 q = *reinterpret_cast<const float4*>(z + c + e);
                    zv[e] = q.x; zv[e + 1] = q.y; zv[e + 2] = q.z; zv[e + 3] = q.w;
                }
            }
#pragma unroll
            for (int rr = 0; rr < LZ_ROWS; ++rr) {
                float w[VEC];
                Vec16<T>::unpack(dg_load_stream16(rowp[rr] + c), w);
#pragma unroll
                for (int e = 0; e < VEC; ++e) acc[rr] = fmaf(w[e], zv[e], acc[rr]);
            }
        }
        const int c_tail = n_full + lane;  // fewer than VEC trailing columns, one per lane
        if (c_tail < n) {
            const float zt = ONES ? 1.f : z[c_tail];
#pragma unroll
            for (int rr = 0; rr < LZ_ROWS; ++rr) acc[rr] = fmaf(Load<T>::get(rowp[rr] + c_tail), zt, acc[rr]);
        }
#pragma unroll
        for (int rr = 0; rr < LZ_ROWS; ++rr) {
            const float s = dg_warp_sum(acc[rr]);
            const int r = r0 + rr;
            if (lane == 0 && r < row_end) y[r] = scale ? scale[r] * s : s;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-graph context. Pointers may address shared or global memory (generic addressing).
struct Lz {
    int N, n, ldv, m, keep;
    float tol, tau;
    float* V;     // (m + 6) x ldv basis and work rows (global)
    float* z;     // ldv
    float* dis;   // ldv: d^-1/2 on active nodes, 0 elsewhere
    float* H;     // m x m projected matrix Q^T A Q (upper triangle filled)
    float* T;     // m x m Jacobi work matrix (shared)
    float* Y;     // m x m Jacobi eigenvectors, column c = eigenvector c (shared)
    float* coef;  // LZ_MAX_M + 2 CGS2 coefficients, summed over both passes (shared)
    float* ctmp;  // LZ_MAX_M + 2 CGS2 coefficients of the current pass (shared)
    float* evals; // LZ_MAX_M eigenvalues of T (shared)
    int* sel;     // LZ_MAX_KEEP + 1 indices of the largest eigenvalues, largest first (shared)
    int* jp; int* jq; float* jc; float* js;  // one Jacobi round: LZ_MAX_M / 2 + 1 rotations (shared)
    float* redf; int* redi;                 // reduction scratch, 32 entries each (shared)
    __device__ __forceinline__ float* row(int r) const { return V + (i64)r * ldv; }
};

#define LZ_ROW_TMP(L) ((L).m + 2)
#define LZ_ROW_Y(L) ((L).m + 3)
#define LZ_ROW_Z(L) ((L).m + 4)
#define LZ_ROW_DIS(L) ((L).m + 5)

struct LzShared {
    float coef[LZ_MAX_M + 2];
    float ctmp[LZ_MAX_M + 2];
    float evals[LZ_MAX_M];
    int sel[LZ_MAX_KEEP + 1];
    int jp[LZ_MAX_M / 2 + 1];
    int jq[LZ_MAX_M / 2 + 1];
    float jc[LZ_MAX_M / 2 + 1];
    float js[LZ_MAX_M / 2 + 1];
    float redf[DG_WARP];
    int redi[DG_WARP];
};

__device__ __forceinline__ void lz_bind_shared(Lz& L, LzShared& s) {
    L.coef = s.coef; L.ctmp = s.ctmp; L.evals = s.evals; L.sel = s.sel;
    L.jp = s.jp; L.jq = s.jq; L.jc = s.jc; L.js = s.js; L.redf = s.redf; L.redi = s.redi;
}

// Integer hash of (index, seed) in [-1, 1): bit-identical to lanczos.hash_vector of the reference.
__device__ __forceinline__ float lz_hash(int i, int seed) {
    unsigned int h = (unsigned int)(i + 1 + 7919 * seed) * 2654435761u;
    h = (h ^ (h >> 15)) * 0x2C1B3C6Du;
    h = (h ^ (h >> 12)) * 0x297A2D39u;
    h = h ^ (h >> 15);
    return (float)((double)h / 2147483648.0 - 1.0);
}

__device__ float lz_norm(const Lz& L, const float* r) {
    float s = 0.f;
    for (int i = threadIdx.x; i < L.n; i += blockDim.x) s = fmaf(r[i], r[i], s);
    return sqrtf(dg_block_sum(s, L.redf));
}

// z = dis * r on the valid nodes.
__device__ void lz_prepare_z(const Lz& L, const float* r) {
    for (int i = threadIdx.x; i < L.n; i += blockDim.x) L.z[i] = L.dis[i] * r[i];
    __syncthreads();
}

// Classical Gram-Schmidt, twice, of src against rows 0 .. nrows-1 of V; result in dst (may be src).
// coef[k] = both passes' coefficients summed: the projections of the input on the basis.
__device__ void lz_cgs2(const Lz& L, const float* src, float* dst, int nrows) {
    const int lane = threadIdx.x % DG_WARP, warp = threadIdx.x / DG_WARP;
    const int nwarps = blockDim.x / DG_WARP;
    for (int pass = 0; pass < 2; ++pass) {
        const float* w = pass == 0 ? src : dst;
        for (int k = warp; k < nrows; k += nwarps) {
            const float* q = L.row(k);
            float s = 0.f;
            for (int i = lane; i < L.n; i += DG_WARP) s = fmaf(q[i], w[i], s);
            s = dg_warp_sum(s);
            if (lane == 0) {
                L.ctmp[k] = s;
                L.coef[k] = pass == 0 ? s : L.coef[k] + s;
            }
        }
        __syncthreads();
        for (int i = threadIdx.x; i < L.n; i += blockDim.x) {
            float acc = w[i];
            for (int k = 0; k < nrows; ++k) acc = fmaf(-L.ctmp[k], L.row(k)[i], acc);
            dst[i] = acc;
        }
        __syncthreads();
    }
}

// From raw degrees in dis (valid nodes): active set, dis = d^-1/2, u0 (row 0). Returns #active.
__device__ int lz_setup(const Lz& L) {
    float dmax = 0.f;
    for (int i = threadIdx.x; i < L.n; i += blockDim.x) dmax = fmaxf(dmax, L.dis[i]);
    dmax = dg_block_max(dmax, L.redf);
    const float thr = DG_FLT_EPS * DG_FLT_EPS * dmax;
    float* u0 = L.row(0);
    float cnt = 0.f, ss = 0.f;
    for (int i = threadIdx.x; i < L.ldv; i += blockDim.x) {
        float s = 0.f, root = 0.f;
        if (i < L.n) {
            const float d = L.dis[i];
            if (d > thr) { s = rsqrtf(d); root = sqrtf(d); cnt += 1.f; }
        }
        L.dis[i] = s;
        L.z[i] = 0.f;
        u0[i] = root;
        ss = fmaf(root, root, ss);
    }
    cnt = dg_block_sum(cnt, L.redf);
    const float nrm = fmaxf(sqrtf(dg_block_sum(ss, L.redf)), DG_FLT_TINY);
    for (int i = threadIdx.x; i < L.n; i += blockDim.x) u0[i] = u0[i] / nrm;
    __syncthreads();
    return (int)cnt;
}

// A unit vector on the active nodes orthogonal to rows 0 .. nrows-1, written to dst; false (and
// dst = 0) when nothing above rounding level is left. Same recipe as the reference's _fresh_direction.
__device__ bool lz_fresh(const Lz& L, int seed, float* dst, int nrows) {
    for (int i = threadIdx.x; i < L.n; i += blockDim.x) dst[i] = L.dis[i] != 0.f ? lz_hash(i, seed) : 0.f;
    const float nr = fmaxf(lz_norm(L, dst), DG_FLT_TINY);
    for (int i = threadIdx.x; i < L.n; i += blockDim.x) dst[i] = dst[i] / nr;
    __syncthreads();
    lz_cgs2(L, dst, dst, nrows);
    const float nn = lz_norm(L, dst);
    const bool ok = nn > L.tau;
    for (int i = threadIdx.x; i < L.n; i += blockDim.x) dst[i] = ok ? dst[i] / fmaxf(nn, L.tau) : 0.f;
    __syncthreads();
    return ok;
}

// One Lanczos step after y = A q_j landed in ROW_Y: orthogonalise into q_{j+1} (row j + 2), fill
// column j of H. Returns false when ||w|| <= tau (q_{j+1} is then set to 0: the cycle ends).
__device__ bool lz_expand(const Lz& L, int j) {
    float* dst = L.row(j + 2);
    lz_cgs2(L, L.row(LZ_ROW_Y(L)), dst, j + 2);
    for (int i = threadIdx.x; i <= j; i += blockDim.x) L.H[i * L.m + j] = L.coef[i + 1];
    const float beta = lz_norm(L, dst);
    const bool live = beta > L.tau;
    for (int i = threadIdx.x; i < L.n; i += blockDim.x) dst[i] = live ? dst[i] / beta : 0.f;
    __syncthreads();
    return live;
}

__device__ __forceinline__ int lz_player(int pos, int round, int fe) {
    return pos == 0 ? 0 : 1 + (pos - 1 + round) % (fe - 1);
}

// Cyclic two-sided Jacobi on the f x f symmetric matrix in T (leading dimension m), round-robin
// ordering: each round rotates f/2 disjoint pairs at once (rows, then columns). Eigenvalues to
// evals, eigenvectors to the columns of Y.
__device__ void lz_jacobi(const Lz& L, int f) {
    const int m = L.m;
    float* T = L.T;
    float* Y = L.Y;
    for (int idx = threadIdx.x; idx < f * f; idx += blockDim.x) {
        const int i = idx / f, j = idx % f;
        Y[i * m + j] = i == j ? 1.f : 0.f;
    }
    __syncthreads();
    const int fe = f + (f & 1), half = fe / 2;
    float prev_off = DG_INF;
    for (int sweep = 0; sweep < LZ_MAX_SWEEPS; ++sweep) {
        float off = 0.f, tot = 0.f;
        for (int idx = threadIdx.x; idx < f * f; idx += blockDim.x) {
            const int i = idx / f, j = idx % f;
            const float a = T[i * m + j];
            tot = fmaf(a, a, tot);
            if (i != j) off = fmaf(a, a, off);
        }
        off = dg_block_sum(off, L.redf);
        tot = dg_block_sum(tot, L.redf);
        // Uniform decision: every thread holds the same sums. Jacobi converges quadratically once
        // close, so a late sweep that fails to halve off(T)^2 has reached fp32 rounding level.
        if (!(off > LZ_JACOBI_TOL2 * tot) || (sweep >= 3 && off > LZ_JACOBI_STALL * prev_off)) break;
        prev_off = off;
        for (int round = 0; round < fe - 1; ++round) {
            for (int pi = threadIdx.x; pi < half; pi += blockDim.x) {
                const int a = lz_player(pi, round, fe), b = lz_player(fe - 1 - pi, round, fe);
                const int p = min(a, b), q = max(a, b);
                float c = 1.f, s = 0.f;
                if (q < f) {
                    const float apq = T[p * m + q];
                    if (apq != 0.f) {
                        const float theta = (T[q * m + q] - T[p * m + p]) / (2.f * apq);
                        const float t = copysignf(1.f, theta) / (fabsf(theta) + sqrtf(fmaf(theta, theta, 1.f)));
                        c = 1.f / sqrtf(fmaf(t, t, 1.f));
                        s = t * c;
                    }
                }
                L.jp[pi] = p;
                L.jq[pi] = q < f ? q : -1;
                L.jc[pi] = c;
                L.js[pi] = s;
            }
            __syncthreads();
            for (int idx = threadIdx.x; idx < half * f; idx += blockDim.x) {  // rows: T <- J^T T
                const int pi = idx / f, col = idx % f, q = L.jq[pi];
                const float s = L.js[pi];
                if (q < 0 || s == 0.f) continue;
                const int p = L.jp[pi];
                const float c = L.jc[pi], a = T[p * m + col], b = T[q * m + col];
                T[p * m + col] = c * a - s * b;
                T[q * m + col] = s * a + c * b;
            }
            __syncthreads();
            for (int idx = threadIdx.x; idx < half * f; idx += blockDim.x) {  // columns: T <- T J, Y <- Y J
                const int pi = idx / f, r = idx % f, q = L.jq[pi];
                const float s = L.js[pi];
                if (q < 0 || s == 0.f) continue;
                const int p = L.jp[pi];
                const float c = L.jc[pi];
                const float a = T[r * m + p], b = T[r * m + q];
                T[r * m + p] = c * a - s * b;
                T[r * m + q] = s * a + c * b;
                const float ya = Y[r * m + p], yb = Y[r * m + q];
                Y[r * m + p] = c * ya - s * yb;
                Y[r * m + q] = s * ya + c * yb;
            }
            __syncthreads();
        }
    }
    for (int i = threadIdx.x; i < f; i += blockDim.x) L.evals[i] = T[i * m + i];
    __syncthreads();
}

__device__ __forceinline__ float lz_rank_key(float e) { return e == e ? e : -DG_INF; }

// End of a cycle with `filled` basis vectors: Rayleigh-Ritz on H, top Ritz vector v (unit) into
// ROW_TMP and z = dis * v, and the thick restart done in place (rows 1..top <- the top Ritz vectors,
// row top+1 <- q_filled, H <- diag of their Ritz values). Returns mu, the largest Ritz value.
__device__ float lz_cycle_end(const Lz& L, int filled, int top) {
    const int f = filled, m = L.m;
    for (int idx = threadIdx.x; idx < f * f; idx += blockDim.x) {
        const int i = idx / f, j = idx % f;
        L.T[i * m + j] = i <= j ? L.H[i * m + j] : L.H[j * m + i];
    }
    __syncthreads();
    lz_jacobi(L, f);
    const int nsel = max(top, 1);
    // Rank by value, descending, ties by index; NaN ranks as -inf. A strict total order, so the ranks
    // are a permutation and every sel slot is written even when H holds NaN.
    for (int i = threadIdx.x; i < f; i += blockDim.x) {
        const float e = lz_rank_key(L.evals[i]);
        int rank = 0;
        for (int j = 0; j < f; ++j) {
            const float ej = lz_rank_key(L.evals[j]);
            rank += (ej > e) || (ej == e && j < i);
        }
        if (rank < nsel) L.sel[rank] = i;
    }
    __syncthreads();
    const float mu = L.evals[L.sel[0]];
    float* tmp = L.row(LZ_ROW_TMP(L));
    const float* nxt = L.row(f + 1);
    for (int i = threadIdx.x; i < L.n; i += blockDim.x) {  // column i is owned by this thread
        float out[LZ_MAX_KEEP + 1];
#pragma unroll
        for (int t = 0; t <= LZ_MAX_KEEP; ++t) out[t] = 0.f;
        for (int jj = 0; jj < f; ++jj) {
            const float q = L.row(1 + jj)[i];
            const float* yrow = L.Y + jj * m;
            out[0] = fmaf(yrow[L.sel[0]], q, out[0]);
#pragma unroll
            for (int t = 0; t < LZ_MAX_KEEP; ++t)
                if (t < top) out[1 + t] = fmaf(yrow[L.sel[t]], q, out[1 + t]);
        }
        const float next = nxt[i];
#pragma unroll
        for (int t = 0; t < LZ_MAX_KEEP; ++t)
            if (t < top) L.row(1 + t)[i] = out[1 + t];
        L.row(top + 1)[i] = next;
        tmp[i] = out[0];
    }
    for (int idx = threadIdx.x; idx < m * m; idx += blockDim.x) {
        const int i = idx / m, j = idx % m;
        L.H[idx] = (i == j && i < top) ? L.evals[L.sel[i]] : 0.f;
    }
    const float nv = fmaxf(lz_norm(L, tmp), DG_FLT_TINY);
    for (int i = threadIdx.x; i < L.n; i += blockDim.x) {
        const float v = tmp[i] / nv;
        tmp[i] = v;
        L.z[i] = L.dis[i] * v;
    }
    __syncthreads();
    return mu;
}

// ||A v - mu v|| with A v in ROW_Y and v in ROW_TMP.
__device__ float lz_residual(const Lz& L, float mu) {
    const float* y = L.row(LZ_ROW_Y(L));
    const float* v = L.row(LZ_ROW_TMP(L));
    float s = 0.f;
    for (int i = threadIdx.x; i < L.n; i += blockDim.x) {
        const float r = fmaf(-mu, v[i], y[i]);
        s = fmaf(r, r, s);
    }
    return sqrtf(dg_block_sum(s, L.redf));
}

// Outputs of graph b: x = dis * v with the sign of its largest-|.| entry made positive (ties within
// 16 eps of the maximum: lowest index), lam = clamp(1 - mu, 0, 2).
__device__ void lz_finish(const Lz& L, int b, float mu, float res, int steps, float* lam, float* x,
                          float* residual, i64* iterations, unsigned char* converged) {
    float* xb = x + (i64)b * L.N;
    const float* v = L.row(LZ_ROW_TMP(L));
    float mx = 0.f;
    for (int i = threadIdx.x; i < L.N; i += blockDim.x) {
        const float xi = i < L.n ? L.dis[i] * v[i] : 0.f;
        xb[i] = xi;
        mx = fmaxf(mx, fabsf(xi));
    }
    mx = dg_block_max(mx, L.redf);
    const float thr = mx * (1.f - 16.f * DG_FLT_EPS);
    int first = 0x7fffffff;
    for (int i = threadIdx.x; i < L.N; i += blockDim.x)
        if (fabsf(xb[i]) >= thr) first = min(first, i);
    first = dg_block_min(first, L.redi);
    const bool flip = first < L.N && xb[first] < 0.f;
    __syncthreads();
    if (flip)
        for (int i = threadIdx.x; i < L.N; i += blockDim.x) xb[i] = -xb[i];
    if (threadIdx.x == 0) {
        lam[b] = fminf(fmaxf(1.f - mu, 0.f), 2.f);
        residual[b] = res;
        iterations[b] = steps;
        converged[b] = res <= L.tol ? 1 : 0;
    }
}

// Graphs with fewer than two active nodes (nothing to cut): lam = 0, x = 0, residual 0, converged.
__device__ void lz_degenerate(const Lz& L, int b, float* lam, float* x, float* residual, i64* iterations,
                              unsigned char* converged) {
    for (int i = threadIdx.x; i < L.N; i += blockDim.x) x[(i64)b * L.N + i] = 0.f;
    if (threadIdx.x == 0) {
        lam[b] = 0.f;
        residual[b] = 0.f;
        iterations[b] = 0;
        converged[b] = 1;
    }
}

__device__ __forceinline__ Lz lz_context(int b, const i64* sizes, int N, int ldv, int m, int keep, float tol,
                                         float tau, float* V, i64 v_stride_b) {
    Lz L;
    L.N = N;
    L.n = (int)sizes[b];
    L.ldv = ldv;
    L.m = m;
    L.keep = keep;
    L.tol = tol;
    L.tau = tau;
    L.V = V + (i64)b * v_stride_b;
    return L;
}

// ---------------------------------------------------------------------------------------------
// Fused strategy: one block per graph. Dynamic shared memory: z, dis (ldv floats each), H, T, Y
// (m * m floats each) = (2 ldv + 3 m^2) * 4 bytes.
template <typename T>
__device__ void lanczos_fused(const void* W, i64 stride_b, i64 ldw, const i64* sizes, int N, int ldv, int m,
                              int keep, int max_iter, float tol, float tau, float* V, i64 v_stride_b,
                              float* lam, float* x, float* residual, i64* iterations, unsigned char* converged) {
    DG_DYNAMIC_SMEM(float4, lz_dyn_smem);
    DG_SHARED(LzShared, sh);
    const int b = blockIdx.x;
    Lz L = lz_context(b, sizes, N, ldv, m, keep, tol, tau, V, v_stride_b);
    lz_bind_shared(L, sh);
    float* smem = reinterpret_cast<float*>(lz_dyn_smem);
    L.z = smem;
    L.dis = smem + ldv;
    L.H = smem + 2 * ldv;
    L.T = L.H + m * m;
    L.Y = L.T + m * m;
    const typename T::storage* Wb = reinterpret_cast<const typename T::storage*>(W) + (i64)b * stride_b;
    const int warp = threadIdx.x / DG_WARP, nwarps = blockDim.x / DG_WARP;
    float* y = L.row(LZ_ROW_Y(L));

    lz_rows_times<T, true>(Wb, ldw, L.n, nullptr, nullptr, L.dis, 0, L.n, warp, nwarps);
    __syncthreads();
    if (lz_setup(L) < 2 || !lz_fresh(L, 0, L.row(1), 1)) {
        lz_degenerate(L, b, lam, x, residual, iterations, converged);
        return;
    }
    int k = 0, steps = 0, cycle = 0;
    while (true) {
        const int end_j = k + min(m - k, max_iter - steps);
        int filled = k;
        bool nxt_alive = true;
        for (int j = k; j < end_j; ++j) {
            lz_prepare_z(L, L.row(j + 1));
            lz_rows_times<T, false>(Wb, ldw, L.n, L.z, L.dis, y, 0, L.n, warp, nwarps);
            __syncthreads();
            ++steps;
            nxt_alive = lz_expand(L, j);
            filled = j + 1;
            if (!nxt_alive) break;
        }
        const int top = min(keep, filled);
        const float mu = lz_cycle_end(L, filled, top);
        lz_rows_times<T, false>(Wb, ldw, L.n, L.z, L.dis, y, 0, L.n, warp, nwarps);
        __syncthreads();
        const float res = lz_residual(L, mu);
        if (res <= tol || steps >= max_iter) {
            lz_finish(L, b, mu, res, steps, lam, x, residual, iterations, converged);
            return;
        }
        ++cycle;
        k = top;
        if (!nxt_alive && !lz_fresh(L, cycle, L.row(k + 1), k + 1)) {  // nothing left to expand
            lz_finish(L, b, mu, res, steps, lam, x, residual, iterations, converged);
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tiled strategy. Grid (ceil(N / LZ_TILE_ROWS), B), LZ_TILE_THREADS threads: raw degrees of the
// valid rows into ROW_DIS.
template <typename T>
__device__ void lanczos_degrees(const void* W, i64 stride_b, i64 ldw, const i64* sizes, int ldv, int m, float* V,
                                i64 v_stride_b) {
    const int b = blockIdx.y, n = (int)sizes[b];
    const int r0 = blockIdx.x * LZ_TILE_ROWS;
    if (r0 >= n) return;
    const typename T::storage* Wb = reinterpret_cast<const typename T::storage*>(W) + (i64)b * stride_b;
    float* dis = V + (i64)b * v_stride_b + (i64)(m + 5) * ldv;
    lz_rows_times<T, true>(Wb, ldw, n, nullptr, nullptr, dis, r0, min(r0 + LZ_TILE_ROWS, n),
                           threadIdx.x / DG_WARP, blockDim.x / DG_WARP);
}

// Same grid: y = dis * (W z) into ROW_Y for the graphs still running.
template <typename T>
__device__ void lanczos_matvec(const void* W, i64 stride_b, i64 ldw, const i64* sizes, int ldv, int m, float* V,
                               i64 v_stride_b, const int* state) {
    const int b = blockIdx.y, n = (int)sizes[b];
    const int r0 = blockIdx.x * LZ_TILE_ROWS;
    if (r0 >= n || state[b * LZ_STATE_INTS] == LZ_DONE) return;
    const typename T::storage* Wb = reinterpret_cast<const typename T::storage*>(W) + (i64)b * stride_b;
    float* Vb = V + (i64)b * v_stride_b;
    lz_rows_times<T, false>(Wb, ldw, n, Vb + (i64)(m + 4) * ldv, Vb + (i64)(m + 5) * ldv, Vb + (i64)(m + 3) * ldv,
                            r0, min(r0 + LZ_TILE_ROWS, n), threadIdx.x / DG_WARP, blockDim.x / DG_WARP);
}

#define LZ_TILED_PARAMS                                                                                  \
    const i64 *sizes, int N, int ldv, int m, int keep, int max_iter, float tol, float tau, float *V,      \
        i64 v_stride_b, float *Hws, int *state, float *fstate, float *lam, float *x, float *residual,      \
        i64 *iterations, unsigned char *converged

// Binds the tiled context of graph blockIdx.x: z, dis in V rows, H in the workspace, T and Y in
// dynamic shared memory (2 m^2 floats).
__device__ __forceinline__ Lz lz_tiled_context(LzShared& sh, const i64* sizes, int N, int ldv, int m, int keep,
                                               float tol, float tau, float* V, i64 v_stride_b, float* Hws) {
    DG_DYNAMIC_SMEM(float4, lz_dyn_smem);
    const int b = blockIdx.x;
    Lz L = lz_context(b, sizes, N, ldv, m, keep, tol, tau, V, v_stride_b);
    lz_bind_shared(L, sh);
    L.z = L.row(LZ_ROW_Z(L));
    L.dis = L.row(LZ_ROW_DIS(L));
    L.H = Hws + (i64)b * m * m;
    L.T = reinterpret_cast<float*>(lz_dyn_smem);
    L.Y = L.T + m * m;
    return L;
}

// One block per graph, after lanczos_degrees: scaling, u0, start vector, state.
extern "C" __global__ void __launch_bounds__(LZ_THREADS) lanczos_init(LZ_TILED_PARAMS) {
    DG_SHARED(LzShared, sh);
    const int b = blockIdx.x;
    Lz L = lz_tiled_context(sh, sizes, N, ldv, m, keep, tol, tau, V, v_stride_b, Hws);
    int* st = state + b * LZ_STATE_INTS;
    bool ok = lz_setup(L) >= 2;
    ok = ok && lz_fresh(L, 0, L.row(1), 1);
    if (!ok) {
        lz_degenerate(L, b, lam, x, residual, iterations, converged);
        if (threadIdx.x == 0) st[0] = LZ_DONE;
        return;
    }
    lz_prepare_z(L, L.row(1));
    if (threadIdx.x == 0) {
        st[0] = LZ_EXPAND;
        st[1] = 0;                   // k: vectors kept from the last cycle
        st[2] = 0;                   // j: next step
        st[3] = 0;                   // steps
        st[4] = 0;                   // cycle
        st[5] = min(m, max_iter);    // end_j
        st[6] = 1;                   // next vector alive
        st[7] = 0;                   // top
        fstate[b * LZ_STATE_FLOATS] = 0.f;
    }
}

struct LzStepShared {
    int st[LZ_STATE_INTS];  // the graph's state, read once by thread 0..7
    float mu;
};

// One block per graph, after each lanczos_matvec: one Lanczos step, or the residual test of a cycle.
extern "C" __global__ void __launch_bounds__(LZ_THREADS) lanczos_step(LZ_TILED_PARAMS) {
    DG_SHARED(LzShared, sh);
    DG_SHARED(LzStepShared, ss);
    int* s_st = ss.st;
    const int b = blockIdx.x;
    int* st = state + b * LZ_STATE_INTS;
    if (threadIdx.x < LZ_STATE_INTS) s_st[threadIdx.x] = st[threadIdx.x];
    if (threadIdx.x == 0) ss.mu = fstate[b * LZ_STATE_FLOATS];
    __syncthreads();
    int phase = s_st[0];
    if (phase == LZ_DONE) return;
    Lz L = lz_tiled_context(sh, sizes, N, ldv, m, keep, tol, tau, V, v_stride_b, Hws);
    int k = s_st[1], j = s_st[2], steps = s_st[3], cycle = s_st[4], end_j = s_st[5], nxt_alive = s_st[6];
    int top = s_st[7];
    float mu = ss.mu;
    if (phase == LZ_EXPAND) {
        ++steps;
        const bool live = lz_expand(L, j);
        ++j;
        if (live && j < end_j) {
            lz_prepare_z(L, L.row(j + 1));
        } else {
            nxt_alive = live ? 1 : 0;
            top = min(keep, j);
            mu = lz_cycle_end(L, j, top);
            phase = LZ_RESIDUAL;
        }
    } else {
        const float res = lz_residual(L, mu);
        bool finish = res <= tol || steps >= max_iter;
        if (!finish) {
            ++cycle;
            k = top;
            if (!nxt_alive && !lz_fresh(L, cycle, L.row(k + 1), k + 1)) finish = true;
        }
        if (finish) {
            lz_finish(L, b, mu, res, steps, lam, x, residual, iterations, converged);
            phase = LZ_DONE;
        } else {
            j = k;
            end_j = k + min(m - k, max_iter - steps);
            nxt_alive = 1;
            lz_prepare_z(L, L.row(k + 1));
            phase = LZ_EXPAND;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        st[0] = phase; st[1] = k; st[2] = j; st[3] = steps; st[4] = cycle; st[5] = end_j; st[6] = nxt_alive;
        st[7] = top;
        fstate[b * LZ_STATE_FLOATS] = mu;
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points, one per storage dtype of W.
#define LZ_FUSED_PARAMS                                                                                  \
    const void *W, i64 stride_b, i64 ldw, const i64 *sizes, int N, int ldv, int m, int keep, int max_iter, \
        float tol, float tau, float *V, i64 v_stride_b, float *lam, float *x, float *residual,             \
        i64 *iterations, unsigned char *converged
#define LZ_FUSED_ARGS                                                                                    \
    W, stride_b, ldw, sizes, N, ldv, m, keep, max_iter, tol, tau, V, v_stride_b, lam, x, residual,       \
        iterations, converged

#define LZ_INSTANTIATE(SUFFIX, TAG)                                                                      \
    extern "C" __global__ void __launch_bounds__(LZ_THREADS) lanczos_fused_##SUFFIX(LZ_FUSED_PARAMS) {  \
        lanczos_fused<TAG>(LZ_FUSED_ARGS);                                                               \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(LZ_TILE_THREADS) lanczos_degrees_##SUFFIX(              \
        const void* W, i64 stride_b, i64 ldw, const i64* sizes, int ldv, int m, float* V, i64 v_stride_b) { \
        lanczos_degrees<TAG>(W, stride_b, ldw, sizes, ldv, m, V, v_stride_b);                            \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(LZ_TILE_THREADS) lanczos_matvec_##SUFFIX(               \
        const void* W, i64 stride_b, i64 ldw, const i64* sizes, int ldv, int m, float* V, i64 v_stride_b, \
        const int* state) {                                                                              \
        lanczos_matvec<TAG>(W, stride_b, ldw, sizes, ldv, m, V, v_stride_b, state);                      \
    }

LZ_INSTANTIATE(f32, f32_t)
LZ_INSTANTIATE(f16, f16_t)
LZ_INSTANTIATE(bf16, bf16_t)
