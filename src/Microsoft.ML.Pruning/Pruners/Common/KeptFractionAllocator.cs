// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.Common
{
    /// <summary>Turns the kept-fraction options into a number of weights to keep per layer.</summary>
    internal static class KeptFractionAllocator
    {
        /// <summary>
        /// Kept weights per layer. Layers in <paramref name="layerKeptFractions"/> keep their own fraction; the
        /// others share <paramref name="keptFraction"/> of their weights, either uniformly or (global) by one
        /// ranking of <paramref name="scores"/> over all of them, higher kept first, with a floor of a quarter of the
        /// overall fraction per layer. The total hits the target (up to rounding of the floors). Every layer keeps at least one weight.
        /// </summary>
        /// <param name="layers">The prunable layers.</param>
        /// <param name="keptFraction">The fraction the free layers keep together.</param>
        /// <param name="layerKeptFractions">Fixed fractions by layer path, or null.</param>
        /// <param name="allocation">How the free layers share the overall fraction.</param>
        /// <param name="scores">For <see cref="LayerAllocation.Global"/>: a score per weight of a layer (any shape, same count).</param>
        public static long[] Allocate(IReadOnlyList<PrunableLayer> layers, double keptFraction, IDictionary<string, double>? layerKeptFractions,
            LayerAllocation allocation, Func<int, Tensor>? scores)
            => Allocate(layers.Select(l => new Unit(l.Path, l.Count)).ToArray(), keptFraction, layerKeptFractions, allocation, scores);

        /// <summary>A layer as the allocator sees it: its path and how many prunable units (weights, kernels) it has.</summary>
        public sealed record Unit(string Path, long Count);

        /// <summary>Kept units per layer, as <see cref="Allocate(IReadOnlyList{PrunableLayer}, double, IDictionary{string, double}?, LayerAllocation, Func{int, Tensor}?)"/>
        /// for layers of any unit (kernels for kernel-level pruning): <paramref name="scores"/> gives one score per unit.</summary>
        public static long[] Allocate(IReadOnlyList<Unit> layers, double keptFraction, IDictionary<string, double>? layerKeptFractions,
            LayerAllocation allocation, Func<int, Tensor>? scores)
        {
            var kept = new long[layers.Count];
            var free = new List<int>();
            for (int i = 0; i < layers.Count; i++)
            {
                if (layerKeptFractions is not null && layerKeptFractions.TryGetValue(layers[i].Path, out double fraction))
                    kept[i] = Count(fraction, layers[i].Count);
                else
                    free.Add(i);
            }
            if (free.Count == 0)
                return kept;
            if (allocation == LayerAllocation.Uniform || free.Count == 1 || scores is null)
            {
                foreach (int i in free)
                    kept[i] = Count(keptFraction, layers[i].Count);
                return kept;
            }

            long total = free.Sum(i => layers[i].Count);
            long target = Math.Max(free.Count, (long)Math.Round(keptFraction * total));
            var floors = free.Select(i => Math.Min(layers[i].Count, Math.Max(1, (long)Math.Ceiling(keptFraction / 4 * layers[i].Count)))).ToArray();

            // The free layers' weights in descending score order, as layer positions in 'free'.
            int[] owner;
            using (NewDisposeScope())
            {
                Tensor all = cat(free.Select(i => scores(i).flatten().to(float64)).ToArray());
                Tensor layerIndex = cat(free.Select((i, position) =>
                {
                    using Scalar owner = ((long)position).ToScalar();
                    return full(layers[i].Count, owner);
                }).ToArray());
                var (_, order) = all.sort(descending: true, stable: true);
                owner = layerIndex.index_select(0, order).to(int32).data<int>().ToArray();
            }

            // Walk down the ranking: the total max(floor, taken) grows by at most one per step, so it meets the target.
            var taken = new long[free.Count];
            long sum = floors.Sum();
            for (int c = 0; c < owner.Length && sum < target; c++)
            {
                int position = owner[c];
                if (++taken[position] > floors[position])
                    sum++;
            }
            for (int position = 0; position < free.Count; position++)
                kept[free[position]] = Math.Max(floors[position], taken[position]);
            return kept;
        }

        private static long Count(double fraction, long weights) => Math.Clamp((long)Math.Round(fraction * weights), 1, weights);
    }
}
