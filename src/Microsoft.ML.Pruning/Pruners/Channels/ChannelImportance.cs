// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners
{
    /// <summary>How <see cref="ChannelPruner"/> ranks the channels of a group.</summary>
    public enum ChannelCriterion
    {
        /// <summary>L1 norm of the filters that write the channel, summed over the group's producing layers (Li et al.,
        /// "Pruning Filters for Efficient ConvNets", ICLR 2017). Layer-by-layer (uniform) allocation by default; for a global
        /// ranking each group's norms are divided by their mean, so that layers of different fan-in compare.</summary>
        L1Norm,

        /// <summary>The batch-norm scale |γ| of the channel, averaged over the group's batch norms (network slimming, Liu et
        /// al., ICCV 2017). Train with <c>ImageClassifierTrainer.Options.BatchNormScaleL1</c> first, so that unimportant
        /// channels have scales near zero. Groups without batch norm keep their channels. Global allocation by default (one
        /// threshold over all layers, as the paper).</summary>
        BatchNormScale,

        /// <summary>Channels chosen at random (seeded by the MLContext): the control the other criteria must beat.</summary>
        Random,
    }

    /// <summary>
    /// One channel-importance criterion: a score per channel of a group, higher meaning more important. A new criterion
    /// is one small subclass (Torch-Pruning keeps its importances the same way).
    /// </summary>
    internal abstract class ChannelImportance
    {
        /// <summary>The name benchmark rows and reports use (<c>l1</c>, <c>bn-scale</c>, <c>random</c>).</summary>
        public abstract string Name { get; }

        /// <summary>How the criterion spreads a target over the layers when the options do not say.</summary>
        public virtual LayerAllocation DefaultAllocation => LayerAllocation.Uniform;

        /// <summary>Scores of the group's channels, or null when this criterion cannot rank the group (it then keeps its channels).</summary>
        public abstract double[]? Score(ChannelGroup group, IReadOnlyDictionary<string, Tensor> state);

        public static ChannelImportance For(ChannelCriterion criterion, int seed) => criterion switch
        {
            ChannelCriterion.L1Norm => new L1FilterImportance(),
            ChannelCriterion.BatchNormScale => new BatchNormScaleImportance(),
            ChannelCriterion.Random => new RandomImportance(seed),
            _ => throw new ArgumentOutOfRangeException(nameof(criterion), criterion, "Unknown channel criterion."),
        };

        /// <summary>Σ over the rows of <paramref name="weight"/> (dimension 0) of |w|, as doubles.</summary>
        protected static double[] RowL1(Tensor weight)
        {
            using var scope = NewDisposeScope();
            return weight.detach().to_type(ScalarType.Float64).abs().reshape(weight.shape[0], -1).sum(1).cpu().data<double>().ToArray();
        }
    }

    /// <summary>Li et al.: Σ|W| of the filters that write the channel, over every producer of the group, divided by the
    /// group's mean so that a global ranking compares layers of different fan-in.</summary>
    internal sealed class L1FilterImportance : ChannelImportance
    {
        public override string Name => "l1";

        public override double[]? Score(ChannelGroup group, IReadOnlyDictionary<string, Tensor> state)
        {
            var scores = new double[group.Channels];
            foreach (ChannelMember producer in group.Producers)
            {
                double[] norms = RowL1(state[producer.Path + ".weight"]);
                for (int c = 0; c < scores.Length; c++)
                    scores[c] += norms[c];
            }
            double mean = scores.Average();
            return mean > 0 ? scores.Select(s => s / mean).ToArray() : scores;
        }
    }

    /// <summary>Network slimming: |γ| of the channel's batch norms, averaged over the group's batch norms.</summary>
    internal sealed class BatchNormScaleImportance : ChannelImportance
    {
        public override string Name => "bn-scale";

        public override LayerAllocation DefaultAllocation => LayerAllocation.Global;

        public override double[]? Score(ChannelGroup group, IReadOnlyDictionary<string, Tensor> state)
        {
            var norms = group.BatchNorms.ToList();
            if (norms.Count == 0)
                return null;
            var scores = new double[group.Channels];
            foreach (ChannelMember norm in norms)
            {
                using var scope = NewDisposeScope();
                double[] gamma = state[norm.Path + ".weight"].detach().to_type(ScalarType.Float64).abs().cpu().data<double>().ToArray();
                for (int c = 0; c < scores.Length; c++)
                    scores[c] += gamma[c] / norms.Count;
            }
            return scores;
        }
    }

    /// <summary>Uniform random scores, the same for the same seed and group.</summary>
    internal sealed class RandomImportance : ChannelImportance
    {
        private readonly int _seed;

        public RandomImportance(int seed) => _seed = seed;

        public override string Name => "random";

        public override double[]? Score(ChannelGroup group, IReadOnlyDictionary<string, Tensor> state)
        {
            // A stable hash of the name (string.GetHashCode is randomized per process).
            int hash = group.Name.Aggregate(17, (h, c) => unchecked(h * 31 + c));
            var random = new Random(unchecked(_seed * 7919 + hash));
            return Enumerable.Range(0, group.Channels).Select(_ => random.NextDouble()).ToArray();
        }
    }
}
