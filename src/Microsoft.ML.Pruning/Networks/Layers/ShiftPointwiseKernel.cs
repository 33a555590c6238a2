// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Networks.Layers
{
    /// <summary>
    /// The arithmetic of a shift + pointwise layer, <c>y[o] = Σ_i w[o,i] · shift_{s(o,i)}(x[i]) + b[o]</c>, computed from the
    /// weights [out, in] and the tap indices exactly as <see cref="ShiftPointwiseConv2dLayer"/> stores them. Everything the
    /// layer computes goes through this one class, so a fused native kernel that reads the indices directly can replace
    /// its body without touching the module, the definition or the file format.
    /// </summary>
    /// <remarks>
    /// This version composes libtorch ops. Inference groups the (input channel, tap) pairs in use by tap: each group is
    /// copied, shifted, into one zero-filled tensor with a slice <c>copy_</c> (the fastest shift measured here), and one 1×1
    /// convolution with the matching weight columns sums them. The shared variant uses each input channel once, so that is
    /// a shift of the input plus a 1×1 convolution; the per-pair variant needs as many columns as distinct (channel, tap)
    /// pairs, up to in·k²; when more than half of those are in use, the copies plus the wide 1×1 convolution cost more than
    /// the equivalent k×k convolution with one-hot kernels, so that is what runs; so do small inputs (batch 1), where the
    /// dispatch cost of the copies' many small ops dominates. Training (when fine-tuning a compact layer) uses one-hot
    /// kernels too, whose backward pass is much cheaper than that of slice copies.
    /// </remarks>
    internal sealed class ShiftPointwiseKernel : IDisposable
    {
        private readonly int _inChannels;
        private readonly int _outChannels;
        private readonly int _kernelSize;
        private readonly int _stride;
        private readonly int _padding;
        private readonly bool _shared;
        private readonly byte[] _shifts;
        private readonly Group[] _groups;
        private readonly long _columns;
        private readonly Tensor? _columnChannels;
        private readonly Tensor? _columnMask;
        private readonly Tensor _oneHot;

        // Below this many shifted elements per call, the ~5 µs dispatch of each of the copies' ops outweighs their
        // per-element saving (about 1 ns over the one-hot convolution, measured here): small batches take the two-op path.
        private const long SmallInputElements = 1 << 17;

        /// <summary>Input channels of one column group: those that a tap reads, packed into consecutive columns.</summary>
        private readonly record struct Group(int Tap, long Offset, long Count, long FirstChannel, Tensor? Channels);

        /// <summary>Prepares the index structures for <paramref name="shifts"/> ([out·in] or [in] taps) on <paramref name="device"/>.</summary>
        public ShiftPointwiseKernel(int inChannels, int outChannels, int kernelSize, int stride, int padding, bool shared,
            ReadOnlySpan<byte> shifts, Device device)
        {
            int taps = kernelSize * kernelSize;
            if (shifts.Length != (shared ? inChannels : inChannels * outChannels))
                throw new ArgumentException($"Expected {(shared ? inChannels : inChannels * outChannels)} shift indices, got {shifts.Length}.", nameof(shifts));
            foreach (byte tap in shifts)
            {
                if (tap >= taps)
                    throw new InvalidOperationException($"A shift index is {tap}, but a {kernelSize}x{kernelSize} kernel has {taps} taps.");
            }
            _inChannels = inChannels;
            _outChannels = outChannels;
            _kernelSize = kernelSize;
            _stride = stride;
            _padding = padding;
            _shared = shared;
            _shifts = shifts.ToArray();
            Device = device;

            // The input channels each tap reads, in channel order.
            var channelsOfTap = new List<long>[taps];
            for (int t = 0; t < taps; t++)
                channelsOfTap[t] = new List<long>();
            for (int i = 0; i < inChannels; i++)
            {
                var used = new bool[taps];
                if (shared)
                    used[_shifts[i]] = true;
                else
                {
                    for (int o = 0; o < outChannels; o++)
                        used[_shifts[o * inChannels + i]] = true;
                }
                for (int t = 0; t < taps; t++)
                {
                    if (used[t])
                        channelsOfTap[t].Add(i);
                }
            }

            var groups = new List<Group>();
            var columnChannels = new List<long>();
            var columnTaps = new List<int>();
            for (int t = 0; t < taps; t++)
            {
                List<long> channels = channelsOfTap[t];
                if (channels.Count == 0)
                    continue;
                bool contiguous = channels[^1] - channels[0] == channels.Count - 1;
                groups.Add(new Group(t, columnChannels.Count, channels.Count, channels[0],
                    contiguous ? null : Keep(tensor(channels.ToArray(), device: device))));
                columnChannels.AddRange(channels);
                columnTaps.AddRange(Enumerable.Repeat(t, channels.Count));
            }
            _groups = groups.ToArray();
            _columns = columnChannels.Count;
            bool identity = _columns == inChannels && columnChannels.Select((c, index) => c == index).All(b => b);
            _columnChannels = identity ? null : Keep(tensor(columnChannels.ToArray(), device: device));

            if (!shared)
            {
                // Column c holds channel i read at tap t; output o uses it only when s(o, i) == t.
                var mask = new float[outChannels * _columns];
                for (int o = 0; o < outChannels; o++)
                {
                    for (int c = 0; c < _columns; c++)
                        mask[o * _columns + c] = _shifts[o * inChannels + (int)columnChannels[c]] == columnTaps[c] ? 1f : 0f;
                }
                _columnMask = Keep(tensor(mask, new long[] { outChannels, _columns }, device: device));
            }

            // One-hot k×k kernels for the training path: [in, 1, k, k] (depthwise) or [out, in, k·k].
            var oneHot = new float[(shared ? inChannels : outChannels * inChannels) * taps];
            for (int p = 0; p < _shifts.Length; p++)
                oneHot[p * taps + _shifts[p]] = 1f;
            _oneHot = Keep(shared
                ? tensor(oneHot, new long[] { inChannels, 1, kernelSize, kernelSize }, device: device)
                : tensor(oneHot, new long[] { outChannels, inChannels, taps }, device: device));
        }

        /// <summary>The device the index structures live on.</summary>
        public Device Device { get; }

        /// <summary>Number of columns of the inference 1×1 convolution: distinct (input channel, tap) pairs in use.</summary>
        public long Columns => _columns;

        /// <summary>Whether inference runs the equivalent one-hot k×k convolution rather than shifted copies and a 1×1 one.</summary>
        public bool UsesOneHotConvolution => !_shared && 2 * _columns > (long)_inChannels * _kernelSize * _kernelSize;

        /// <summary>Whether inference on a batch of <paramref name="batch"/> images of <paramref name="height"/>×<paramref name="width"/>
        /// runs as shifted copies and a 1×1 convolution.</summary>
        public bool UsesShiftedCopies(long batch, long height, long width)
            => !UsesOneHotConvolution && batch * _columns * OutputSize(height) * OutputSize(width) >= SmallInputElements;

        /// <summary>Whether this kernel was prepared for exactly these shift indices on this device.</summary>
        public bool Matches(ReadOnlySpan<byte> shifts, Device device)
            => device.type == Device.type && device.index == Device.index && shifts.SequenceEqual(_shifts);

        /// <summary>The layer's output for <paramref name="input"/> [N, in, H, W]; differentiable in input, weight and bias.</summary>
        public Tensor Forward(Tensor input, Tensor weight, Tensor? bias, bool training)
        {
            long[] stride = { _stride, _stride };
            long n = input.shape[0], height = input.shape[2], width = input.shape[3];
            if (training || !UsesShiftedCopies(n, height, width))
            {
                long[] padding = { _padding, _padding };
                if (_shared)
                {
                    Tensor shifted = nn.functional.conv2d(input, _oneHot, null, padding: padding, groups: _inChannels);
                    return nn.functional.conv2d(shifted, weight.view(_outChannels, _inChannels, 1, 1), bias, stride);
                }
                Tensor kernel = (weight.unsqueeze(2) * _oneHot).view(_outChannels, _inChannels, _kernelSize, _kernelSize);
                return Convolution.Conv2d(input, kernel, bias, stride, padding);
            }

            // Only the pixels the strided output reads are shifted: output pixel (y, x) of a tap reads input pixel
            // (y·stride + dy, x·stride + dx), zero outside the image.
            long outHeight = OutputSize(height), outWidth = OutputSize(width);
            Tensor columns = zeros(new long[] { n, _columns, outHeight, outWidth }, input.dtype, input.device);
            foreach (Group group in _groups)
            {
                long dy = group.Tap / _kernelSize - _padding, dx = group.Tap % _kernelSize - _padding;
                var (y0, y1) = Inside(dy, height, outHeight);
                var (x0, x1) = Inside(dx, width, outWidth);
                if (y1 <= y0 || x1 <= x0)
                    continue;
                Tensor source = _stride == 1
                    ? input.narrow(2, y0 + dy, y1 - y0).narrow(3, x0 + dx, x1 - x0)
                    : input.slice(2, y0 * _stride + dy, (y1 - 1) * _stride + dy + 1, _stride).slice(3, x0 * _stride + dx, (x1 - 1) * _stride + dx + 1, _stride);
                source = group.Channels is null ? source.narrow(1, group.FirstChannel, group.Count) : source.index_select(1, group.Channels);
                columns.narrow(1, group.Offset, group.Count).narrow(2, y0, y1 - y0).narrow(3, x0, x1 - x0).copy_(source);
            }
            Tensor matrix = _columnChannels is null ? weight : weight.index_select(1, _columnChannels);
            if (_columnMask is not null)
                matrix = matrix * _columnMask;
            return nn.functional.conv2d(columns, matrix.view(_outChannels, _columns, 1, 1), bias);
        }

        private long OutputSize(long inputSize) => (inputSize + 2 * _padding - _kernelSize) / _stride + 1;

        /// <summary>The output positions [first, end) whose input position <c>p·stride + offset</c> lies in [0, size).</summary>
        private (long First, long End) Inside(long offset, long size, long outSize)
        {
            long first = offset >= 0 ? 0 : (-offset + _stride - 1) / _stride;
            long end = size - 1 - offset < 0 ? 0 : Math.Min(outSize, (size - 1 - offset) / _stride + 1);
            return (first, end);
        }

        // The kernel is usually built inside a forward pass's dispose scope but outlives it.
        private static Tensor Keep(Tensor tensor) => tensor.DetachFromDisposeScope();

        /// <inheritdoc/>
        public void Dispose()
        {
            foreach (Group group in _groups)
                group.Channels?.Dispose();
            _columnChannels?.Dispose();
            _columnMask?.Dispose();
            _oneHot.Dispose();
        }
    }
}
