// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.SynapticStrength
{
    /// <summary>
    /// The compaction of kernel-level pruning: channels left without kernels go through the channel engine, and the
    /// convolutions become <see cref="KernelSparseConv2dLayer"/>s that store and compute their kept kernels only.
    /// </summary>
    internal static class KernelSparseCompaction
    {
        /// <summary>
        /// The channels kernel pruning leaves dead, as a selection for <see cref="ChannelSurgery"/>: in a group whose
        /// channels no residual sum crosses, a channel that every consumer reads through pruned kernels only (all
        /// consumers pruned convolutions), or that every producer writes from pruned kernels only. The first removal is
        /// exact; the second drops the constant the channel's bias and batch norm still gave (fine-tuning takes it up).
        /// Every group keeps at least one channel. Null when no channel is dead.
        /// </summary>
        /// <param name="definition">The network.</param>
        /// <param name="kept">Kept connections [out, in] (boolean) by convolution path.</param>
        public static ChannelSelection? DeadChannels(NetworkDefinition definition, IReadOnlyDictionary<string, bool[,]> kept)
        {
            var groups = new List<(ChannelGroup, long[])>();
            foreach (ChannelGroup group in ChannelGroups.Find(definition))
            {
                if (!group.Prunable || group.IsResidual)
                    continue;
                var live = new bool[group.Channels];
                bool readers = group.Consumers.All(c => kept.ContainsKey(c.Path)), writers = group.Producers.All(p => kept.ContainsKey(p.Path));
                if (!readers && !writers)
                    continue;
                var read = new bool[group.Channels];
                var written = new bool[group.Channels];
                foreach (ChannelMember member in group.Members.Where(m => m.Role != ChannelRole.Follower && kept.ContainsKey(m.Path)))
                {
                    bool[,] connections = kept[member.Path];
                    for (int o = 0; o < connections.GetLength(0); o++)
                    {
                        for (int i = 0; i < connections.GetLength(1); i++)
                        {
                            if (!connections[o, i])
                                continue;
                            if (member.Role == ChannelRole.Consumer)
                                read[i] = true;
                            else
                                written[o] = true;
                        }
                    }
                }
                for (int c = 0; c < live.Length; c++)
                    live[c] = (!readers || read[c]) && (!writers || written[c]);
                if (live.All(l => l))
                    continue;
                if (!live.Any(l => l))
                    live[Array.FindIndex(read, r => r) is int r && r >= 0 ? r : 0] = true;
                groups.Add((group, Enumerable.Range(0, live.Length).Where(c => live[c]).Select(c => (long)c).ToArray()));
            }
            return groups.Count == 0 ? null : new ChannelSelection(groups);
        }

        /// <summary>
        /// A new network in which each Conv2d layer of <paramref name="kept"/> (path → kept connections [out, in], boolean) is a
        /// <see cref="KernelSparseConv2dLayer"/> holding those kernels; every other tensor is copied. The old network is left
        /// as it is.
        /// </summary>
        public static ClassifierNetwork Convert(ClassifierNetwork network, IReadOnlyDictionary<string, Tensor> kept)
        {
            var counts = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var (path, connections) in kept)
            {
                using var count = connections.count_nonzero();
                counts[path] = (int)count.item<long>();
            }
            NetworkDefinition definition = network.Definition with
            {
                Layers = NetworkWalker.MapLayers(network.Definition.Layers, (path, layer) => layer is Conv2dLayer conv && counts.TryGetValue(path, out int n)
                    ? new KernelSparseConv2dLayer
                    {
                        Name = conv.Name, InChannels = conv.InChannels, OutChannels = conv.OutChannels, KernelSize = conv.KernelSize,
                        Stride = conv.Stride, Padding = conv.Padding, Bias = conv.Bias, Connections = n,
                    }
                    : layer),
            };
            definition.Validate();
            ClassifierNetwork sparse = ClassifierNetwork.Create(definition, network.Device);
            try
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var source = network.StateDictionary();
                foreach (var (name, value) in sparse.StateDictionary())
                {
                    int dot = name.LastIndexOf('.');
                    string path = name[..dot], field = name[(dot + 1)..];
                    if (kept.TryGetValue(path, out Tensor? connections) && field is "weight" or "connections")
                    {
                        Tensor flat = connections.to(value.device).flatten().nonzero().flatten();
                        Tensor weight = source[path + ".weight"];
                        value.copy_(field == "connections" ? flat : weight.flatten(0, 1).index_select(0, flat));
                        continue;
                    }
                    value.copy_(source[name]);
                }
                sparse.Module.train(network.Module.training);
                return sparse;
            }
            catch
            {
                sparse.Dispose();
                throw;
            }
        }
    }
}
