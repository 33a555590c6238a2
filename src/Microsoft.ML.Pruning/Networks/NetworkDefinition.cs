// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using System.Text.Json;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>
    /// A complete image-classifier architecture: input shape, class count and layers. It is what a saved model
    /// stores next to the weights, so a model can be rebuilt — dense, pruned or compact — without the code that
    /// trained it.
    /// </summary>
    public sealed record NetworkDefinition
    {
        private static readonly JsonSerializerOptions s_json = new() { WriteIndented = false };

        /// <summary>A short name of the architecture it was made from, e.g. <c>vgg-small</c>.</summary>
        public required string Architecture { get; init; }

        /// <summary>The shape of one input image.</summary>
        public required ImageShape Input { get; init; }

        /// <summary>The number of classes (the length of the network's output).</summary>
        public required int Classes { get; init; }

        /// <summary>The layers, applied in order.</summary>
        public required IReadOnlyList<LayerDefinition> Layers { get; init; }

        /// <summary>Checks names and shapes; throws <see cref="InvalidOperationException"/> naming the first problem.</summary>
        public void Validate()
        {
            Input.Validate();
            if (Classes < 2)
                throw new InvalidOperationException($"A classifier needs at least 2 classes; the definition has {Classes}.");
            CheckNames(Layers, "network");
            int[] output = OutputShapeOf(Layers, new[] { Input.Channels, Input.Height, Input.Width });
            if (output.Length != 1 || output[0] != Classes)
                throw new InvalidOperationException($"The network outputs [{string.Join(",", output)}], expected [{Classes}].");
        }

        /// <summary>Multiply-accumulates of one forward pass of one image.</summary>
        public long MultiplyAccumulates() => MultiplyAccumulatesOf(Layers, InputDimensions);

        /// <summary>The input shape as a [C,H,W] array.</summary>
        public int[] InputDimensions => new[] { Input.Channels, Input.Height, Input.Width };

        /// <summary>Serializes the definition as JSON (the form stored in model files).</summary>
        public string ToJson() => JsonSerializer.Serialize(this, s_json);

        /// <summary>Reads a definition written by <see cref="ToJson"/> and validates it.</summary>
        /// <exception cref="FormatException">The text is not a valid definition.</exception>
        public static NetworkDefinition FromJson(string json)
        {
            NetworkDefinition? definition;
            try
            {
                definition = JsonSerializer.Deserialize<NetworkDefinition>(json, s_json);
            }
            catch (Exception ex) when (ex is JsonException or NotSupportedException or InvalidOperationException)
            {
                throw new FormatException("The stored network definition is not valid: " + ex.Message, ex);
            }
            if (definition is null)
                throw new FormatException("The stored network definition is empty.");
            try
            {
                // Bounds and fields first (no overflow, nothing huge), then the shapes.
                DefinitionLimits.Check(definition);
                definition.Validate();
            }
            catch (InvalidOperationException ex)
            {
                throw new FormatException("The stored network definition is inconsistent: " + ex.Message, ex);
            }
            return definition;
        }

        /// <summary>Enumerates every layer, depth first, with its dotted module path (e.g. <c>stage2_0.body.conv1</c>).</summary>
        public IEnumerable<(string Path, LayerDefinition Layer)> Flatten() => NetworkWalker.Walk(this).Select(site => (site.Path, site.Layer));

        internal static int[] OutputShapeOf(IReadOnlyList<LayerDefinition> layers, int[] input)
        {
            int[] shape = input;
            foreach (LayerDefinition layer in layers)
                shape = layer.OutputShape(shape);
            return shape;
        }

        internal static long MultiplyAccumulatesOf(IReadOnlyList<LayerDefinition> layers, int[] input)
        {
            long total = 0;
            int[] shape = input;
            foreach (LayerDefinition layer in layers)
            {
                total += layer.MultiplyAccumulates(shape);
                shape = layer.OutputShape(shape);
            }
            return total;
        }

        private static void CheckNames(IReadOnlyList<LayerDefinition> layers, string scope)
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (LayerDefinition layer in layers)
            {
                if (string.IsNullOrEmpty(layer.Name) || layer.Name.Contains('.'))
                    throw new InvalidOperationException($"Layer name '{layer.Name}' in {scope} must be non-empty and contain no '.'.");
                if (!seen.Add(layer.Name))
                    throw new InvalidOperationException($"Layer name '{layer.Name}' appears twice in {scope}.");
                if (layer is ResidualBlock block)
                {
                    CheckNames(block.Body, layer.Name);
                    CheckNames(block.Shortcut, layer.Name);
                }
            }
        }
    }
}
