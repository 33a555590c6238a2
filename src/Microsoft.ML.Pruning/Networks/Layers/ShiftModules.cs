// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Networks.Layers
{
    /// <summary>
    /// A shift attention layer while it trains: a k×k convolution with kernel <c>W ⊙ P</c>, where
    /// <c>P = softmax(T · A / std(A))</c> over the k² taps of each (output, input) pair (or of each input channel when shared),
    /// or, once hardened, a fixed one-hot mask.
    /// </summary>
    /// <remarks>Fields carry the registered names so that TorchSharp's <c>to(device)</c> updates them.</remarks>
    internal sealed class ShiftAttentionConv2dModule : nn.Module<Tensor, Tensor>
    {
        // The logits' scale is free (only their ratio to their own deviation matters); the floor only guards against 0/0.
        private const double MinimumDeviation = 1e-12;

        private readonly Parameter weight;
        private readonly Parameter? attention;
        private readonly Tensor? mask;
        private readonly Tensor temperature;
        private readonly Parameter? bias;
        private readonly long _rows;
        private readonly long[] _stride;
        private readonly long[] _padding;

        public ShiftAttentionConv2dModule(ShiftAttentionConv2dLayer layer) : base(layer.Name)
        {
            InChannels = layer.InChannels;
            OutChannels = layer.OutChannels;
            KernelSize = layer.KernelSize;
            Shared = layer.Shared;
            _rows = layer.Shared ? 1 : layer.OutChannels;
            _stride = new long[] { layer.Stride, layer.Stride };
            _padding = new long[] { layer.Padding, layer.Padding };
            int taps = layer.KernelSize * layer.KernelSize;

            weight = new Parameter(empty(layer.OutChannels, layer.InChannels, layer.KernelSize, layer.KernelSize));
            // He initialization (fan-out) for what the layer computes: the attention keeps about one tap per pair, so the
            // scale of a 1×1 convolution, k times that of a k×k one. At the k×k scale the outputs start k² times too weak,
            // and batch norm's running statistics lag far behind in short runs.
            nn.init.kaiming_normal_(weight, mode: nn.init.FanInOut.FanOut, nonlinearity: nn.init.NonlinearityType.ReLU);
            using (no_grad())
            {
                using Scalar kernelSize = layer.KernelSize.ToScalar();
                weight.mul_(kernelSize);
            }
            register_parameter("weight", weight);
            if (layer.Hardened)
            {
                mask = zeros(_rows, layer.InChannels, taps);
                register_buffer("mask", mask);
            }
            else
            {
                // U(0, 1) logits, as the reference implementation draws them.
                attention = new Parameter(rand(_rows, layer.InChannels, taps));
                register_parameter("attention", attention);
            }
            temperature = ones(1);
            register_buffer("temperature", temperature);
            if (layer.Bias)
            {
                bias = new Parameter(zeros(layer.OutChannels));
                register_parameter("bias", bias);
            }
        }

        public int InChannels { get; }

        public int OutChannels { get; }

        public int KernelSize { get; }

        public bool Shared { get; }

        public bool Hardened => mask is not null;

        /// <summary>The inverse temperature <c>T</c> that multiplies the normalized logits.</summary>
        public double Temperature
        {
            get => temperature.item<float>();
            set
            {
                using var noGrad = no_grad();
                using Scalar held = value.ToScalar();
                temperature.fill_(held);
            }
        }

        /// <summary>The attention <c>P</c> [rows, in, k²] (rows = out, or 1 when shared); the caller owns the result.</summary>
        public Tensor Attention()
        {
            if (mask is not null)
                return mask.alias();
            if (KernelSize == 1)
                return ones_like(attention!);
            Tensor logits = attention!;
            Tensor deviation = logits.std(2, true, true).clamp_min(HeldScalars.Of(MinimumDeviation));
            return (logits / deviation * temperature).softmax(2);
        }

        /// <summary>Replaces the hardened mask (same shape).</summary>
        public void SetMask(Tensor value)
        {
            if (mask is null)
                throw new InvalidOperationException($"Layer '{GetName()}' is not hardened; it has no mask.");
            using var noGrad = no_grad();
            mask.copy_(value);
        }

        public override Tensor forward(Tensor input)
        {
            using Tensor probabilities = Attention();
            Tensor kernel = weight * probabilities.view(_rows, InChannels, KernelSize, KernelSize);
            return Convolution.Conv2d(input, kernel, bias, _stride, _padding);
        }
    }

    /// <summary>
    /// A shift + pointwise layer: <see cref="ShiftPointwiseConv2dLayer"/> with stored shifts, or the fixed grouped
    /// <see cref="ShiftConv2dLayer"/> whose shifts follow from the channel index. The arithmetic is in
    /// <see cref="ShiftPointwiseKernel"/>, rebuilt whenever the shift indices or the device change.
    /// </summary>
    internal sealed class ShiftPointwiseConv2dModule : nn.Module<Tensor, Tensor>
    {
        private readonly Parameter weight;
        private readonly Parameter? bias;
        private readonly Tensor shift;
        private readonly int _inChannels;
        private readonly int _outChannels;
        private readonly int _kernelSize;
        private readonly int _stride;
        private readonly int _padding;
        private readonly bool _shared;
        private readonly object _gate = new();
        private ShiftPointwiseKernel? _kernel;

        /// <param name="name">Module name.</param>
        /// <param name="inChannels">Input channels.</param>
        /// <param name="outChannels">Output channels.</param>
        /// <param name="kernelSize">The k of the k×k neighbourhood.</param>
        /// <param name="stride">Stride.</param>
        /// <param name="padding">Padding of the replaced k×k convolution.</param>
        /// <param name="shared">One shift per input channel instead of one per pair.</param>
        /// <param name="hasBias">Whether the layer has a bias.</param>
        /// <param name="fixedShifts">Shifts that are part of the architecture (not stored), or null for a stored <c>shift</c> buffer.</param>
        public ShiftPointwiseConv2dModule(string name, int inChannels, int outChannels, int kernelSize, int stride, int padding,
            bool shared, bool hasBias, byte[]? fixedShifts) : base(name)
        {
            _inChannels = inChannels;
            _outChannels = outChannels;
            _kernelSize = kernelSize;
            _stride = stride;
            _padding = padding;
            _shared = shared;

            weight = new Parameter(empty(outChannels, inChannels));
            nn.init.kaiming_normal_(weight, mode: nn.init.FanInOut.FanOut, nonlinearity: nn.init.NonlinearityType.ReLU);
            register_parameter("weight", weight);
            if (hasBias)
            {
                bias = new Parameter(zeros(outChannels));
                register_parameter("bias", bias);
            }
            long[] shape = shared ? new long[] { inChannels } : new long[] { outChannels, inChannels };
            shift = fixedShifts is null ? zeros(shape, ScalarType.Byte) : tensor(fixedShifts).reshape(shape);
            register_buffer("shift", shift, persistent: fixedShifts is null);
        }

        public override Tensor forward(Tensor input) => Kernel().Forward(input, weight, bias, training);

        private ShiftPointwiseKernel Kernel()
        {
            lock (_gate)
            {
                // A load copies new indices into the buffer in place; comparing them (a few KB) is cheaper than any hook.
                using Tensor cpu = shift.device_type == DeviceType.CPU ? shift.alias() : shift.cpu();
                ReadOnlySpan<byte> shifts = cpu.bytes;
                if (_kernel is null || !_kernel.Matches(shifts, weight.device))
                {
                    _kernel?.Dispose();
                    _kernel = new ShiftPointwiseKernel(_inChannels, _outChannels, _kernelSize, _stride, _padding, _shared, shifts, weight.device);
                }
                return _kernel;
            }
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _kernel?.Dispose();
                _kernel = null;
            }
            base.Dispose(disposing);
        }
    }
}
