// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>
    /// What a stored network definition may declare, and the tensors it implies. A model file decides what the loader
    /// allocates, so every size is bounded and checked here, before any module or buffer exists: the definition is
    /// walked with overflow-free arithmetic, and the stored tensors are then checked against <see cref="ExpectedTensors"/>.
    /// </summary>
    internal static class DefinitionLimits
    {
        /// <summary>The largest <c>Network.json</c> read (bytes).</summary>
        public const int MaxJsonBytes = 4 << 20;

        /// <summary>How deeply residual blocks may nest (ResNet-20 uses 1).</summary>
        public const int MaxDepth = 8;

        /// <summary>The most layers, counted through every branch.</summary>
        public const int MaxLayers = 10_000;

        /// <summary>The longest layer or architecture name.</summary>
        public const int MaxNameLength = 256;

        /// <summary>The most channels of a convolution or batch norm, and of an input image.</summary>
        public const int MaxChannels = 65_536;

        /// <summary>The largest image height or width.</summary>
        public const int MaxImageSide = 16_384;

        /// <summary>The most values in one image, at the input and at the output of any layer (also bounds features and classes).</summary>
        public const long MaxActivation = 1L << 24;

        /// <summary>The most stored values over all tensors (512 MB of float32).</summary>
        public const long MaxParameters = 1L << 27;

        /// <summary>The most multiply-accumulates for one image.</summary>
        public const long MaxMultiplyAccumulates = 1L << 36;

        /// <summary>The largest magnitude a stored float32 value may have: beyond it one weight can overflow a forward pass to infinity.</summary>
        public const float MaxAbsValue = 1e10f;

        /// <summary>A tensor a definition implies: its name in the state dictionary, element type, shape and value constraint.</summary>
        public sealed record ExpectedTensor(string Name, TensorElement Element, long[] Shape, TensorConstraint Constraint = TensorConstraint.None, long Bound = 0)
        {
            /// <summary>The number of elements.</summary>
            public long Elements => Shape.Aggregate(1L, (a, b) => a * b);

            /// <summary>The shape as text, e.g. <c>[10,84]</c>.</summary>
            public string ShapeText => "[" + string.Join(",", Shape) + "]";
        }

        /// <summary>Checks everything a definition can express; throws <see cref="InvalidOperationException"/> naming the
        /// layer and field. Runs before <see cref="NetworkDefinition.Validate"/> on stored definitions.</summary>
        public static void Check(NetworkDefinition definition)
        {
            if (definition.Architecture is null)
                throw new InvalidOperationException("Field 'Architecture' is missing.");
            if (definition.Architecture.Length > MaxNameLength)
                throw new InvalidOperationException($"Field 'Architecture' has {definition.Architecture.Length} characters; at most {MaxNameLength} are allowed.");
            ImageShape input = definition.Input;
            CheckRange("Input.Channels", input.Channels, 1, MaxChannels);
            CheckRange("Input.Height", input.Height, 1, MaxImageSide);
            CheckRange("Input.Width", input.Width, 1, MaxImageSide);
            if ((long)input.Channels * input.Height * input.Width > MaxActivation)
                throw new InvalidOperationException($"Field 'Input' ({input}) has more than {MaxActivation} values per image.");
            CheckRange("Classes", definition.Classes, 2, (int)MaxActivation);
            if (definition.Layers is null)
                throw new InvalidOperationException("Field 'Layers' is missing.");
            int count = 0;
            CheckLayers(definition.Layers, "Layers", 0, ref count);

            // Fields are in range, so shapes can be inferred without overflow; every layer output is bounded too.
            long macs = 0;
            Walk(definition.Layers, definition.InputDimensions, ref macs);
            long parameters = ExpectedTensors(definition).Sum(t => t.Elements);
            if (parameters > MaxParameters)
                throw new InvalidOperationException($"The layers declare {parameters} stored values; at most {MaxParameters} are allowed.");
        }

        private static void CheckLayers(IReadOnlyList<LayerDefinition> layers, string path, int depth, ref int count)
        {
            if (depth > MaxDepth)
                throw new InvalidOperationException($"'{path}' nests residual blocks {depth} deep; at most {MaxDepth} levels are allowed.");
            for (int i = 0; i < layers.Count; i++)
            {
                LayerDefinition? layer = layers[i];
                string where = $"{path}[{i}]";
                if (layer is null)
                    throw new InvalidOperationException($"'{where}' is null.");
                if (++count > MaxLayers)
                    throw new InvalidOperationException($"The definition has more than {MaxLayers} layers.");
                if (layer.Name is null)
                    throw new InvalidOperationException($"'{where}' has no 'Name'.");
                if (layer.Name.Length > MaxNameLength)
                    throw new InvalidOperationException($"Field 'Name' of '{where}' has {layer.Name.Length} characters; at most {MaxNameLength} are allowed.");
                CheckFields(layer);
                if (layer is ResidualBlock block)
                {
                    if (block.Body is null)
                        throw new InvalidOperationException($"Field 'Body' of layer '{layer.Name}' is missing.");
                    if (block.Shortcut is null)
                        throw new InvalidOperationException($"Field 'Shortcut' of layer '{layer.Name}' is missing.");
                    CheckLayers(block.Body, $"{path}/{layer.Name}.Body", depth + 1, ref count);
                    CheckLayers(block.Shortcut, $"{path}/{layer.Name}.Shortcut", depth + 1, ref count);
                }
            }
        }

        /// <summary>The fields of one layer, on their own (shapes are checked by the walk).</summary>
        private static void CheckFields(LayerDefinition layer)
        {
            switch (layer)
            {
                case NormalizeLayer n:
                    if (n.Mean is null || n.Std is null)
                        throw new InvalidOperationException($"Layer '{n.Name}' (NormalizeLayer) lacks field '{(n.Mean is null ? "Mean" : "Std")}'.");
                    NormalizeLayer.CheckStatistics(n);
                    break;
                case KernelSparseConv2dLayer k:
                    KernelSparseConv2dLayer.CheckConnections(k);
                    break;
                case KernelLayerDefinition k:
                    KernelLayerDefinition.CheckFields(k);
                    break;
                case BatchNorm2dLayer b:
                    LayerField(b, "Channels", b.Channels, 1, MaxChannels);
                    break;
                case MaxPool2dLayer p:
                    LayerField(p, "KernelSize", p.KernelSize, 1, MaxImageSide);
                    break;
                case LinearLayer l:
                    LayerField(l, "InFeatures", l.InFeatures, 1, (int)MaxActivation);
                    LayerField(l, "OutFeatures", l.OutFeatures, 1, (int)MaxActivation);
                    break;
            }
        }

        private static void Walk(IReadOnlyList<LayerDefinition> layers, int[] input, ref long macs)
        {
            int[] shape = input;
            foreach (LayerDefinition layer in layers)
            {
                if (layer is ResidualBlock block)
                {
                    // The branches first, so that every inner output is bounded before the block adds them up.
                    Walk(block.Body, shape, ref macs);
                    Walk(block.Shortcut, shape, ref macs);
                }
                int[] output = layer.OutputShape(shape);
                long values = output.Aggregate(1L, (a, b) => a * b);
                if (output.Any(d => d < 1) || values > MaxActivation)
                    throw new InvalidOperationException($"Layer '{layer.Name}' ({layer.GetType().Name}) outputs [{string.Join(",", output)}]: it must have between 1 and {MaxActivation} values per image.");
                if (layer is not ResidualBlock)
                    macs += layer.MultiplyAccumulates(shape);
                if (macs > MaxMultiplyAccumulates)
                    throw new InvalidOperationException($"The layers up to '{layer.Name}' cost more than {MaxMultiplyAccumulates} multiply-accumulates per image.");
                shape = output;
            }
        }

        /// <summary>Throws naming <paramref name="layer"/> and <paramref name="field"/> when the value is outside [min, max].</summary>
        public static void LayerField(LayerDefinition layer, string field, long value, long min, long max)
        {
            if (value < min || value > max)
            {
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                    $"Layer '{layer.Name}' ({layer.GetType().Name}) has {field} {value}; it must be between {min} and {max}."));
            }
        }

        private static void CheckRange(string field, int value, int min, long max)
        {
            if (value < min || value > max)
                throw new InvalidOperationException($"Field '{field}' is {value}; it must be between {min} and {max}.");
        }

        /// <summary>
        /// The tensors the network's state dictionary holds — those <c>Weights.bin</c> must hold, with the same names,
        /// element types and shapes (<c>NetworkModules</c> builds modules that register exactly these).
        /// </summary>
        public static List<ExpectedTensor> ExpectedTensors(NetworkDefinition definition)
        {
            var result = new List<ExpectedTensor>();
            AddTensors(definition.Layers, "", result);
            return result;
        }

        private static void AddTensors(IReadOnlyList<LayerDefinition> layers, string prefix, List<ExpectedTensor> result)
        {
            foreach (LayerDefinition layer in layers)
            {
                string p = prefix + layer.Name + ".";
                switch (layer)
                {
                    case Conv2dLayer c:
                        result.Add(new(p + "weight", TensorElement.Float32, new long[] { c.OutChannels, c.InChannels, c.KernelSize, c.KernelSize }));
                        if (c.Bias)
                            result.Add(new(p + "bias", TensorElement.Float32, new long[] { c.OutChannels }));
                        break;
                    case KernelSparseConv2dLayer k:
                        result.Add(new(p + "weight", TensorElement.Float32, new long[] { k.Connections, k.KernelSize, k.KernelSize }));
                        result.Add(new(p + "connections", TensorElement.Int64, new long[] { k.Connections }, TensorConstraint.AscendingBelow,
                            (long)k.OutChannels * k.InChannels));
                        if (k.Bias)
                            result.Add(new(p + "bias", TensorElement.Float32, new long[] { k.OutChannels }));
                        break;
                    case BatchNorm2dLayer b:
                        result.Add(new(p + "weight", TensorElement.Float32, new long[] { b.Channels }));
                        result.Add(new(p + "bias", TensorElement.Float32, new long[] { b.Channels }));
                        result.Add(new(p + "running_mean", TensorElement.Float32, new long[] { b.Channels }));
                        result.Add(new(p + "running_var", TensorElement.Float32, new long[] { b.Channels }, TensorConstraint.NonNegative));
                        result.Add(new(p + "num_batches_tracked", TensorElement.Int64, Array.Empty<long>()));
                        break;
                    case LinearLayer l:
                        result.Add(new(p + "weight", TensorElement.Float32, new long[] { l.OutFeatures, l.InFeatures }));
                        if (l.Bias)
                            result.Add(new(p + "bias", TensorElement.Float32, new long[] { l.OutFeatures }));
                        break;
                    case ResidualBlock r:
                        AddTensors(r.Body, p + NetworkModules.BodyName + ".", result);
                        AddTensors(r.Shortcut, p + NetworkModules.ShortcutName + ".", result);
                        break;
                    case ShiftAttentionConv2dLayer s:
                        long rows = s.Shared ? 1 : s.OutChannels;
                        result.Add(new(p + "weight", TensorElement.Float32, new long[] { s.OutChannels, s.InChannels, s.KernelSize, s.KernelSize }));
                        result.Add(new(p + (s.Hardened ? "mask" : "attention"), TensorElement.Float32, new long[] { rows, s.InChannels, (long)s.KernelSize * s.KernelSize }));
                        result.Add(new(p + "temperature", TensorElement.Float32, new long[] { 1 }));
                        if (s.Bias)
                            result.Add(new(p + "bias", TensorElement.Float32, new long[] { s.OutChannels }));
                        break;
                    case ShiftConv2dLayer s:
                        result.Add(new(p + "weight", TensorElement.Float32, new long[] { s.OutChannels, s.InChannels }));
                        if (s.Bias)
                            result.Add(new(p + "bias", TensorElement.Float32, new long[] { s.OutChannels }));
                        break;
                    case ShiftPointwiseConv2dLayer s:
                        result.Add(new(p + "weight", TensorElement.Float32, new long[] { s.OutChannels, s.InChannels }));
                        if (s.Bias)
                            result.Add(new(p + "bias", TensorElement.Float32, new long[] { s.OutChannels }));
                        result.Add(new(p + "shift", TensorElement.UInt8, s.Shared ? new long[] { s.InChannels } : new long[] { s.OutChannels, s.InChannels },
                            TensorConstraint.Below, s.KernelSize * s.KernelSize));
                        break;
                }
            }
        }
    }

    /// <summary>The element types of stored tensors.</summary>
    internal enum TensorElement : byte
    {
        /// <summary>32-bit float.</summary>
        Float32 = 0,

        /// <summary>64-bit signed integer.</summary>
        Int64 = 1,

        /// <summary>Unsigned byte.</summary>
        UInt8 = 2,
    }

    /// <summary>What a stored tensor's values must satisfy beyond their type (float32 values are always finite and bounded).</summary>
    internal enum TensorConstraint
    {
        /// <summary>Nothing more.</summary>
        None,

        /// <summary>Every value is at least 0 (batch-norm variances).</summary>
        NonNegative,

        /// <summary>Every value is below <see cref="DefinitionLimits.ExpectedTensor.Bound"/> (shift indices, below k²).</summary>
        Below,

        /// <summary>The values are strictly ascending, at least 0 and below <see cref="DefinitionLimits.ExpectedTensor.Bound"/>
        /// (the connections of a kernel-sparse convolution).</summary>
        AscendingBelow,
    }
}
