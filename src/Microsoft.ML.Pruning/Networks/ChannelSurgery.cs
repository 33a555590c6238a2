// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>Which channels of each group a pruned network keeps (ascending indices); groups not listed keep all.</summary>
    internal sealed class ChannelSelection
    {
        public ChannelSelection(IReadOnlyList<(ChannelGroup Group, long[] Kept)> groups)
        {
            foreach (var (group, kept) in groups)
            {
                if (!group.Prunable && kept.Length != group.Channels)
                    throw new ArgumentException($"Channel group '{group.Name}' cannot lose channels: {group.UnprunableReason}.");
                if (kept.Length == 0)
                    throw new ArgumentException($"Channel group '{group.Name}' must keep at least one channel.");
                for (int i = 0; i < kept.Length; i++)
                {
                    if (kept[i] < 0 || kept[i] >= group.Channels || (i > 0 && kept[i] <= kept[i - 1]))
                        throw new ArgumentException($"The kept channels of group '{group.Name}' must be distinct, ascending and below {group.Channels}.");
                }
            }
            Groups = groups;
        }

        public IReadOnlyList<(ChannelGroup Group, long[] Kept)> Groups { get; }

        /// <summary>Whether any group loses a channel.</summary>
        public bool RemovesAny => Groups.Any(g => g.Kept.Length < g.Group.Channels);
    }

    /// <summary>
    /// Removes channels physically: per layer kind, how its definition shrinks and which of its tensors are sliced along
    /// which dimension, for the channels it writes (and batch norm passes) and for the channels it reads. A layer kind
    /// missing from the table makes its channel groups fixed; supporting a new kind is one entry.
    /// </summary>
    internal static class ChannelSurgery
    {
        /// <summary>How one layer kind loses channels.</summary>
        /// <param name="WithOutputs">The layer with this many output channels (producers and followers), or null when it cannot.</param>
        /// <param name="WithInputs">The layer with this many inputs (consumers), or null when it cannot.</param>
        /// <param name="OutputTensors">The tensors indexed by output channel and their dimension.</param>
        /// <param name="InputTensors">The tensors indexed by input and their dimension.</param>
        /// <param name="SliceTensors">For a kind whose tensors are not indexed by channel along one dimension: slices the
        /// layer's tensors (named <c>{path}.{tensor}</c>) in the dictionary to the kept channels, output channels or input
        /// channels, and returns the smaller layer; null for the kinds that <paramref name="OutputTensors"/> and
        /// <paramref name="InputTensors"/> describe.</param>
        private sealed record Rule(
            Func<LayerDefinition, int, LayerDefinition>? WithOutputs,
            Func<LayerDefinition, int, LayerDefinition>? WithInputs,
            Func<LayerDefinition, (string Tensor, int Dimension)[]> OutputTensors,
            Func<LayerDefinition, (string Tensor, int Dimension)[]> InputTensors,
            Func<LayerDefinition, string, ChannelRole, long[], Dictionary<string, Tensor>, LayerDefinition>? SliceTensors = null);

        private static readonly (string, int)[] s_none = Array.Empty<(string, int)>();

        private static readonly Dictionary<Type, Rule> s_rules = new()
        {
            [typeof(Conv2dLayer)] = new(
                (l, n) => (Conv2dLayer)l with { OutChannels = n },
                (l, n) => (Conv2dLayer)l with { InChannels = n },
                _ => new[] { ("weight", 0), ("bias", 0) },
                _ => new[] { ("weight", 1) }),
            [typeof(LinearLayer)] = new(
                (l, n) => (LinearLayer)l with { OutFeatures = n },
                (l, n) => (LinearLayer)l with { InFeatures = n },
                _ => new[] { ("weight", 0), ("bias", 0) },
                _ => new[] { ("weight", 1) }),
            [typeof(BatchNorm2dLayer)] = new(
                (l, n) => (BatchNorm2dLayer)l with { Channels = n },
                null,
                _ => new[] { ("weight", 0), ("bias", 0), ("running_mean", 0), ("running_var", 0) },
                _ => s_none),
            [typeof(ShiftPointwiseConv2dLayer)] = new(
                (l, n) => (ShiftPointwiseConv2dLayer)l with { OutChannels = n },
                (l, n) => (ShiftPointwiseConv2dLayer)l with { InChannels = n },
                l => ((ShiftPointwiseConv2dLayer)l).Shared ? new[] { ("weight", 0), ("bias", 0) } : new[] { ("weight", 0), ("bias", 0), ("shift", 0) },
                l => ((ShiftPointwiseConv2dLayer)l).Shared ? new[] { ("weight", 1), ("shift", 0) } : new[] { ("weight", 1), ("shift", 1) }),
            [typeof(KernelSparseConv2dLayer)] = new(
                (l, n) => KernelSparseResized((KernelSparseConv2dLayer)l, n, ((KernelSparseConv2dLayer)l).InChannels),
                (l, n) => KernelSparseResized((KernelSparseConv2dLayer)l, ((KernelSparseConv2dLayer)l).OutChannels, n),
                _ => new[] { ("bias", 0) },
                _ => s_none,
                SliceKernelSparse),
        };

        /// <summary>A kernel-sparse layer resized without its tensors (for planning): the connections scale with the channels.
        /// <see cref="Slice"/> gives the exact count.</summary>
        private static KernelSparseConv2dLayer KernelSparseResized(KernelSparseConv2dLayer layer, int outChannels, int inChannels)
        {
            long all = (long)layer.OutChannels * layer.InChannels, now = (long)outChannels * inChannels;
            return layer with
            {
                OutChannels = outChannels,
                InChannels = inChannels,
                Connections = (int)Math.Min(now, (long)Math.Round((double)layer.Connections * now / all)),
            };
        }

        /// <summary>Keeps the kernels of a kernel-sparse layer whose output (producer) or input (consumer) channel is kept,
        /// renumbering the connections; its bias follows its output channels.</summary>
        private static LayerDefinition SliceKernelSparse(LayerDefinition definition, string path, ChannelRole role, long[] kept, Dictionary<string, Tensor> tensors)
        {
            var layer = (KernelSparseConv2dLayer)definition;
            bool reads = role == ChannelRole.Consumer;
            int inChannels = reads ? kept.Length : layer.InChannels, outChannels = reads ? layer.OutChannels : kept.Length;
            if (!reads && tensors.TryGetValue(path + ".bias", out Tensor? bias))
                tensors[path + ".bias"] = bias.index_select(0, tensor(kept, device: bias.device));
            if (!tensors.TryGetValue(path + ".connections", out Tensor? connections))
                return KernelSparseResized(layer, outChannels, inChannels);
            var renumber = Enumerable.Repeat(-1L, reads ? layer.InChannels : layer.OutChannels).ToArray();
            for (int j = 0; j < kept.Length; j++)
                renumber[kept[j]] = j;
            long[] old = connections.cpu().data<long>().ToArray();
            var positions = new List<long>();
            var renumbered = new List<long>();
            for (int c = 0; c < old.Length; c++)
            {
                long o = old[c] / layer.InChannels, i = old[c] % layer.InChannels;
                long to = reads ? renumber[i] : renumber[o];
                if (to < 0)
                    continue;
                positions.Add(c);
                renumbered.Add(reads ? o * inChannels + to : to * inChannels + i);
            }
            tensors[path + ".connections"] = tensor(renumbered.ToArray(), device: connections.device);
            if (tensors.TryGetValue(path + ".weight", out Tensor? weight))
                tensors[path + ".weight"] = weight.index_select(0, tensor(positions.ToArray(), device: weight.device));
            return layer with { InChannels = inChannels, OutChannels = outChannels, Connections = renumbered.Count };
        }

        /// <summary>Whether a layer of this kind can lose channels in <paramref name="role"/>.</summary>
        public static bool Supports(LayerDefinition layer, ChannelRole role)
            => s_rules.TryGetValue(layer.GetType(), out Rule? rule) && (role == ChannelRole.Consumer ? rule.WithInputs : rule.WithOutputs) is not null;

        /// <summary>The definition with each group's channel count set to its kept count (shapes only, no weights).</summary>
        public static NetworkDefinition Resize(NetworkDefinition definition, IEnumerable<(ChannelGroup Group, int Kept)> counts)
        {
            var layers = new Dictionary<string, LayerDefinition>(StringComparer.Ordinal);
            foreach (var (group, kept) in counts)
            {
                if (kept == group.Channels)
                    continue;
                foreach (ChannelMember member in group.Members)
                {
                    Rule rule = s_rules[member.Layer.GetType()];
                    LayerDefinition current = layers.GetValueOrDefault(member.Path, member.Layer);
                    layers[member.Path] = member.Role == ChannelRole.Consumer
                        ? rule.WithInputs!(current, checked(kept * member.BlockSize))
                        : rule.WithOutputs!(current, kept);
                }
            }
            NetworkDefinition resized = definition with { Layers = NetworkWalker.MapLayers(definition.Layers, (path, layer) => layers.GetValueOrDefault(path, layer)) };
            resized.Validate();
            return resized;
        }

        /// <summary>
        /// The smaller definition and its tensors: every named tensor of <paramref name="tensors"/> (weights, statistics,
        /// masks) that a member's rule lists is sliced to the kept channels; the others are passed through as they are.
        /// New tensors belong to the caller's dispose scope.
        /// </summary>
        public static (NetworkDefinition Definition, Dictionary<string, Tensor> Tensors) Slice(NetworkDefinition definition,
            IReadOnlyDictionary<string, Tensor> tensors, ChannelSelection selection)
        {
            var sliced = new Dictionary<string, Tensor>(tensors, StringComparer.Ordinal);
            var layers = new Dictionary<string, LayerDefinition>(StringComparer.Ordinal);
            foreach (var (group, kept) in selection.Groups)
            {
                if (kept.Length == group.Channels)
                    continue;
                Tensor channels = tensor(kept);
                foreach (ChannelMember member in group.Members)
                {
                    Rule rule = s_rules[member.Layer.GetType()];
                    LayerDefinition current = layers.GetValueOrDefault(member.Path, member.Layer);
                    bool reads = member.Role == ChannelRole.Consumer;
                    if (rule.SliceTensors is not null)
                    {
                        layers[member.Path] = rule.SliceTensors(current, member.Path, member.Role, kept, sliced);
                        continue;
                    }
                    using Scalar blockSize = member.BlockSize.ToScalar();
                    Tensor index = reads && member.BlockSize > 1
                        ? channels.unsqueeze(1).mul(blockSize).add(arange(blockSize, dtype: ScalarType.Int64).unsqueeze(0)).flatten()
                        : channels;
                    foreach (var (name, dimension) in reads ? rule.InputTensors(current) : rule.OutputTensors(current))
                    {
                        string key = member.Path + "." + name;
                        if (sliced.TryGetValue(key, out Tensor? value))
                            sliced[key] = value.index_select(dimension, index.to(value.device));
                    }
                    layers[member.Path] = reads
                        ? rule.WithInputs!(current, checked(kept.Length * member.BlockSize))
                        : rule.WithOutputs!(current, kept.Length);
                }
            }
            NetworkDefinition result = definition with { Layers = NetworkWalker.MapLayers(definition.Layers, (path, layer) => layers.GetValueOrDefault(path, layer)) };
            result.Validate();
            return (result, sliced);
        }

        /// <summary>A new, smaller network with the kept channels of <paramref name="network"/> only (in evaluation mode);
        /// it computes what <paramref name="network"/> computes with the other channels zeroed (<see cref="ZeroRemoved"/>).</summary>
        public static ClassifierNetwork Remove(ClassifierNetwork network, ChannelSelection selection)
        {
            // The new network is built outside any dispose scope: its modules own tensors that must outlive it. Its definition
            // is the one slicing gives (a kernel-sparse layer's connections depend on which channels go, not only how many).
            NetworkDefinition definition;
            using (NewDisposeScope())
                definition = Slice(network.Definition, network.StateDictionary(), selection).Definition;
            ClassifierNetwork pruned = ClassifierNetwork.Create(definition, network.Device);
            try
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var (_, tensors) = Slice(network.Definition, network.StateDictionary(), selection);
                foreach (var (name, value) in pruned.StateDictionary())
                {
                    if (!tensors.TryGetValue(name, out Tensor? from) || !from.shape.SequenceEqual(value.shape))
                        throw new InvalidOperationException($"Channel removal left '{name}' without a tensor of shape [{string.Join(",", value.shape)}].");
                    value.copy_(from);
                }
                pruned.Module.eval();
                return pruned;
            }
            catch
            {
                pruned.Dispose();
                throw;
            }
        }

        /// <summary>
        /// Zeroes, in place, everything that writes a removed channel: the producers' rows (weight and bias) and the batch
        /// norms' scale and shift, so that the channel is exactly zero wherever it is read. This is the masked dense form of
        /// the selection, which <see cref="Remove"/> computes with fewer channels.
        /// </summary>
        public static void ZeroRemoved(ClassifierNetwork network, ChannelSelection selection)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var state = network.StateDictionary();
            foreach (var (group, kept) in selection.Groups)
            {
                long[] removed = Enumerable.Range(0, group.Channels).Select(c => (long)c).Except(kept).ToArray();
                if (removed.Length == 0)
                    continue;
                foreach (ChannelMember member in group.Members.Where(m => m.Role != ChannelRole.Consumer))
                {
                    // Producers' rows and batch norms' scale and shift; a batch norm's running statistics may stay.
                    foreach (string name in new[] { "weight", "bias" })
                    {
                        if (member.Layer is KernelSparseConv2dLayer sparse && name == "weight")
                        {
                            // The kernels of the removed outputs.
                            using Scalar inChannels = sparse.InChannels.ToScalar();
                            Tensor outputs = state[member.Path + ".connections"].div(inChannels, rounding_mode: RoundingMode.floor);
                            Tensor positions = isin(outputs, tensor(removed, device: outputs.device)).nonzero().flatten();
                            state[member.Path + ".weight"].index_fill_(0, positions, HeldScalars.Of(0));
                            continue;
                        }
                        if (state.TryGetValue(member.Path + "." + name, out Tensor? value))
                            value.index_fill_(0, tensor(removed, device: value.device), HeldScalars.Of(0));
                    }
                }
            }
            network.ResetCompiledForm();
        }
    }
}
