// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>
    /// One layer of a <see cref="NetworkDefinition"/> as <see cref="NetworkWalker"/> meets it: its dotted module path,
    /// the shapes it reads and writes for one image, and the sequence it sits in (the network's layers or a residual
    /// block's body or shortcut).
    /// </summary>
    /// <param name="Path">Dotted module path, e.g. <c>stage2_0.body.conv1</c>; parameters are named <c>{Path}.weight</c>.</param>
    /// <param name="Layer">The layer.</param>
    /// <param name="InputShape">The shape it reads, per image.</param>
    /// <param name="OutputShape">The shape it writes, per image.</param>
    /// <param name="Scope">The path prefix of its sequence (empty, or e.g. <c>stage2_0.body.</c>).</param>
    /// <param name="Index">Its position in <paramref name="Sequence"/>.</param>
    /// <param name="Sequence">The sequence it belongs to.</param>
    public sealed record LayerSite(string Path, LayerDefinition Layer, int[] InputShape, int[] OutputShape, string Scope, int Index,
        IReadOnlyList<LayerDefinition> Sequence)
    {
        /// <summary>The layer after this one in its sequence, or null at the end.</summary>
        public LayerDefinition? Next => Index + 1 < Sequence.Count ? Sequence[Index + 1] : null;
    }

    /// <summary>
    /// The one walk over a <see cref="NetworkDefinition"/>: a network is a tree of sequences whose only branching layer
    /// is <see cref="ResidualBlock"/> (body and shortcut, summed). Everything that visits or rewrites layers — shapes,
    /// summaries, compaction, channel groups, the compact runtime's compiler — goes through here, so that module paths
    /// and shapes are derived in one place.
    /// </summary>
    public static class NetworkWalker
    {
        /// <summary>The path prefix of a residual block's body (<c>{block}.body.</c>).</summary>
        public static string BodyScope(string blockPath) => blockPath + "." + NetworkModules.BodyName + ".";

        /// <summary>The path prefix of a residual block's shortcut (<c>{block}.shortcut.</c>).</summary>
        public static string ShortcutScope(string blockPath) => blockPath + "." + NetworkModules.ShortcutName + ".";

        /// <summary>Every layer of <paramref name="definition"/>, depth first in execution order: a residual block, then
        /// its body's layers, then its shortcut's.</summary>
        public static IEnumerable<LayerSite> Walk(NetworkDefinition definition)
        {
            ArgumentNullException.ThrowIfNull(definition);
            return Walk(definition.Layers, definition.InputDimensions, "");
        }

        /// <summary>Every layer of <paramref name="layers"/> (read as <paramref name="input"/>), with paths under <paramref name="scope"/>.</summary>
        public static IEnumerable<LayerSite> Walk(IReadOnlyList<LayerDefinition> layers, int[] input, string scope)
        {
            int[] shape = input;
            for (int i = 0; i < layers.Count; i++)
            {
                LayerDefinition layer = layers[i];
                string path = scope + layer.Name;
                int[] output = layer.OutputShape(shape);
                yield return new LayerSite(path, layer, shape, output, scope, i, layers);
                if (layer is ResidualBlock block)
                {
                    foreach (LayerSite inner in Walk(block.Body, shape, BodyScope(path)))
                        yield return inner;
                    foreach (LayerSite inner in Walk(block.Shortcut, shape, ShortcutScope(path)))
                        yield return inner;
                }
                shape = output;
            }
        }

        /// <summary>Every sequence of <paramref name="layers"/> with its scope: the list itself, then each residual block's
        /// body and shortcut, depth first.</summary>
        public static IEnumerable<(string Scope, IReadOnlyList<LayerDefinition> Layers)> Sequences(IReadOnlyList<LayerDefinition> layers, string scope = "")
        {
            yield return (scope, layers);
            foreach (LayerDefinition layer in layers)
            {
                if (layer is not ResidualBlock block)
                    continue;
                foreach (var inner in Sequences(block.Body, BodyScope(scope + block.Name)))
                    yield return inner;
                foreach (var inner in Sequences(block.Shortcut, ShortcutScope(scope + block.Name)))
                    yield return inner;
            }
        }

        /// <summary>
        /// Rewrites every sequence, innermost first: <paramref name="rewrite"/> gets a sequence's scope and its layers (whose
        /// residual blocks already hold their rewritten branches) and returns the new sequence.
        /// </summary>
        public static IReadOnlyList<LayerDefinition> RewriteSequences(IReadOnlyList<LayerDefinition> layers,
            Func<string, IReadOnlyList<LayerDefinition>, IReadOnlyList<LayerDefinition>> rewrite, string scope = "")
        {
            var inner = layers.Select(layer => layer is ResidualBlock block
                ? block with
                {
                    Body = RewriteSequences(block.Body, rewrite, BodyScope(scope + block.Name)),
                    Shortcut = RewriteSequences(block.Shortcut, rewrite, ShortcutScope(scope + block.Name)),
                }
                : layer).ToArray();
            return rewrite(scope, inner);
        }

        /// <summary>Replaces each layer (not the residual blocks themselves) by <paramref name="map"/>(path, layer).</summary>
        public static IReadOnlyList<LayerDefinition> MapLayers(IReadOnlyList<LayerDefinition> layers, Func<string, LayerDefinition, LayerDefinition> map)
            => RewriteSequences(layers, (scope, sequence) => sequence.Select(l => l is ResidualBlock ? l : map(scope + l.Name, l)).ToArray());
    }
}
