// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using Microsoft.ML.Pruning.Native;
using Microsoft.ML.Pruning.Pruners.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.Attentive
{
    /// <summary>
    /// Biparva and Tsotsos's criterion: a connection matters as much as the top-down attention selected it — its gating
    /// mass or its hit count over the calibration images. Ties (connections never selected) are broken by |w|; weights
    /// already pruned rank below every other.
    /// </summary>
    internal static class AttentiveImportance
    {
        /// <summary>The score of every weight of layer <paramref name="index"/>, float64, weight-shaped (the caller owns the tensor).</summary>
        /// <param name="attention">The top-down statistics.</param>
        /// <param name="index">The layer's position in the prunable layers.</param>
        /// <param name="layer">The layer.</param>
        /// <param name="score">Mass or hits.</param>
        /// <param name="relative">Divide by the layer's total score — each connection's share of its layer's attention — for one global threshold.</param>
        public static Tensor Scores(TopDownAttention attention, int index, PrunableLayer layer, AttentionScore score, bool relative)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            Tensor magnitude = layer.Weight.detach().abs().to(float64);
            Tensor pruned = magnitude.eq(HeldScalars.Of(0));
            Tensor s = (score switch
            {
                AttentionScore.Hits => attention.Hits(index),
                AttentionScore.Flow => attention.Flow(index),
                _ => attention.Mass(index),
            }).clone();
            if (score == AttentionScore.MassMagnitude)
                s.mul_(magnitude);
            else if (score == AttentionScore.BoostedMagnitude)
            {
                // The mean over the connections still there: weights pruned in earlier rounds carry no mass, and counting
                // them would raise every boost round after round until the score ranks like mass × |w|.
                Tensor remaining = pruned.logical_not();
                long remainingCount = remaining.sum().item<long>();
                double meanMass = remainingCount == 0 ? 0 : s.masked_select(remaining).sum().item<double>() / remainingCount;
                if (meanMass > 0)
                {
                    using Scalar inverseMean = (1 / meanMass).ToScalar();
                    s.mul_(inverseMean).add_(HeldScalars.Of(1)).mul_(magnitude);
                }
                else
                    s = magnitude.clone();
            }
            if (relative)
            {
                double total = s.sum().item<double>();
                if (total > 0)
                {
                    using Scalar totalScalar = total.ToScalar();
                    s.div_(totalScalar);
                }
            }
            s = ScoreTies.Break(s, magnitude);
            s.masked_fill_(pruned, HeldScalars.Of(-1));
            return s.MoveToOuterDisposeScope();
        }

        /// <summary>The fraction of layer <paramref name="index"/>'s non-zero weights that the pass selected at least once.</summary>
        public static double SelectedFraction(TopDownAttention attention, int index, PrunableLayer layer)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            Tensor nonZero = layer.Weight.detach().ne(HeldScalars.Of(0)).to(attention.Hits(index).device);
            long weights = nonZero.sum().item<long>();
            long selected = attention.Hits(index).gt(HeldScalars.Of(0)).logical_and_(nonZero).sum().item<long>();
            return weights == 0 ? 0 : (double)selected / weights;
        }

        /// <summary>The mask keeping the <paramref name="keptCount"/> highest scores of <paramref name="scores"/>.</summary>
        public static Tensor KeepHighest(Tensor scores, long keptCount)
        {
            using var scope = NewDisposeScope();
            Tensor flat = scores.flatten();
            Tensor kept = zeros(flat.shape[0], dtype: @bool, device: flat.device);
            if (keptCount > 0)
            {
                var (_, highest) = flat.topk((int)Math.Min(keptCount, flat.shape[0]), largest: true, sorted: false);
                kept.index_fill_(0, highest, HeldScalars.Of(true));
            }
            return kept.view(scores.shape).MoveToOuterDisposeScope();
        }

        /// <summary>Per-layer kept counts for <paramref name="keptFraction"/>: uniform, or one threshold over the connections' shares of their layer's attention.</summary>
        public static long[] Allocate(TopDownAttention attention, IReadOnlyList<PrunableLayer> layers, double keptFraction,
            IDictionary<string, double>? layerKeptFractions, LayerAllocation allocation, AttentionScore score)
        {
            var scores = new List<Tensor>();
            try
            {
                return KeptFractionAllocator.Allocate(layers, keptFraction, layerKeptFractions, allocation, i =>
                {
                    Tensor s = Scores(attention, i, layers[i], score, relative: true);
                    scores.Add(s);
                    return s;
                });
            }
            finally
            {
                foreach (Tensor s in scores)
                    s.Dispose();
            }
        }
    }
}
