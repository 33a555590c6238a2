// Licensed under the MIT license.

using System;
using System.Linq;
using Microsoft.ML.Pruning.Pruners.LayerwiseObs;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Pruners
{
    [TestClass]
    public sealed class ObsColumnSweepTests
    {
        // Four inputs of a 3-input, 1-output layer without bias: XᵀX = [[6,1,-1],[1,2,1],[-1,1,3]], det 23,
        // so Ψ = XᵀX/4 and [Ψ⁻¹]_qq = 4·(5, 17, 11)/23.
        private static readonly double[,] s_inputs = { { 1, 0, 1 }, { 0, 1, 1 }, { 1, 1, 0 }, { 2, 0, -1 } };

        [TestMethod]
        public void OneObsStepZeroesTheLeastSalientWeightAndRaisesTheErrorByTheFormula()
        {
            double[] w = { 0.5, -0.05, 0.3 };
            double[,] psi = Psi();
            double[,] inverse = Inverse3(psi);
            Assert.AreEqual(4.0 * 17 / 23, inverse[1, 1], 1e-12, "hand-checked [Ψ⁻¹]_11");

            double[] saliency = Enumerable.Range(0, 3).Select(q => w[q] * w[q] / (2 * inverse[q, q])).ToArray();
            int expected = Array.IndexOf(saliency, saliency.Min());
            Assert.AreEqual(1, expected);

            double[] pruned = Prune(w, psi, exact: true);
            Assert.AreEqual(0.0, pruned[expected], "the chosen weight is exactly zero");
            Assert.AreEqual(2, pruned.Count(v => v != 0), "only one weight is pruned");

            // The L-OBS update of the unit: δw = −(w_q / [Ψ⁻¹]_qq) Ψ⁻¹ e_q.
            for (int i = 0; i < 3; i++)
                Assert.AreEqual(w[i] - w[expected] / inverse[expected, expected] * inverse[i, expected], pruned[i], 1e-12, $"weight {i}");

            // E = (1/2n) Σ_j ((ŵ − w)ᵀ x_j)²: it was 0 before pruning and rises by exactly L_q.
            Assert.AreEqual(saliency[expected], ReconstructionError(w, pruned), 1e-12);
        }

        [TestMethod]
        public void TheSweepAloneIsExactObsForTheFirstColumn()
        {
            double[] w = { 0.02, 0.4, -0.3 };
            double[,] psi = Psi();
            double[,] inverse = Inverse3(psi);
            double[] pruned = Prune(w, psi, exact: false);
            Assert.AreEqual(0.0, pruned[0]);
            Assert.AreEqual(w[0] * w[0] / (2 * inverse[0, 0]), ReconstructionError(w, pruned), 1e-12);
        }

        [TestMethod]
        public void ExactReconstructionIsTheLeastSquaresFitOfTheKeptWeights()
        {
            // 3 units, 6 inputs, random data: the solution must satisfy the normal equations on the kept set.
            var generator = new Generator(7);
            using var scope = NewDisposeScope();
            Tensor x = randn(new long[] { 200, 6 }, dtype: float64, generator: generator);
            Tensor h = x.mT.matmul(x).div(200);
            Tensor w = randn(new long[] { 3, 6 }, dtype: float64, generator: generator);
            foreach (long pruneCount in new long[] { 4, 14 })
            {
                using ObsLayerSolution solution = ObsColumnSweep.Prune(h, cholesky_inverse(linalg.cholesky(h)), w, 6, pruneCount, 4, exactReconstruction: true);
                Assert.AreEqual(18 - pruneCount, solution.Kept.count_nonzero().item<long>());
                Tensor gradient = solution.Weight.sub(w).matmul(h);
                Tensor onKept = gradient.masked_select(solution.Kept);
                Assert.IsLessThan(1e-10, onKept.abs().max().item<double>(), $"normal equations, {pruneCount} pruned");
                Assert.AreEqual(0, solution.Weight.masked_select(solution.Kept.logical_not()).count_nonzero().item<long>());
            }
        }

        private static double[] Prune(double[] w, double[,] psi, bool exact)
        {
            using var scope = NewDisposeScope();
            Tensor h = tensor(psi.Cast<double>().ToArray(), new long[] { 3, 3 });
            Tensor weight = tensor(w, new long[] { 1, 3 });
            using ObsLayerSolution solution = ObsColumnSweep.Prune(h, cholesky_inverse(linalg.cholesky(h)), weight, 3, 1, 128, exact);
            return solution.Weight.data<double>().ToArray();
        }

        private static double[,] Psi()
        {
            var psi = new double[3, 3];
            for (int j = 0; j < 4; j++)
                for (int a = 0; a < 3; a++)
                    for (int b = 0; b < 3; b++)
                        psi[a, b] += s_inputs[j, a] * s_inputs[j, b] / 4;
            return psi;
        }

        private static double ReconstructionError(double[] before, double[] after)
        {
            double sum = 0;
            for (int j = 0; j < 4; j++)
            {
                double dz = 0;
                for (int i = 0; i < 3; i++)
                    dz += (after[i] - before[i]) * s_inputs[j, i];
                sum += dz * dz;
            }
            return sum / (2 * 4);
        }

        /// <summary>The inverse of a 3×3 matrix by cofactors, independent of torch.</summary>
        private static double[,] Inverse3(double[,] m)
        {
            double det = m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1])
                - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
                + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]);
            var inverse = new double[3, 3];
            for (int i = 0; i < 3; i++)
            {
                for (int j = 0; j < 3; j++)
                {
                    int r0 = (j + 1) % 3, r1 = (j + 2) % 3, c0 = (i + 1) % 3, c1 = (i + 2) % 3;
                    inverse[i, j] = (m[r0, c0] * m[r1, c1] - m[r0, c1] * m[r1, c0]) / det;
                }
            }
            return inverse;
        }
    }
}
