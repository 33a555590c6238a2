// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners
{
    /// <summary>How <see cref="SynapticStrengthPruner"/> ranks the connections (input→output kernels) of a convolution.</summary>
    public enum KernelCriterion
    {
        /// <summary>Synaptic Strength (Lin et al., NeurIPS 2018): each kernel written as <c>s · K̂</c> with <c>‖K̂‖ = 1</c> and
        /// the batch-norm scale of the layer that produces its input folded in; <c>s</c> is trained with an L1 penalty
        /// (<see cref="SynapticStrengthPruner.Options.Lambda"/>) and ranks the connection.</summary>
        SynapticStrength,

        /// <summary>The L1 norm of the kernel, Σ|K[o,i]| of the trained weights (Mao et al., "Exploring the Regularity of
        /// Sparse Structure in Convolutional Neural Networks", 2017), without sparsity training: the baseline.</summary>
        KernelNorm,
    }

    /// <summary>
    /// One kernel-importance criterion: a score per connection of a convolution, [out, in], higher meaning more important.
    /// A new criterion is one small subclass, as for <see cref="ChannelImportance"/>.
    /// </summary>
    internal abstract class KernelImportance
    {
        /// <summary>The name benchmark rows and reports use (<c>synaptic</c>, <c>kernel-norm</c>).</summary>
        public abstract string Name { get; }

        /// <summary>Whether the criterion trains the network first (sparsity training of the strengths).</summary>
        public virtual bool TrainsStrengths => false;

        /// <summary>Scores [out, in] (float64) of the convolution whose weight [out, in, k, k] is <paramref name="weight"/>;
        /// the tensor belongs to the caller's dispose scope.</summary>
        public abstract Tensor Score(Tensor weight);

        public static KernelImportance For(KernelCriterion criterion) => criterion switch
        {
            KernelCriterion.SynapticStrength => new SynapticStrengthImportance(),
            KernelCriterion.KernelNorm => new KernelNormImportance(),
            _ => throw new ArgumentOutOfRangeException(nameof(criterion), criterion, "Unknown kernel criterion."),
        };
    }

    /// <summary>
    /// The synaptic strength <c>s[o,i]</c>. After the re-parametrization (<see cref="SynapticStrength.SynapticStrengthParametrization"/>)
    /// the network's kernel is <c>s · K̂</c> with the producer's batch-norm scale folded in, so the strength is the Frobenius
    /// norm of that kernel; before any sparsity training it is <c>|γ_i| · ‖K[o,i]‖</c>.
    /// </summary>
    internal sealed class SynapticStrengthImportance : KernelImportance
    {
        public override string Name => "synaptic";

        public override bool TrainsStrengths => true;

        public override Tensor Score(Tensor weight) => weight.detach().to_type(ScalarType.Float64).square().sum(new long[] { 2, 3 }).sqrt();
    }

    /// <summary>Mao et al.: the L1 norm of the kernel.</summary>
    internal sealed class KernelNormImportance : KernelImportance
    {
        public override string Name => "kernel-norm";

        public override Tensor Score(Tensor weight) => weight.detach().to_type(ScalarType.Float64).abs().sum(new long[] { 2, 3 });
    }
}
