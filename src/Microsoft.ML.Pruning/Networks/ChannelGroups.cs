// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>How a layer takes part in a <see cref="ChannelGroup"/>.</summary>
    public enum ChannelRole
    {
        /// <summary>The layer writes the channels: its output channels (rows of its weight) are the group's channels.</summary>
        Producer,

        /// <summary>The layer reads the channels: its input channels (columns of its weight; for a fully connected layer after
        /// a flatten, blocks of <see cref="ChannelMember.BlockSize"/> inputs) are the group's channels.</summary>
        Consumer,

        /// <summary>The layer keeps the channels as they are, per channel (batch norm).</summary>
        Follower,
    }

    /// <summary>One layer's part in a <see cref="ChannelGroup"/>.</summary>
    /// <param name="Path">The layer's module path.</param>
    /// <param name="Layer">The layer.</param>
    /// <param name="Role">Whether it writes, reads or passes the channels.</param>
    /// <param name="BlockSize">Consecutive inputs per channel: H·W for a fully connected layer reading a flattened [C,H,W]
    /// activation, 1 otherwise.</param>
    public sealed record ChannelMember(string Path, LayerDefinition Layer, ChannelRole Role, int BlockSize = 1);

    /// <summary>
    /// Channels that must be removed together: an activation's channels with every layer that writes them (a convolution's
    /// output, and in a residual stage every block's output and shortcut, which feed one sum), passes them (batch norm) or
    /// reads them (the next convolution's input, the first fully connected layer's <c>channel·H·W</c> block after a
    /// flatten). Removing channel c of a group removes it from every member, which keeps the network consistent and
    /// computing the same function as the network with those channels zeroed.
    /// </summary>
    public sealed class ChannelGroup
    {
        internal ChannelGroup(int channels, IReadOnlyList<ChannelMember> members, bool isResidual, string? unprunableReason)
        {
            Channels = channels;
            Members = members;
            IsResidual = isResidual;
            UnprunableReason = unprunableReason;
            Name = members.First(m => m.Role == ChannelRole.Producer).Path;
        }

        /// <summary>The group's name: the path of its first producing layer (e.g. <c>conv3</c>, <c>stage2_0.body.conv1</c>).</summary>
        public string Name { get; }

        /// <summary>The number of channels.</summary>
        public int Channels { get; }

        /// <summary>The layers that write, pass and read the channels, in network order (within each merged branch).</summary>
        public IReadOnlyList<ChannelMember> Members { get; }

        /// <summary>Whether the channels cross a residual sum (the width of a residual stage).</summary>
        public bool IsResidual { get; }

        /// <summary>Why the group cannot lose channels (a member whose kind cannot be sliced), or null when it can.</summary>
        public string? UnprunableReason { get; }

        /// <summary>Whether channels can be removed from the group.</summary>
        public bool Prunable => UnprunableReason is null;

        /// <summary>The layers that write the channels.</summary>
        public IEnumerable<ChannelMember> Producers => Members.Where(m => m.Role == ChannelRole.Producer);

        /// <summary>The layers that read the channels.</summary>
        public IEnumerable<ChannelMember> Consumers => Members.Where(m => m.Role == ChannelRole.Consumer);

        /// <summary>The batch-norm layers of the channels.</summary>
        public IEnumerable<ChannelMember> BatchNorms => Members.Where(m => m.Role == ChannelRole.Follower && m.Layer is BatchNorm2dLayer);

        /// <summary>Whether some producer of the group is <paramref name="path"/>.</summary>
        public bool IsProducedBy(string path) => Producers.Any(p => p.Path == path);

        /// <inheritdoc/>
        public override string ToString()
            => $"{Name}: {Channels} channels{(IsResidual ? ", residual" : "")}{(Prunable ? "" : ", fixed (" + UnprunableReason + ")")}; "
                + string.Join(", ", Members.Select(m => $"{m.Path} {m.Role.ToString().ToLowerInvariant()}{(m.BlockSize > 1 ? "×" + m.BlockSize : "")}"));
    }

    /// <summary>
    /// Derives the <see cref="ChannelGroup"/>s of any <see cref="NetworkDefinition"/> statically from its layers (no
    /// tracing): sequential layers pass channels on, a residual block ties its body's output to its shortcut's (and, with an
    /// identity shortcut, to its input). The network's input and output channels are never a group.
    /// </summary>
    public static class ChannelGroups
    {
        /// <summary>The channel groups of <paramref name="definition"/> in network order, prunable or not.</summary>
        public static IReadOnlyList<ChannelGroup> Find(NetworkDefinition definition)
        {
            ArgumentNullException.ThrowIfNull(definition);
            var spaces = new List<Space>();
            var input = new Space(definition.Input.Channels, spaces) { Fixed = "the network's input" };
            int block = 1;
            Space output = Walk(definition.Layers, "", input, definition.InputDimensions, ref block, spaces);
            output.Root.Fixed ??= "the network's output";

            // Members in network order (a residual sum merges branches walked at different times).
            var order = NetworkWalker.Walk(definition).Select((site, index) => (site.Path, index)).ToDictionary(p => p.Path, p => p.index, StringComparer.Ordinal);
            var groups = new List<ChannelGroup>();
            foreach (Space space in spaces.Where(s => s.Parent is null && s.Members.Any(m => m.Role == ChannelRole.Producer))
                .OrderBy(s => s.Members.Where(m => m.Role == ChannelRole.Producer).Min(m => order[m.Path])))
            {
                var members = space.Members.OrderBy(m => order[m.Path]).ThenBy(m => m.Role == ChannelRole.Consumer ? 0 : 1).ToList();
                string? reason = space.Fixed ?? members
                    .Where(m => !ChannelSurgery.Supports(m.Layer, m.Role))
                    .Select(m => $"layer '{m.Path}' ({m.Layer.GetType().Name}) cannot lose channels")
                    .FirstOrDefault();
                groups.Add(new ChannelGroup(space.Channels, members, space.Residual, reason));
            }
            return groups;
        }

        private static Space Walk(IReadOnlyList<LayerDefinition> layers, string scope, Space current, int[] shape, ref int blockSize, List<Space> spaces)
        {
            foreach (LayerDefinition layer in layers)
            {
                string path = scope + layer.Name;
                int[] output = layer.OutputShape(shape);
                switch (layer)
                {
                    case KernelLayerDefinition kernel:
                        current.Add(new ChannelMember(path, layer, ChannelRole.Consumer));
                        current = new Space(kernel.OutChannels, spaces);
                        current.Add(new ChannelMember(path, layer, ChannelRole.Producer));
                        break;
                    case LinearLayer linear:
                        current.Add(new ChannelMember(path, layer, ChannelRole.Consumer, blockSize));
                        current = new Space(linear.OutFeatures, spaces);
                        current.Add(new ChannelMember(path, layer, ChannelRole.Producer));
                        blockSize = 1;
                        break;
                    case BatchNorm2dLayer:
                        current.Add(new ChannelMember(path, layer, ChannelRole.Follower));
                        break;
                    case FlattenLayer:
                        blockSize = shape.Length == 3 ? shape[1] * shape[2] : 1;
                        break;
                    case ReluLayer or MaxPool2dLayer or GlobalAvgPoolLayer:
                        break;
                    case ResidualBlock residual:
                        {
                            int inner = 1;
                            Space body = Walk(residual.Body, NetworkWalker.BodyScope(path), current, shape, ref inner, spaces);
                            inner = 1;
                            Space shortcut = Walk(residual.Shortcut, NetworkWalker.ShortcutScope(path), current, shape, ref inner, spaces);
                            current = Space.Union(body, shortcut);
                            break;
                        }
                    default:
                        // A layer whose channel behaviour is not known here (per-channel statistics of the input
                        // normalization, layers added later): the channels on both sides stay as they are.
                        string reason = $"layer '{path}' ({layer.GetType().Name}) keeps its channels";
                        current.Root.Fixed ??= reason;
                        if (layer is not NormalizeLayer)
                            current = new Space(output.Length == 0 ? 0 : output[0], spaces) { Fixed = reason };
                        break;
                }
                shape = output;
            }
            return current.Root;
        }

        /// <summary>One activation's channels; spaces joined by a residual sum share a root.</summary>
        private sealed class Space
        {
            public Space(int channels, List<Space> all)
            {
                Channels = channels;
                all.Add(this);
            }

            public Space? Parent { get; private set; }

            public int Channels { get; }

            public List<ChannelMember> Members { get; } = new();

            public string? Fixed { get; set; }

            public bool Residual { get; private set; }

            public Space Root
            {
                get
                {
                    Space space = this;
                    while (space.Parent is not null)
                        space = space.Parent;
                    return space;
                }
            }

            public void Add(ChannelMember member) => Root.Members.Add(member);

            public static Space Union(Space a, Space b)
            {
                a = a.Root;
                b = b.Root;
                a.Residual = true;
                if (ReferenceEquals(a, b))
                    return a;
                b.Parent = a;
                a.Members.AddRange(b.Members);
                b.Members.Clear();
                a.Fixed ??= b.Fixed;
                return a;
            }
        }
    }
}
