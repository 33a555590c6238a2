// Licensed under the MIT license.

using System.Collections.Generic;
using Microsoft.ML.Pruning.Native;
using Microsoft.ML.Pruning.Pruners.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.Magnitude
{
    /// <summary>Han et al.'s criterion: a weight matters as much as its absolute value.</summary>
    internal static class MagnitudeImportance
    {
        /// <summary>|w| of the layer's weights (the caller owns the tensor).</summary>
        public static Tensor Scores(PrunableLayer layer)
        {
            using var noGrad = no_grad();
            return layer.Weight.detach().abs();
        }

        /// <summary>The mask keeping the <paramref name="keptCount"/> largest |w| of the layer.</summary>
        public static Tensor KeepLargest(PrunableLayer layer, long keptCount)
        {
            using var scope = NewDisposeScope();
            Tensor scores = Scores(layer).flatten();
            Tensor kept = zeros(scores.shape[0], dtype: @bool, device: scores.device);
            if (keptCount > 0)
            {
                var (_, largest) = scores.topk((int)keptCount, largest: true, sorted: false);
                kept.index_fill_(0, largest, HeldScalars.Of(true));
            }
            return kept.view(layer.Weight.shape).MoveToOuterDisposeScope();
        }

        /// <summary>Per-layer kept counts for <paramref name="keptFraction"/>, by <paramref name="allocation"/> (global: one |w| threshold).</summary>
        public static long[] Allocate(IReadOnlyList<PrunableLayer> layers, double keptFraction, IDictionary<string, double>? layerKeptFractions,
            LayerAllocation allocation)
        {
            var scores = new List<Tensor>();
            try
            {
                return KeptFractionAllocator.Allocate(layers, keptFraction, layerKeptFractions, allocation, i =>
                {
                    Tensor s = Scores(layers[i]);
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
