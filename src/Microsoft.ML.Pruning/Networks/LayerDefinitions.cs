// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>
    /// One layer of a <see cref="NetworkDefinition"/>: a serializable description from which the TorchSharp
    /// module is built, shapes are inferred and multiply-accumulates are counted. Pruners rewrite
    /// definitions (fewer channels, other layer kinds), so the deployed model is whatever its definition says.
    /// </summary>
    [JsonPolymorphic(TypeDiscriminatorPropertyName = "kind")]
    [JsonDerivedType(typeof(NormalizeLayer), "normalize")]
    [JsonDerivedType(typeof(Conv2dLayer), "conv2d")]
    [JsonDerivedType(typeof(BatchNorm2dLayer), "batchnorm2d")]
    [JsonDerivedType(typeof(ReluLayer), "relu")]
    [JsonDerivedType(typeof(MaxPool2dLayer), "maxpool2d")]
    [JsonDerivedType(typeof(GlobalAvgPoolLayer), "globalavgpool")]
    [JsonDerivedType(typeof(FlattenLayer), "flatten")]
    [JsonDerivedType(typeof(LinearLayer), "linear")]
    [JsonDerivedType(typeof(ResidualBlock), "residual")]
    [JsonDerivedType(typeof(ShiftAttentionConv2dLayer), "shiftattention2d")]
    [JsonDerivedType(typeof(ShiftConv2dLayer), "shift2d")]
    [JsonDerivedType(typeof(ShiftPointwiseConv2dLayer), "shiftpointwise2d")]
    [JsonDerivedType(typeof(KernelSparseConv2dLayer), "kernelsparse2d")]
    public abstract record LayerDefinition
    {
        /// <summary>Module name; parameters are named <c>{Name}.weight</c> etc. Unique among siblings, no dots.</summary>
        public required string Name { get; init; }

        /// <summary>The output shape for an input of <paramref name="input"/> (per image, no batch axis).</summary>
        public abstract int[] OutputShape(int[] input);

        /// <summary>Multiply-accumulates of a forward pass of one image (comparisons and additions count zero).</summary>
        public virtual long MultiplyAccumulates(int[] input) => 0;

        /// <summary>Throws an <see cref="InvalidOperationException"/> naming this layer when <paramref name="input"/> does not fit it.</summary>
        protected void Require(bool condition, int[] input, string expectation)
        {
            if (!condition)
                throw new InvalidOperationException($"Layer '{Name}' ({GetType().Name}) expects {expectation}, but its input has shape [{string.Join(",", input)}].");
        }
    }

    /// <summary>Per-channel standardization <c>(x - mean) / std</c>, with statistics fixed at training time.</summary>
    public sealed record NormalizeLayer : LayerDefinition
    {
        /// <summary>Per-channel mean.</summary>
        public required float[] Mean { get; init; }

        /// <summary>Per-channel standard deviation.</summary>
        public required float[] Std { get; init; }

        /// <inheritdoc/>
        public override int[] OutputShape(int[] input)
        {
            CheckStatistics(this);
            Require(input.Length == 3 && input[0] == Mean.Length, input, $"a [{Mean.Length},H,W] image");
            return input;
        }

        /// <summary>Throws naming the layer and field unless Mean and Std are present, of equal length (1 to
        /// <see cref="DefinitionLimits.MaxChannels"/>), finite, and every Std positive with a finite inverse.</summary>
        internal static void CheckStatistics(NormalizeLayer layer)
        {
            if (layer.Mean is null || layer.Std is null)
                throw new InvalidOperationException($"Layer '{layer.Name}' (NormalizeLayer) lacks field '{(layer.Mean is null ? "Mean" : "Std")}'.");
            DefinitionLimits.LayerField(layer, "Mean length", layer.Mean.Length, 1, DefinitionLimits.MaxChannels);
            if (layer.Std.Length != layer.Mean.Length)
                throw new InvalidOperationException($"Layer '{layer.Name}' (NormalizeLayer) has {layer.Mean.Length} Mean values but {layer.Std.Length} Std values.");
            for (int i = 0; i < layer.Mean.Length; i++)
            {
                if (!float.IsFinite(layer.Mean[i]) || Math.Abs(layer.Mean[i]) > DefinitionLimits.MaxAbsValue)
                    throw new InvalidOperationException(FormattableString.Invariant($"Layer '{layer.Name}' (NormalizeLayer) has Mean[{i}] = {layer.Mean[i]}; it must be finite, at most {DefinitionLimits.MaxAbsValue} in magnitude."));
                if (!(layer.Std[i] > 0) || !float.IsFinite(layer.Std[i]) || !float.IsFinite(1f / layer.Std[i]))
                    throw new InvalidOperationException(FormattableString.Invariant($"Layer '{layer.Name}' (NormalizeLayer) has Std[{i}] = {layer.Std[i]}; it must be finite and greater than 0."));
            }
        }
    }

    /// <summary>
    /// A layer that slides a square k×k window over a [C_in, H, W] image with a stride and zero padding: a convolution, or
    /// a layer that takes a convolution's place (the shift layers).
    /// </summary>
    public abstract record KernelLayerDefinition : LayerDefinition
    {
        /// <summary>Input channels.</summary>
        public required int InChannels { get; init; }

        /// <summary>Output channels.</summary>
        public required int OutChannels { get; init; }

        /// <summary>Kernel height and width (for the shift layers, the neighbourhood the shifts range over).</summary>
        public required int KernelSize { get; init; }

        /// <summary>Stride.</summary>
        public int Stride { get; init; } = 1;

        /// <summary>Zero padding on every side (<c>KernelSize / 2</c> keeps the size at stride 1).</summary>
        public int Padding { get; init; }

        /// <summary>Whether the layer has a bias.</summary>
        public bool Bias { get; init; } = true;

        /// <inheritdoc/>
        public override int[] OutputShape(int[] input)
        {
            CheckFields(this);
            Require(input.Length == 3 && input[0] == InChannels, input, $"[{InChannels},H,W]");
            long h = (input[1] + 2L * Padding - KernelSize) / Stride + 1;
            long w = (input[2] + 2L * Padding - KernelSize) / Stride + 1;
            Require(input[1] + 2L * Padding >= KernelSize && input[2] + 2L * Padding >= KernelSize, input,
                $"an image of at least {KernelSize - 2L * Padding}x{KernelSize - 2L * Padding}");
            return new[] { OutChannels, (int)h, (int)w };
        }

        /// <summary>The largest kernel size.</summary>
        internal const int MaxKernelSize = 255;

        /// <summary>Throws naming the layer and field unless channels are 1 to <see cref="DefinitionLimits.MaxChannels"/>, the
        /// kernel size 1 to <see cref="MaxKernelSize"/>, the stride 1 to <see cref="DefinitionLimits.MaxImageSide"/> and the
        /// padding 0 to kernel size − 1.</summary>
        internal static void CheckFields(KernelLayerDefinition layer)
        {
            DefinitionLimits.LayerField(layer, "InChannels", layer.InChannels, 1, DefinitionLimits.MaxChannels);
            DefinitionLimits.LayerField(layer, "OutChannels", layer.OutChannels, 1, DefinitionLimits.MaxChannels);
            DefinitionLimits.LayerField(layer, "KernelSize", layer.KernelSize, 1, MaxKernelSize);
            DefinitionLimits.LayerField(layer, "Stride", layer.Stride, 1, DefinitionLimits.MaxImageSide);
            DefinitionLimits.LayerField(layer, "Padding", layer.Padding, 0, layer.KernelSize - 1);
        }
    }

    /// <summary>A 2-D convolution with square kernels and zero padding.</summary>
    public sealed record Conv2dLayer : KernelLayerDefinition
    {
        /// <inheritdoc/>
        public override long MultiplyAccumulates(int[] input)
        {
            int[] output = OutputShape(input);
            return (long)output[0] * output[1] * output[2] * InChannels * KernelSize * KernelSize;
        }
    }

    /// <summary>
    /// A k×k convolution that keeps only some of its input→output connections (kernels): per output channel, the list of
    /// the input channels it reads and one k×k kernel for each, <c>y[o] = b[o] + Σ_{i kept for o} K[o,i] ⋆ x[i]</c>. This is
    /// what kernel-level pruning (Synaptic Strength, kernel-norm pruning) leaves: it stores and computes the kept kernels only.
    /// </summary>
    /// <remarks>
    /// Tensors: <c>weight</c> float32 [<see cref="Connections"/>, k, k], the kept kernels, ordered by output channel and then
    /// by input channel; <c>connections</c> int64 [<see cref="Connections"/>], the connection of each kernel as
    /// <c>o · InChannels + i</c>, strictly ascending (so each output's inputs are ascending and distinct) and below
    /// <c>OutChannels · InChannels</c>; <c>bias</c> [out] when <see cref="KernelLayerDefinition.Bias"/>. An output channel
    /// without connections outputs its bias.
    /// </remarks>
    public sealed record KernelSparseConv2dLayer : KernelLayerDefinition
    {
        /// <summary>The number of kept connections (kernels), 0 to <c>OutChannels · InChannels</c>.</summary>
        public required int Connections { get; init; }

        /// <inheritdoc/>
        public override int[] OutputShape(int[] input)
        {
            CheckConnections(this);
            return base.OutputShape(input);
        }

        /// <summary>Connections·k²·H'·W': every kept kernel once per output pixel.</summary>
        public override long MultiplyAccumulates(int[] input)
        {
            int[] output = OutputShape(input);
            return (long)output[1] * output[2] * Connections * KernelSize * KernelSize;
        }

        /// <summary>Throws naming the layer and field unless the kernel fields are valid and <see cref="Connections"/> is
        /// between 0 and OutChannels·InChannels.</summary>
        internal static void CheckConnections(KernelSparseConv2dLayer layer)
        {
            CheckFields(layer);
            DefinitionLimits.LayerField(layer, "Connections", layer.Connections, 0, (long)layer.InChannels * layer.OutChannels);
        }
    }

    /// <summary>Batch normalization over channels (affine, running statistics).</summary>
    public sealed record BatchNorm2dLayer : LayerDefinition
    {
        /// <summary>Channels.</summary>
        public required int Channels { get; init; }

        /// <inheritdoc/>
        public override int[] OutputShape(int[] input)
        {
            DefinitionLimits.LayerField(this, "Channels", Channels, 1, DefinitionLimits.MaxChannels);
            Require(input.Length == 3 && input[0] == Channels, input, $"[{Channels},H,W]");
            return input;
        }
    }

    /// <summary>Rectified linear unit.</summary>
    public sealed record ReluLayer : LayerDefinition
    {
        /// <inheritdoc/>
        public override int[] OutputShape(int[] input) => input;
    }

    /// <summary>Max pooling with a square window and a stride equal to the window.</summary>
    public sealed record MaxPool2dLayer : LayerDefinition
    {
        /// <summary>Window size and stride.</summary>
        public int KernelSize { get; init; } = 2;

        /// <inheritdoc/>
        public override int[] OutputShape(int[] input)
        {
            DefinitionLimits.LayerField(this, "KernelSize", KernelSize, 1, DefinitionLimits.MaxImageSide);
            Require(input.Length == 3 && input[1] >= KernelSize && input[2] >= KernelSize, input, $"[C,H,W] with H,W >= {KernelSize}");
            return new[] { input[0], input[1] / KernelSize, input[2] / KernelSize };
        }
    }

    /// <summary>Global average pooling: [C,H,W] to [C].</summary>
    public sealed record GlobalAvgPoolLayer : LayerDefinition
    {
        /// <inheritdoc/>
        public override int[] OutputShape(int[] input)
        {
            Require(input.Length == 3, input, "[C,H,W]");
            return new[] { input[0] };
        }
    }

    /// <summary>Flattens [C,H,W] to [C·H·W].</summary>
    public sealed record FlattenLayer : LayerDefinition
    {
        /// <inheritdoc/>
        public override int[] OutputShape(int[] input)
        {
            long size = input.Aggregate(1L, (a, b) => Math.Min(a * b, int.MaxValue + 1L));
            Require(size <= int.MaxValue, input, $"at most {int.MaxValue} values");
            return new[] { (int)size };
        }
    }

    /// <summary>A fully connected layer.</summary>
    public sealed record LinearLayer : LayerDefinition
    {
        /// <summary>Input features.</summary>
        public required int InFeatures { get; init; }

        /// <summary>Output features.</summary>
        public required int OutFeatures { get; init; }

        /// <summary>Whether the layer has a bias.</summary>
        public bool Bias { get; init; } = true;

        /// <inheritdoc/>
        public override int[] OutputShape(int[] input)
        {
            DefinitionLimits.LayerField(this, "InFeatures", InFeatures, 1, int.MaxValue);
            DefinitionLimits.LayerField(this, "OutFeatures", OutFeatures, 1, int.MaxValue);
            Require(input.Length == 1 && input[0] == InFeatures, input, $"[{InFeatures}]");
            return new[] { OutFeatures };
        }

        /// <inheritdoc/>
        public override long MultiplyAccumulates(int[] input) => (long)InFeatures * OutFeatures;
    }

    /// <summary>
    /// A residual block: <c>relu(body(x) + shortcut(x))</c>, with an identity shortcut when
    /// <see cref="Shortcut"/> is empty (ResNet's BasicBlock with projection shortcuts).
    /// </summary>
    public sealed record ResidualBlock : LayerDefinition
    {
        /// <summary>The residual branch.</summary>
        public required IReadOnlyList<LayerDefinition> Body { get; init; }

        /// <summary>The shortcut branch; empty for identity.</summary>
        public IReadOnlyList<LayerDefinition> Shortcut { get; init; } = Array.Empty<LayerDefinition>();

        /// <inheritdoc/>
        public override int[] OutputShape(int[] input)
        {
            int[] body = NetworkDefinition.OutputShapeOf(Body, input);
            int[] shortcut = NetworkDefinition.OutputShapeOf(Shortcut, input);
            Require(body.SequenceEqual(shortcut), input,
                $"body and shortcut outputs of equal shape (body [{string.Join(",", body)}], shortcut [{string.Join(",", shortcut)}])");
            return body;
        }

        /// <inheritdoc/>
        public override long MultiplyAccumulates(int[] input)
            => NetworkDefinition.MultiplyAccumulatesOf(Body, input) + NetworkDefinition.MultiplyAccumulatesOf(Shortcut, input);

        /// <summary>Value equality over the branches' contents (records compare lists by reference).</summary>
        public bool Equals(ResidualBlock? other)
            => other is not null && Name == other.Name && Body.SequenceEqual(other.Body) && Shortcut.SequenceEqual(other.Shortcut);

        /// <inheritdoc/>
        public override int GetHashCode() => HashCode.Combine(Name, Body.Count, Shortcut.Count);
    }
}
