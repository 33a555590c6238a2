// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners.Common;

namespace Microsoft.ML.Pruning.Pruners.Channels
{
    /// <summary>What a channel pruner reports: weights per layer before and after, and channels kept per group.</summary>
    internal static class ChannelReport
    {
        /// <summary>The weights (not biases) of a Conv2d, kernel-sparse, shift + pointwise or Linear layer; 0 for other layers.</summary>
        public static long Weights(LayerDefinition layer) => layer switch
        {
            Conv2dLayer c => (long)c.OutChannels * c.InChannels * c.KernelSize * c.KernelSize,
            ShiftPointwiseConv2dLayer s => (long)s.OutChannels * s.InChannels,
            KernelSparseConv2dLayer k => (long)k.Connections * k.KernelSize * k.KernelSize,
            LinearLayer l => (long)l.OutFeatures * l.InFeatures,
            _ => 0,
        };

        /// <summary>
        /// Fills the context's results: every weighted layer of <paramref name="original"/> with its weights in
        /// <paramref name="pruned"/>, and every prunable group with its channels before the first round and kept.
        /// </summary>
        public static void Add(PruningContext context, NetworkDefinition original, NetworkDefinition pruned,
            IEnumerable<(ChannelGroup Group, int OriginalChannels, int Kept)> groups, Func<string, TimeSpan> elapsed)
        {
            var after = pruned.Flatten().ToDictionary(l => l.Path, l => l.Layer, StringComparer.Ordinal);
            foreach (var (path, layer) in original.Flatten().Where(l => Weights(l.Layer) > 0))
                context.Results.Add(new LayerPruningResult(path, Weights(layer), after.TryGetValue(path, out var now) ? Weights(now) : Weights(layer), null, elapsed(path)));
            foreach (var (group, channels, kept) in groups.Where(g => g.Group.Prunable))
                context.ChannelResults.Add(new ChannelGroupResult(group.Name, group.Members.Select(m => m.Path).Distinct().ToArray(), channels, kept, group.IsResidual));
        }
    }
}
