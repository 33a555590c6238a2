// Licensed under the MIT license.

using System;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>What the 3×3 convolutions of <see cref="ImageClassifierArchitecture.VggSmall"/> and
    /// <see cref="ImageClassifierArchitecture.ResNet20"/> are made of (the stem convolution always stays a convolution).</summary>
    public enum ConvolutionKind
    {
        /// <summary>Ordinary k×k convolutions (<see cref="Conv2dLayer"/>).</summary>
        Convolution,

        /// <summary>Fixed grouped shifts followed by a 1×1 convolution (Wu et al., "Shift"; <see cref="ShiftConv2dLayer"/>).</summary>
        Shift,

        /// <summary>Shift attention layers: one attention distribution over the k² shifts per (output, input) channel pair
        /// (<see cref="ShiftAttentionConv2dLayer"/>); trained by <c>mlContext.Transforms.PruneAttention</c>.</summary>
        ShiftAttention,

        /// <summary>Shift attention layers whose attention is shared by all output channels: one learned shift per input
        /// channel (<see cref="ShiftAttentionConv2dLayer.Shared"/>); trained by <c>mlContext.Transforms.PruneAttention</c>.</summary>
        ShiftAttentionShared,
    }

    /// <summary>
    /// A shift attention layer (Hacene et al., "Attention Based Pruning for Shift Networks"): a k×k convolution whose
    /// kernel is <c>W ⊙ P</c>, with <c>P = softmax(T · A / std(A))</c> over the k² taps of each (output, input) pair. The
    /// inverse temperature <c>T</c> grows during training until <c>P</c> is one-hot; each pair then keeps one weight and
    /// one shift (<see cref="ShiftPointwiseConv2dLayer"/>).
    /// </summary>
    /// <remarks>Tensors: <c>weight</c> [out, in, k, k]; <c>attention</c> logits [out, in, k²] ([1, in, k²] when
    /// <see cref="Shared"/>), or the buffer <c>mask</c> of the same shape once <see cref="Hardened"/>; <c>temperature</c> [1];
    /// <c>bias</c> [out] when <see cref="KernelLayerDefinition.Bias"/>.</remarks>
    public sealed record ShiftAttentionConv2dLayer : KernelLayerDefinition
    {
        /// <summary>One attention distribution per input channel, shared by all outputs, instead of one per pair.</summary>
        public bool Shared { get; init; }

        /// <summary>The attention is a fixed one-hot (or empty) mask instead of trainable logits.</summary>
        public bool Hardened { get; init; }

        /// <inheritdoc/>
        public override int[] OutputShape(int[] input)
            => ShiftLayerShapes.OutputShape(this, input);

        /// <summary>The cost of the k×k convolution it runs while training: out·in·k²·H·W.</summary>
        public override long MultiplyAccumulates(int[] input)
        {
            int[] output = OutputShape(input);
            return (long)output[0] * output[1] * output[2] * InChannels * KernelSize * KernelSize;
        }
    }

    /// <summary>
    /// The Shift layer of Wu et al. as a fixed baseline: the input channels are split into k² equal groups, each translated
    /// by one displacement of the k×k neighbourhood (with zero fill; the remainder goes to the identity group), then a 1×1
    /// convolution carries the stride. The shifts cost no parameters and no multiply-accumulates.
    /// </summary>
    /// <remarks>Tensors: <c>weight</c> [out, in], <c>bias</c> [out] when <see cref="KernelLayerDefinition.Bias"/>. The shifts follow from the
    /// channel index (<see cref="GroupedShifts"/>) and are not stored.</remarks>
    public sealed record ShiftConv2dLayer : KernelLayerDefinition
    {
        /// <inheritdoc/>
        public override int[] OutputShape(int[] input)
            => ShiftLayerShapes.OutputShape(this, input);

        /// <summary>The 1×1 convolution's cost, out·in·H·W; shifts are copies.</summary>
        public override long MultiplyAccumulates(int[] input)
        {
            int[] output = OutputShape(input);
            return (long)output[0] * output[1] * output[2] * InChannels;
        }

        /// <summary>
        /// The tap (<c>ky·k + kx</c>) of each of <paramref name="channels"/> input channels: k² equal groups of consecutive
        /// channels, the identity (centre) first, then the other taps in row-major order; the channels left over go to the
        /// identity. With fewer channels than taps, channel c takes the c-th tap of that order.
        /// </summary>
        public static byte[] GroupedShifts(int channels, int kernelSize)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(channels);
            ShiftLayerShapes.CheckKernel(kernelSize, nameof(kernelSize));
            int taps = kernelSize * kernelSize, centre = taps / 2;
            var order = new byte[taps];
            order[0] = (byte)centre;
            for (int t = 0, next = 1; t < taps; t++)
            {
                if (t != centre)
                    order[next++] = (byte)t;
            }
            int groupSize = channels / taps;
            var shifts = new byte[channels];
            for (int c = 0; c < channels; c++)
                shifts[c] = groupSize == 0 ? order[c] : c < groupSize * taps ? order[c / groupSize] : order[0];
            return shifts;
        }
    }

    /// <summary>
    /// The deployable form of a shift attention layer: each (output o, input i) pair keeps one weight and one shift,
    /// <c>y[o] = Σ_i w[o,i] · shift_{s(o,i)}(x[i]) + b[o]</c>, so it stores out·in weights and shift indices instead of
    /// out·in·k² kernel weights, and costs what a 1×1 convolution costs.
    /// </summary>
    /// <remarks>
    /// Tensors: <c>weight</c> [out, in] float32; <c>shift</c> uint8, [out, in] (or [in] when <see cref="Shared"/>), the tap
    /// <c>t = ky·k + kx</c> of the replaced k×k kernel, meaning output pixel (y, x) reads input pixel
    /// (<c>y·stride + ky − padding</c>, <c>x·stride + kx − padding</c>), zero outside; <c>bias</c> [out] when
    /// <see cref="KernelLayerDefinition.Bias"/> (folded batch norm). A pair whose attention was dropped has weight 0.
    /// </remarks>
    public sealed record ShiftPointwiseConv2dLayer : KernelLayerDefinition
    {
        /// <summary>One shift per input channel, shared by all outputs, instead of one per pair.</summary>
        public bool Shared { get; init; }

        /// <inheritdoc/>
        public override int[] OutputShape(int[] input)
            => ShiftLayerShapes.OutputShape(this, input);

        /// <summary>out·in·H·W: one multiply-accumulate per pair and output pixel; shifts are copies.</summary>
        public override long MultiplyAccumulates(int[] input)
        {
            int[] output = OutputShape(input);
            return (long)output[0] * output[1] * output[2] * InChannels;
        }
    }

    /// <summary>Shape rules shared by the shift layers: those of the k×k convolution they replace.</summary>
    internal static class ShiftLayerShapes
    {
        /// <summary>The largest kernel whose k² tap indices fit a byte.</summary>
        public const int MaxKernelSize = 15;

        public static void CheckKernel(int kernelSize, string name)
        {
            if (kernelSize < 1 || kernelSize % 2 == 0 || kernelSize > MaxKernelSize)
                throw new ArgumentOutOfRangeException(name, kernelSize, $"The kernel size must be odd, between 1 and {MaxKernelSize}; got {kernelSize}.");
        }

        /// <summary>The output shape of a shift layer, whose kernel size must also fit the byte-sized tap indices.</summary>
        public static int[] OutputShape(KernelLayerDefinition layer, int[] input)
        {
            var (inChannels, outChannels, kernelSize, stride, padding) = (layer.InChannels, layer.OutChannels, layer.KernelSize, layer.Stride, layer.Padding);
            if (kernelSize < 1 || kernelSize % 2 == 0 || kernelSize > MaxKernelSize || stride < 1 || padding < 0 || inChannels < 1 || outChannels < 1)
            {
                throw new InvalidOperationException(
                    $"Layer '{layer.Name}' ({layer.GetType().Name}) needs an odd kernel size in [1, {MaxKernelSize}], stride >= 1, padding >= 0 and channels >= 1; " +
                    $"it has kernel {kernelSize}, stride {stride}, padding {padding}, channels {inChannels}->{outChannels}.");
            }
            KernelLayerDefinition.CheckFields(layer);
            if (input.Length != 3 || input[0] != inChannels)
                throw new InvalidOperationException($"Layer '{layer.Name}' ({layer.GetType().Name}) expects [{inChannels},H,W], but its input has shape [{string.Join(",", input)}].");
            long h = (input[1] + 2L * padding - kernelSize) / stride + 1;
            long w = (input[2] + 2L * padding - kernelSize) / stride + 1;
            if (input[1] + 2L * padding < kernelSize || input[2] + 2L * padding < kernelSize)
                throw new InvalidOperationException($"Layer '{layer.Name}' ({layer.GetType().Name}) expects an image of at least {kernelSize - 2L * padding}x{kernelSize - 2L * padding}, but its input has shape [{string.Join(",", input)}].");
            return new[] { outChannels, (int)h, (int)w };
        }
    }
}
