// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using Microsoft.ML.Pruning.Native;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners.Common;
using Microsoft.ML.Pruning.Pruners.LayerwiseObs;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners
{
    /// <summary>
    /// Layer-wise Optimal Brain Surgeon (Dong, Chen and Pan, NIPS 2017): prunes every Linear and Conv2d weight matrix
    /// so that the layer still reproduces its outputs on calibration images, compensating each removed weight with
    /// the remaining weights of its output unit; optionally followed by light retraining with the masks fixed.
    /// </summary>
    /// <remarks>
    /// <format type="text/markdown"><![CDATA[
    /// Create it with `mlContext.Transforms.PruneLayerwiseObs(trainedModel, options)` and call `Fit` with calibration
    /// data (the raw data the model takes; with retraining, labelled training data).
    ///
    /// ### Method
    /// For each layer, Ψ = mean of x xᵀ over the inputs x the **unpruned** network gives the layer (convolutions:
    /// every receptive field, unfolded in the weight's (C_in, kh, kw) order; a constant 1 appended for the bias), on
    /// at most <see cref="Options.CalibrationImages"/> images. With H = Ψ + λI, λ = <see cref="Options.Damping"/> × mean(diag Ψ),
    /// and H⁻¹ from a float64 Cholesky factorization:
    ///
    /// * **Saliency.** L_q = w_q² / (2 [H⁻¹]_qq), the increase of the layer error ½(ŵ − w)ᵀΨ(ŵ − w) when weight q
    ///   is removed and its unit compensates (OBS).
    /// * **How much per layer.** <see cref="Options.KeptFraction"/> over all layers, spread by <see cref="Options.Allocation"/>:
    ///   `Global` (default) ranks every weight of every layer by its relative saliency 2L_q / mean_r(w_rᵀΨw_r) — the
    ///   share of an average output unit's energy its removal costs — and keeps the highest, with a floor of a quarter
    ///   of the overall fraction per layer; `Uniform` keeps the same fraction everywhere.
    ///   <see cref="Options.LayerKeptFractions"/> fixes layers by name.
    /// * **Which weights.** L_q ranked once over the layer fixes how many weights each block of
    ///   <see cref="Options.BlockSize"/> input columns loses; a blocked column sweep (OBC/SparseGPT) then removes them,
    ///   re-ranking each block's weights by w_q² / U_qq² (U the Cholesky factor of H⁻¹, i.e. the inverse Hessian of the
    ///   columns not yet fixed) and applying each removal's OBS update to the unit's later columns, lazily per block.
    /// * **Compensation.** With <see cref="Options.ExactReconstruction"/> (default) the kept weights of every unit are
    ///   then solved exactly: the multi-weight OBS update δw = −H⁻¹E_P(E_PᵀH⁻¹E_P)⁻¹w_P, which for a single weight is the
    ///   L-OBS step δw = −(w_q/[H⁻¹]_qq) H⁻¹e_q.
    /// * **Tolerance.** <see cref="Options.ReconstructionTolerance"/> stops a layer early: its weights are removed in
    ///   ascending L_q only while the predicted relative error Σ 2L_q / Σ_r w_rᵀΨw_r stays within it.
    /// * Batch-norm running statistics are re-estimated on the calibration images afterwards.
    ///
    /// Pruning LeNet-300-100 takes well under a second on two cores (the layer statistics dominate). Sparse weights do
    /// not make CPU inference faster; the saved model is smaller.
    /// ]]></format>
    /// </remarks>
    public sealed class LayerwiseObsPruner : PruningEstimatorBase
    {
        /// <summary>Options of <see cref="LayerwiseObsPruner"/>; the field initializers are the defaults.</summary>
        public sealed class Options : WeightPruningOptions
        {
            /// <summary>How <see cref="WeightPruningOptions.KeptFraction"/> is spread over layers. Default: <see cref="LayerAllocation.Global"/> (by relative OBS saliency).</summary>
            public LayerAllocation Allocation = LayerAllocation.Global;

            /// <summary>
            /// Damping λ added to Ψ's diagonal, relative to the mean of that diagonal; must be positive. Default: 0.1
            /// (measured best on LeNet-300-100/Fashion-MNIST among 1e-5…1; the paper's absolute 1e-6 is the weak end).
            /// </summary>
            public double Damping = 0.1;

            /// <summary>Calibration images Ψ is computed on, a seeded random subset of the data when it has more. Default: 5,000.</summary>
            public int CalibrationImages = 5000;

            /// <summary>
            /// For convolutions: at most this many receptive fields per layer enter Ψ; beyond it, positions are sampled at
            /// random per batch (the paper's code subsamples by striding). Default: 2,000,000.
            /// </summary>
            public long MaxPatchesPerLayer = 2_000_000;

            /// <summary>Columns per block of the sweep (the lazy-update granularity). Default: 128.</summary>
            public int BlockSize = 128;

            /// <summary>Solve each unit's kept weights exactly after the sweep (see the remarks). Default: true.</summary>
            public bool ExactReconstruction = true;

            /// <summary>
            /// When set, a layer keeps more weights than its share if pruning them would take its predicted relative
            /// reconstruction error ‖(Ŵ−W)X‖²/‖WX‖² past this value. Default: null (prune to the kept fraction).
            /// </summary>
            public double? ReconstructionTolerance;

            /// <summary>Re-estimate batch-norm running statistics on the calibration images after pruning. Default: true.</summary>
            public bool RecalibrateBatchNorm = true;

            internal override void Validate()
            {
                base.Validate();
                if (!Enum.IsDefined(Allocation))
                    throw new ArgumentOutOfRangeException(nameof(Allocation), Allocation, "Unknown allocation.");
                Require(double.IsFinite(Damping) && Damping > 0, nameof(Damping), Damping, "must be a positive number");
                Require(CalibrationImages >= 1, nameof(CalibrationImages), CalibrationImages, "must be at least 1");
                Require(MaxPatchesPerLayer >= 1, nameof(MaxPatchesPerLayer), MaxPatchesPerLayer, "must be at least 1");
                Require(BlockSize >= 1, nameof(BlockSize), BlockSize, "must be at least 1");
                if (ReconstructionTolerance is double tolerance)
                    Require(double.IsFinite(tolerance) && tolerance >= 0, nameof(ReconstructionTolerance), tolerance, "must be zero or positive");
            }
        }

        private readonly Options _options;

        internal LayerwiseObsPruner(IHostEnvironment env, ITransformer trainedModel, Options options)
            : base(env, trainedModel, options, "lobs")
        {
            _options = options;
        }

        private protected override PruningMask Prune(PruningContext context)
        {
            IReadOnlyList<PrunableLayer> layers = context.Layers;
            var mask = new PruningMask();
            try
            {
                using var generator = new Generator((ulong)context.Seed);
                using Tensor images = context.SampleImages(_options.CalibrationImages);
                context.CalibrationImages = images.shape[0];
                using LayerInputStatistics statistics = LayerInputStatistics.Collect(context.Network, layers, images, _options.MaxPatchesPerLayer,
                    generator, context.CancellationToken);

                var factors = new LayerFactors[layers.Count];
                try
                {
                    for (int i = 0; i < layers.Count; i++)
                    {
                        Tensor psi = statistics.Psi(i);
                        try
                        {
                            factors[i] = LayerFactors.Create(layers[i], psi, _options.Damping, context.Channel);
                        }
                        catch
                        {
                            psi.Dispose();
                            throw;
                        }
                    }
                    long[] keptCounts = KeptFractionAllocator.Allocate(layers, _options.KeptFraction, _options.LayerKeptFractions, _options.Allocation,
                        i => factors[i].RelativeSaliency);
                    for (int i = 0; i < layers.Count; i++)
                    {
                        context.CancellationToken.ThrowIfCancellationRequested();
                        context.Results.Add(PruneLayer(layers[i], factors[i], keptCounts[i], mask));
                    }
                }
                finally
                {
                    foreach (LayerFactors? f in factors)
                        f?.Dispose();
                }
                if (_options.RecalibrateBatchNorm)
                    BatchNormRecalibration.Run(context.Network, images, context.CancellationToken);
                return mask;
            }
            catch
            {
                mask.Dispose();
                throw;
            }
        }

        private LayerPruningResult PruneLayer(PrunableLayer layer, LayerFactors factors, long keptCount, PruningMask mask)
        {
            var clock = Stopwatch.StartNew();
            using var scope = NewDisposeScope();
            int prunable = (int)layer.Columns;
            long pruneCount = layer.Count - keptCount;
            if (_options.ReconstructionTolerance is double tolerance)
                pruneCount = Math.Min(pruneCount, factors.PrunableWithin(tolerance));
            using var noGrad = no_grad();
            Tensor original = factors.Weight;
            using ObsLayerSolution solution = ObsColumnSweep.Prune(factors.Hessian, factors.Inverse, original, prunable, pruneCount,
                _options.BlockSize, _options.ExactReconstruction);

            Tensor weight = solution.Weight.narrow(1, 0, prunable).to(float32);
            Tensor kept = solution.Kept.view(layer.Weight.shape).to(layer.Weight.device);
            layer.Weight.copy_(weight.view(layer.Weight.shape));
            layer.Weight.masked_fill_(kept.logical_not(), HeldScalars.Of(0));
            layer.Bias?.copy_(solution.Weight.select(1, prunable).to(float32));
            mask.Set(layer.WeightName, kept);

            Tensor change = solution.Weight.sub(original);
            double error = change.matmul(factors.Psi).mul(change).sum().item<double>() / Math.Max(factors.Energy, double.Epsilon);
            return new LayerPruningResult(layer.Path, layer.Count, kept.count_nonzero().item<long>(), error, clock.Elapsed);
        }

        /// <summary>Ψ, the damped Hessian, its inverse and the saliencies of one layer.</summary>
        private sealed class LayerFactors : IDisposable
        {
            private LayerFactors(Tensor weight, Tensor psi, Tensor hessian, Tensor inverse, Tensor relativeSaliency, double energy)
            {
                Weight = weight;
                Psi = psi;
                Hessian = hessian;
                Inverse = inverse;
                RelativeSaliency = relativeSaliency;
                Energy = energy;
            }

            /// <summary>[rows, d] float64: the weights as a matrix, the bias as the last column.</summary>
            public Tensor Weight { get; }

            public Tensor Psi { get; }

            public Tensor Hessian { get; }

            public Tensor Inverse { get; }

            /// <summary>2L_q / mean_r(w_rᵀΨw_r) per prunable weight, [rows, columns].</summary>
            public Tensor RelativeSaliency { get; }

            /// <summary>Σ_r w_rᵀΨw_r: the layer's output energy per calibration input.</summary>
            public double Energy { get; }

            /// <summary>Factors <paramref name="psi"/> (which the result then owns) for <paramref name="layer"/>.</summary>
            public static LayerFactors Create(PrunableLayer layer, Tensor psi, double damping, IChannel channel)
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                long rows = layer.Rows, columns = layer.Columns;
                Tensor weight = layer.Weight.detach().reshape(rows, columns).to(float64);
                if (layer.Bias is not null)
                    weight = cat(new[] { weight, layer.Bias.detach().to(float64).unsqueeze(1) }, 1);

                double meanDiagonal = psi.diagonal().mean().item<double>();
                double lambda = damping * (meanDiagonal > 0 ? meanDiagonal : 1);
                Tensor hessian = null!, factor = null!;
                for (int attempt = 0; ; attempt++)
                {
                    using Scalar diagonalShift = lambda.ToScalar();
                    hessian = psi.add(eye(psi.shape[0], dtype: float64, device: psi.device).mul_(diagonalShift));
                    var (lower, info) = linalg.cholesky_ex(hessian);
                    if (info.max().item<int>() == 0)
                    {
                        factor = lower;
                        break;
                    }
                    if (attempt == 8)
                        throw new InvalidOperationException($"The input statistics of layer '{layer.Path}' are not positive definite even with damping {lambda:G3}; the calibration data may hold non-finite activations.");
                    lambda *= 10;
                    channel.Warning($"Layer '{layer.Path}': Ψ + λI is not positive definite in float64; retrying with λ = {lambda:G3}.");
                }
                Tensor inverse = cholesky_inverse(factor);
                Tensor unitEnergy = weight.matmul(psi).mul(weight).sum(1);
                double energy = unitEnergy.sum().item<double>();
                double meanUnitEnergy = Math.Max(energy / rows, double.Epsilon);
                using Scalar energyScale = meanUnitEnergy.ToScalar();
                Tensor relative = weight.narrow(1, 0, columns).square().div(inverse.diagonal().narrow(0, 0, columns).unsqueeze(0)).div_(energyScale);
                return new LayerFactors(weight.MoveToOuterDisposeScope(), psi, hessian.MoveToOuterDisposeScope(),
                    inverse.MoveToOuterDisposeScope(), relative.MoveToOuterDisposeScope(), energy);
            }

            /// <summary>How many weights, removed in ascending saliency, keep the predicted relative error within <paramref name="tolerance"/>.</summary>
            public long PrunableWithin(double tolerance)
            {
                using var scope = NewDisposeScope();
                long rows = Weight.shape[0];
                // 2L_q / Σ_r w_rᵀΨw_r = RelativeSaliency / rows.
                var (ascending, _) = RelativeSaliency.flatten().sort();
                using Scalar rowCount = rows.ToScalar(), bound = tolerance.ToScalar();
                Tensor cumulative = ascending.div(rowCount).cumsum(0);
                return cumulative.le(bound).sum().item<long>();
            }

            public void Dispose()
            {
                Weight.Dispose();
                Psi.Dispose();
                Hessian.Dispose();
                Inverse.Dispose();
                RelativeSaliency.Dispose();
            }
        }
    }
}
