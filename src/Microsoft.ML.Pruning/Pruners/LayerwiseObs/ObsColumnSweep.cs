// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.LayerwiseObs
{
    /// <summary>The pruned weights of one layer and which of them were kept.</summary>
    internal sealed class ObsLayerSolution : IDisposable
    {
        public ObsLayerSolution(Tensor weight, Tensor kept)
        {
            Weight = weight;
            Kept = kept;
        }

        /// <summary>[rows, columns] float64, the bias (if any) as the last column; pruned weights are +0.</summary>
        public Tensor Weight { get; }

        /// <summary>[rows, prunable columns] boolean, true where a weight is kept.</summary>
        public Tensor Kept { get; }

        public void Dispose()
        {
            Weight.Dispose();
            Kept.Dispose();
        }
    }

    /// <summary>
    /// Layer-wise OBS for all output units of a layer at once. The Hessian of the layer's reconstruction error is the
    /// same d×d block Ψ for every unit (Dong et al. 2017), so one Cholesky factorization serves all rows:
    /// <list type="number">
    /// <item>H = Ψ + λI in float64, H⁻¹ by Cholesky, and the L-OBS sensitivity L_q = w_q² / (2[H⁻¹]_qq) of every weight,
    /// ranked once over the whole layer; the number of weights to prune in each block of columns is taken from that ranking,
    /// so blocks of informative inputs keep more.</item>
    /// <item>A blocked column sweep (OBC/SparseGPT): with U the upper Cholesky factor of H⁻¹, column i's row of U is the
    /// OBS update direction after columns 0..i−1 are fixed. At the start of each block the block's weights are ranked
    /// again by w_q² / U_qq² with the weights as compensated so far, the block's count is pruned, each pruned weight is
    /// removed with the OBS update of the remaining columns of its unit, and the updates reach later blocks lazily
    /// as one matrix product per block.</item>
    /// <item>Optionally, exact reconstruction: per unit, the kept weights that minimize the layer error exactly,
    /// which is the OBS compensation by all remaining weights of the unit, δw = −H⁻¹E_P (E_Pᵀ H⁻¹ E_P)⁻¹ w_P. The sweep
    /// compensates only into later columns; this step removes that restriction (for one pruned weight it gives the
    /// L-OBS step exactly: Δerror = w_q² / (2[H⁻¹]_qq)).</item>
    /// </list>
    /// </summary>
    internal static class ObsColumnSweep
    {
        // Bound on the elements of the batched systems of the exact reconstruction (float64: 32 MB).
        private const long SystemElements = 4_000_000;

        /// <summary>Prunes <paramref name="pruneCount"/> of the first <paramref name="prunableColumns"/> columns of <paramref name="weight"/>.</summary>
        /// <param name="hessian">The damped Hessian H = Ψ + λI, [d, d].</param>
        /// <param name="inverse">H⁻¹, [d, d] float64.</param>
        /// <param name="weight">The layer's weights as [rows, d]; columns past <paramref name="prunableColumns"/> (the bias) are never pruned.</param>
        /// <param name="prunableColumns">Prunable columns (d, or d − 1 with a bias column).</param>
        /// <param name="pruneCount">Weights to prune in the layer.</param>
        /// <param name="blockSize">Columns per block of the sweep.</param>
        /// <param name="exactReconstruction">Whether to solve the kept weights exactly after the sweep.</param>
        public static ObsLayerSolution Prune(Tensor hessian, Tensor inverse, Tensor weight, int prunableColumns, long pruneCount, int blockSize,
            bool exactReconstruction)
        {
            using var scope = NewDisposeScope();
            long rows = weight.shape[0], d = weight.shape[1];
            int p = prunableColumns;
            Tensor original = weight.to(float64);
            Tensor upper = linalg.cholesky(inverse).mT.contiguous();

            // Static L-OBS ranking over the layer → how many weights each block prunes.
            Tensor sensitivity = original.narrow(1, 0, p).square().div(inverse.diagonal().narrow(0, 0, p).unsqueeze(0));
            long[] blockCounts = BlockCounts(sensitivity, pruneCount, blockSize);

            Tensor w = original.clone();
            Tensor kept = ones(rows, p, dtype: @bool);
            for (int block = 0, b1 = 0; b1 < p; block++, b1 += blockSize)
            {
                using var blockScope = NewDisposeScope();
                int n = Math.Min(blockSize, p - b1);
                Tensor u1 = upper.narrow(0, b1, n).narrow(1, b1, n);
                Tensor w1 = w.narrow(1, b1, n);
                Tensor prune1 = zeros(rows * n, dtype: @bool);
                if (blockCounts[block] > 0)
                {
                    Tensor saliency = w1.square().div(u1.diagonal().square().unsqueeze(0));
                    var (_, lowest) = saliency.flatten().topk((int)blockCounts[block], largest: false, sorted: false);
                    prune1.index_fill_(0, lowest, HeldScalars.Of(true));
                }
                prune1 = prune1.view(rows, n);
                kept.narrow(1, b1, n).copy_(prune1.logical_not());

                // Within the block, column by column on the CPU: a few hundred tiny updates cost less there than as torch ops.
                double[] wb = w1.cpu().contiguous().data<double>().ToArray();
                double[] ub = u1.cpu().contiguous().data<double>().ToArray();
                bool[] pb = prune1.cpu().contiguous().data<bool>().ToArray();
                var eb = new double[rows * n];
                for (long r = 0; r < rows; r++)
                {
                    long o = r * n;
                    for (int i = 0; i < n; i++)
                    {
                        if (!pb[o + i])
                            continue;
                        double e = wb[o + i] / ub[i * n + i];
                        eb[o + i] = e;
                        for (int j = i; j < n; j++)
                            wb[o + j] -= e * ub[i * n + j];
                        wb[o + i] = 0;
                    }
                }
                w1.copy_(tensor(wb, new long[] { rows, n }));
                if (b1 + n < d)
                {
                    Tensor errors = tensor(eb, new long[] { rows, n }).to(w.device);
                    w.narrow(1, b1 + n, d - b1 - n).sub_(errors.matmul(upper.narrow(0, b1, n).narrow(1, b1 + n, d - b1 - n)));
                }
            }

            if (exactReconstruction)
                w = Reconstruct(hessian, inverse, original, kept);
            w.narrow(1, 0, p).masked_fill_(kept.logical_not(), HeldScalars.Of(0));
            return new ObsLayerSolution(w.MoveToOuterDisposeScope(), kept.MoveToOuterDisposeScope());
        }

        /// <summary>
        /// The weights that minimize (ŵ − w)ᵀH(ŵ − w) per row with the pruned ones held at zero. Solved on whichever
        /// set is smaller: the kept set, ŵ_K = H_KK⁻¹ (H w)_K, or the pruned set, ŵ = w − H⁻¹_{:,P} (H⁻¹_PP)⁻¹ w_P.
        /// </summary>
        public static Tensor Reconstruct(Tensor hessian, Tensor inverse, Tensor original, Tensor kept)
        {
            using var scope = NewDisposeScope();
            long rows = original.shape[0], d = original.shape[1], p = kept.shape[1];
            Tensor keptAll = p == d ? kept : cat(new[] { kept, ones(rows, d - p, dtype: @bool, device: kept.device) }, 1);
            long maxKept = keptAll.sum(1).max().item<long>();
            long maxPruned = keptAll.logical_not().sum(1).max().item<long>();
            if (maxPruned == 0)
                return original.clone().MoveToOuterDisposeScope();
            bool solveKept = maxKept <= maxPruned;
            Tensor selected = solveKept ? keptAll : keptAll.logical_not();
            long k = solveKept ? maxKept : maxPruned;
            Tensor matrix = (solveKept ? hessian : inverse).flatten();
            Tensor rightHandSide = solveKept ? original.matmul(hessian) : original;

            // Per row, the selected columns first (stable order); rows with fewer get distinct unselected columns as padding,
            // whose equations become x = 0 so that the scatter below writes zeros there.
            var (sortedFlags, order) = selected.to(int32).sort(1, descending: true, stable: true);
            Tensor solution = zeros(rows, d, dtype: float64, device: original.device);
            long chunk = Math.Max(1, SystemElements / Math.Max(1, k * k));
            using Scalar columnCount = d.ToScalar();
            for (long r0 = 0; r0 < rows; r0 += chunk)
            {
                using var chunkScope = NewDisposeScope();
                long r = Math.Min(chunk, rows - r0);
                Tensor index = order.narrow(0, r0, r).narrow(1, 0, k);
                Tensor valid = sortedFlags.narrow(0, r0, r).narrow(1, 0, k).to(float64);
                Tensor system = matrix.index_select(0, index.unsqueeze(2).mul(columnCount).add(index.unsqueeze(1)).flatten()).view(r, k, k);
                system = system.mul(valid.unsqueeze(2).mul(valid.unsqueeze(1))).add_(diag_embed(valid.neg().add(HeldScalars.Of(1))));
                Tensor b = rightHandSide.narrow(0, r0, r).gather(1, index).mul(valid).unsqueeze(2);
                Tensor x = cholesky_solve(b, linalg.cholesky(system)).squeeze(2).mul(valid);
                solution.narrow(0, r0, r).scatter_(1, index, x);
            }
            if (solveKept)
                return solution.MoveToOuterDisposeScope();
            // The pruned set's multipliers x give the update −x·H⁻¹ (H⁻¹ is symmetric).
            return original.sub(solution.matmul(inverse)).MoveToOuterDisposeScope();
        }

        private static long[] BlockCounts(Tensor sensitivity, long pruneCount, int blockSize)
        {
            long rows = sensitivity.shape[0], p = sensitivity.shape[1];
            int blocks = (int)((p + blockSize - 1) / blockSize);
            var counts = new long[blocks];
            if (pruneCount <= 0)
                return counts;
            using var scope = NewDisposeScope();
            var (_, lowest) = sensitivity.flatten().topk((int)pruneCount, largest: false, sorted: false);
            using Scalar columnCount = p.ToScalar(), columnsPerBlock = blockSize.ToScalar();
            long[] columns = lowest.remainder(columnCount).div(columnsPerBlock, rounding_mode: RoundingMode.floor).bincount(null, blocks).to(int64).data<long>().ToArray();
            Array.Copy(columns, counts, blocks);
            return counts;
        }
    }
}
