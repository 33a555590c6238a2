// Licensed under the MIT license.

using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Networks.Layers
{
    /// <summary>
    /// The k×k convolution every module of the library runs, with a guard against a libtorch defect.
    /// </summary>
    /// <remarks>
    /// The single-precision CPU convolution of libtorch 2.10 (oneDNN 3.7) returns wrong values, off by whole units, on
    /// the AVX-512 CPUs measured here, for kernels larger than 1×1 (<c>ConvolutionTests</c>, against libtorch's
    /// double-precision convolution): the output when the input has more than 16 channels and not a multiple of 16 (24,
    /// 40, 43, 86… are wrong; 32, 48, 64 are right; 1×1 and depthwise kernels are right), and for a stride of 2 the
    /// gradient with respect to the input when the input has more than 16 channels and not a multiple of 32 (48, 80,
    /// 112), or, whatever the stride, when the output has a channel count that is not a multiple of 16 (1, 24, 43).
    /// Such channels are padded with zeros up to a safe count — input channels with zero weights, output channels with
    /// zero weights and bias, dropped from the result — which is the same convolution, exactly, through kernels that
    /// compute it right. Gradients flow through the padding to the original tensors. Output channels are padded only
    /// when the gradient with respect to the input is wanted.
    /// </remarks>
    internal static class Convolution
    {
        /// <summary>The input channel count the convolution runs with for <paramref name="channels"/> input channels.</summary>
        public static long SafeInputChannels(long channels, long kernelSize, long stride)
            => kernelSize == 1 || channels <= 16 ? channels : RoundUp(channels, stride > 1 ? 32 : 16);

        /// <summary>The output channel count the convolution runs with when the input's gradient is wanted.</summary>
        public static long SafeOutputChannels(long channels, long kernelSize)
            => kernelSize == 1 ? channels : RoundUp(channels, 16);

        /// <summary>Whether a convolution of these channel counts, kernel size and stride may be padded.</summary>
        public static bool Pads(long inChannels, long outChannels, long kernelSize, long stride)
            => SafeInputChannels(inChannels, kernelSize, stride) != inChannels || SafeOutputChannels(outChannels, kernelSize) != outChannels;

        /// <summary><c>conv2d(input, weight, bias)</c> with groups 1, padded where libtorch would be wrong.</summary>
        public static Tensor Conv2d(Tensor input, Tensor weight, Tensor? bias, long[] stride, long[] padding)
        {
            long outChannels = weight.shape[0], inChannels = weight.shape[1], kernelSize = weight.shape[2];
            long extraIn = SafeInputChannels(inChannels, kernelSize, stride[0]) - inChannels;
            long extraOut = input.requires_grad ? SafeOutputChannels(outChannels, kernelSize) - outChannels : 0;
            if (input.device_type != DeviceType.CPU || (extraIn == 0 && extraOut == 0))
                return nn.functional.conv2d(input, weight, bias, stride, padding);

            // pad() lists (before, after) per dimension from the last one: width, height, then channels.
            if (extraIn > 0)
                input = nn.functional.pad(input, new long[] { 0, 0, 0, 0, 0, extraIn });
            weight = nn.functional.pad(weight, new long[] { 0, 0, 0, 0, 0, extraIn, 0, extraOut });
            if (bias is not null && extraOut > 0)
                bias = nn.functional.pad(bias, new long[] { 0, extraOut });
            Tensor output = nn.functional.conv2d(input, weight, bias, stride, padding);
            return extraOut > 0 ? output.narrow(1, 0, outChannels) : output;
        }

        private static long RoundUp(long channels, long multiple) => (channels + multiple - 1) / multiple * multiple;
    }

    /// <summary>
    /// A <see cref="Conv2dLayer"/> whose channels <see cref="Convolution"/> pads: parameters <c>weight</c> and
    /// <c>bias</c>, as TorchSharp's <c>Conv2d</c> names them.
    /// </summary>
    internal sealed class PaddedConv2dModule : nn.Module<Tensor, Tensor>
    {
        private readonly TorchSharp.Modules.Parameter weight;
        private readonly TorchSharp.Modules.Parameter? bias;
        private readonly long[] _stride;
        private readonly long[] _padding;

        /// <summary>Takes over the initialized parameters of <paramref name="initialized"/> and disposes it.</summary>
        public PaddedConv2dModule(string name, TorchSharp.Modules.Conv2d initialized, long stride, long padding) : base(name)
        {
            using (no_grad())
            {
                weight = new TorchSharp.Modules.Parameter(initialized.weight!.detach().clone());
                bias = initialized.bias is null ? null : new TorchSharp.Modules.Parameter(initialized.bias.detach().clone());
            }
            initialized.Dispose();
            _stride = new[] { stride, stride };
            _padding = new[] { padding, padding };
            register_parameter("weight", weight);
            if (bias is not null)
                register_parameter("bias", bias);
        }

        public override Tensor forward(Tensor input) => Convolution.Conv2d(input, weight, bias, _stride, _padding);
    }
}
