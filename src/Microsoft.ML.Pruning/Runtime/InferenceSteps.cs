// Licensed under the MIT license.

using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Linq;
using System.Runtime.InteropServices;
using Microsoft.ML.Pruning.Runtime.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Runtime
{
    /// <summary>
    /// One step of an <see cref="InferencePlan"/>: one layer, or a layer with the batch norm, ReLU and pooling that follow
    /// it fused in. It reads a batch of activations [N, input shape] and writes [N, output shape]; both arrays are pinned.
    /// </summary>
    internal abstract unsafe class InferenceStep : IDisposable
    {
        protected InferenceStep(string layers, string kind, int[] inputShape, int[] outputShape)
        {
            Layers = layers;
            Kind = kind;
            InputShape = inputShape;
            OutputShape = outputShape;
            InputSize = inputShape.Aggregate(1, (a, b) => checked(a * b));
            OutputSize = outputShape.Aggregate(1, (a, b) => checked(a * b));
        }

        /// <summary>The layers this step computes, e.g. <c>conv2+relu2+pool1</c>.</summary>
        public string Layers { get; }

        /// <summary>How it computes them, e.g. <c>shift-pointwise</c> or <c>libtorch conv2d</c>.</summary>
        public string Kind { get; }

        /// <summary>Whether the step runs on libtorch rather than on the managed kernels.</summary>
        public virtual bool UsesLibTorch => false;

        /// <summary>The activation shape per image it reads.</summary>
        public int[] InputShape { get; }

        /// <summary>The activation shape per image it writes.</summary>
        public int[] OutputShape { get; }

        /// <summary>Values per image read.</summary>
        public int InputSize { get; }

        /// <summary>Values per image written.</summary>
        public int OutputSize { get; }

        /// <summary>Computes <paramref name="batch"/> images; <paramref name="input"/> and <paramref name="output"/> are pinned.
        /// By default one image after the other through <see cref="RunImage"/>.</summary>
        public virtual void Run(float[] input, float[] output, int batch)
        {
            fixed (float* x = input)
            fixed (float* y = output)
            {
                for (int n = 0; n < batch; n++)
                    RunImage(x + (long)n * InputSize, y + (long)n * OutputSize);
            }
        }

        /// <summary>Whether <see cref="RunImage"/> computes one image on the calling thread, so that a run of such steps
        /// can take each image through all of them while its activations are still in the core's cache.</summary>
        public virtual bool RunsPerImage => false;

        /// <summary>Computes one image on the calling thread (only when <see cref="RunsPerImage"/>).</summary>
        public virtual void RunImage(float* input, float* output)
            => throw new NotSupportedException($"Step '{Layers}' runs on whole batches only.");

        /// <inheritdoc/>
        public virtual void Dispose()
        {
        }

        /// <inheritdoc/>
        public override string ToString() => $"{Layers}: {Kind} [{string.Join(",", InputShape)}] -> [{string.Join(",", OutputShape)}]";
    }

    /// <summary>Per-channel standardization <c>(x − mean) · (1 / std)</c>, as the normalize module computes it.</summary>
    internal sealed unsafe class NormalizeStep : InferenceStep
    {
        private readonly float[] _mean;
        private readonly float[] _inverseStd;

        public NormalizeStep(string layers, int[] shape, float[] mean, float[] std) : base(layers, "normalize", shape, shape)
        {
            _mean = mean;
            _inverseStd = std.Select(s => 1f / s).ToArray();
        }

        public override bool RunsPerImage => true;

        public override void RunImage(float* input, float* output)
        {
            int channels = _mean.Length, plane = InputSize / channels;
            for (int c = 0; c < channels; c++)
            {
                float mean = _mean[c], scale = _inverseStd[c];
                for (int i = c * plane; i < (c + 1) * plane; i++)
                    output[i] = (input[i] - mean) * scale;
            }
        }
    }

    /// <summary>A convolution-like layer on <see cref="CompactConvolution"/> (shift + pointwise, pruned or small convolutions).</summary>
    internal sealed unsafe class CompactConvolutionStep : InferenceStep
    {
        private readonly CompactConvolution _kernel;

        public CompactConvolutionStep(string layers, string kind, int[] inputShape, CompactConvolution kernel)
            : base(layers, kind, inputShape, kernel.OutputShape) => _kernel = kernel;

        /// <summary>The kernel (for reports: its term count).</summary>
        public CompactConvolution Kernel => _kernel;

        public override bool RunsPerImage => true;

        public override void Run(float[] input, float[] output, int batch)
        {
            fixed (float* x = input)
            fixed (float* y = output)
                _kernel.Run(x, y, batch);
        }

        public override void RunImage(float* input, float* output) => _kernel.RunImage(input, output);
    }

    /// <summary>A fully connected layer on <see cref="CompactLinear"/>.</summary>
    internal sealed unsafe class CompactLinearStep : InferenceStep
    {
        private readonly CompactLinear _kernel;

        public CompactLinearStep(string layers, CompactLinear kernel)
            : base(layers, "sparse linear", new[] { kernel.InFeatures }, new[] { kernel.OutFeatures }) => _kernel = kernel;

        /// <summary>The kernel (for reports: its stored weights).</summary>
        public CompactLinear Kernel => _kernel;

        public override void Run(float[] input, float[] output, int batch)
        {
            fixed (float* x = input)
            fixed (float* y = output)
                _kernel.Run(x, y, batch);
        }
    }

    /// <summary>ReLU on its own (when nothing before it could take it).</summary>
    internal sealed unsafe class ReluStep : InferenceStep
    {
        public ReluStep(string layers, int[] shape) : base(layers, "relu", shape, shape)
        {
        }

        public override bool RunsPerImage => true;

        public override void RunImage(float* input, float* output)
        {
            for (int i = 0; i < InputSize; i++)
                output[i] = input[i] < 0f ? 0f : input[i];
        }
    }

    /// <summary>Per-channel <c>x · scale + shift</c>: a batch norm in evaluation mode that follows no foldable layer,
    /// with an optional ReLU.</summary>
    internal sealed unsafe class ChannelAffineStep : InferenceStep
    {
        private readonly float[] _scale;
        private readonly float[] _shift;
        private readonly bool _relu;

        public ChannelAffineStep(string layers, int[] shape, float[] scale, float[] shift, bool relu)
            : base(layers, relu ? "batchnorm+relu" : "batchnorm", shape, shape)
        {
            _scale = scale;
            _shift = shift;
            _relu = relu;
        }

        public override bool RunsPerImage => true;

        public override void RunImage(float* input, float* output)
        {
            int channels = _scale.Length, plane = InputSize / channels;
            for (int c = 0; c < channels; c++)
            {
                for (int i = c * plane; i < (c + 1) * plane; i++)
                {
                    float value = input[i] * _scale[c] + _shift[c];
                    output[i] = _relu && value < 0f ? 0f : value;
                }
            }
        }
    }

    /// <summary>Max pooling with a square window and an equal stride.</summary>
    internal sealed unsafe class MaxPoolStep : InferenceStep
    {
        private readonly int _window;

        public MaxPoolStep(string layers, int[] shape, int window)
            : base(layers, "maxpool", shape, new[] { shape[0], shape[1] / window, shape[2] / window }) => _window = window;

        public override bool RunsPerImage => true;

        public override void RunImage(float* input, float* output)
        {
            int channels = InputShape[0], height = InputShape[1], width = InputShape[2];
            int outHeight = OutputShape[1], outWidth = OutputShape[2];
            for (int plane = 0; plane < channels; plane++)
            {
                int source = plane * height * width, destination = plane * outHeight * outWidth;
                for (int y = 0; y < outHeight; y++)
                {
                    for (int x = 0; x < outWidth; x++)
                    {
                        float max = float.NegativeInfinity;
                        for (int dy = 0; dy < _window; dy++)
                        {
                            for (int dx = 0; dx < _window; dx++)
                                max = MathF.Max(max, input[source + (y * _window + dy) * width + x * _window + dx]);
                        }
                        output[destination + y * outWidth + x] = max;
                    }
                }
            }
        }
    }

    /// <summary>Global average pooling, [C, H, W] to [C].</summary>
    internal sealed unsafe class GlobalAveragePoolStep : InferenceStep
    {
        public GlobalAveragePoolStep(string layers, int[] shape) : base(layers, "global average pool", shape, new[] { shape[0] })
        {
        }

        public override bool RunsPerImage => true;

        public override void RunImage(float* input, float* output)
        {
            int plane = InputShape[1] * InputShape[2];
            for (int p = 0; p < InputShape[0]; p++)
            {
                float sum = 0;
                for (int i = p * plane; i < (p + 1) * plane; i++)
                    sum += input[i];
                output[p] = sum / plane;
            }
        }
    }

    /// <summary>
    /// One layer with two implementations of the same computation: the managed kernel for a single image, where
    /// libtorch's fixed cost per call dominates a small layer, and libtorch for batches, where its kernels are faster.
    /// </summary>
    internal sealed class BatchSizeStep : InferenceStep
    {
        private readonly InferenceStep _single;
        private readonly InferenceStep _batched;

        public BatchSizeStep(InferenceStep single, InferenceStep batched)
            : base(batched.Layers, batched.Kind + ", managed at batch 1", batched.InputShape, batched.OutputShape)
        {
            if (!single.OutputShape.SequenceEqual(batched.OutputShape) || !single.InputShape.SequenceEqual(batched.InputShape))
                throw new ArgumentException($"Step '{batched.Layers}': both implementations must read and write the same shapes.");
            _single = single;
            _batched = batched;
        }

        public override bool UsesLibTorch => true;

        public override void Run(float[] input, float[] output, int batch)
            => (batch == 1 ? _single : _batched).Run(input, output, batch);

        public override void Dispose()
        {
            _single.Dispose();
            _batched.Dispose();
        }
    }

    /// <summary>
    /// A residual block, <c>relu(body(x) + shortcut(x))</c>, whose branches are compiled steps of their own (an empty
    /// shortcut is the identity). It runs image by image when every step of both branches does, so that a run of blocks
    /// takes each image through while its activations are in the core's cache; otherwise branch by branch on the batch.
    /// </summary>
    internal sealed unsafe class ResidualStep : InferenceStep
    {
        private readonly InferenceStep[] _body;
        private readonly InferenceStep[] _shortcut;
        private readonly int _scratch;
        private readonly ConcurrentStack<float[]> _buffers = new();

        public ResidualStep(string layers, int[] inputShape, int[] outputShape, IReadOnlyList<InferenceStep> body, IReadOnlyList<InferenceStep> shortcut)
            : base(layers, "residual", inputShape, outputShape)
        {
            _body = body.ToArray();
            _shortcut = shortcut.ToArray();
            _scratch = _body.Concat(_shortcut).Select(s => Math.Max(s.InputSize, s.OutputSize)).Append(Math.Max(InputSize, OutputSize)).Max();
            RunsPerImage = _body.Concat(_shortcut).All(s => s.RunsPerImage);
        }

        /// <summary>The body's steps.</summary>
        public IReadOnlyList<InferenceStep> Body => _body;

        /// <summary>The shortcut's steps (none for the identity).</summary>
        public IReadOnlyList<InferenceStep> Shortcut => _shortcut;

        public override bool RunsPerImage { get; }

        public override bool UsesLibTorch => _body.Concat(_shortcut).Any(s => s.UsesLibTorch);

        public override void Run(float[] input, float[] output, int batch)
        {
            float[] a = Rent(batch), b = Rent(batch), c = Rent(batch);
            try
            {
                float[] body = RunBranch(_body, input, a, b, batch);
                float[] shortcut = _shortcut.Length == 0 ? input : RunBranch(_shortcut, input, c, ReferenceEquals(body, a) ? b : a, batch);
                long count = (long)batch * OutputSize;
                fixed (float* x = body)
                fixed (float* y = shortcut)
                fixed (float* z = output)
                    AddRelu(x, y, z, count);
            }
            finally
            {
                Return(a);
                Return(b);
                Return(c);
            }
        }

        public override void RunImage(float* input, float* output)
        {
            float[] scratch = System.Buffers.ArrayPool<float>.Shared.Rent(3 * _scratch);
            try
            {
                fixed (float* s = scratch)
                {
                    float* a = s, b = s + _scratch, c = s + 2 * _scratch;
                    float* body = RunBranchImage(_body, input, a, b);
                    float* shortcut = _shortcut.Length == 0 ? input : RunBranchImage(_shortcut, input, c, body == a ? b : a);
                    AddRelu(body, shortcut, output, OutputSize);
                }
            }
            finally
            {
                System.Buffers.ArrayPool<float>.Shared.Return(scratch);
            }
        }

        /// <summary>Runs <paramref name="steps"/> on the batch, ping-ponging between two scratch buffers; returns the one
        /// holding the result.</summary>
        private static float[] RunBranch(InferenceStep[] steps, float[] input, float[] first, float[] second, int batch)
        {
            float[] current = input;
            foreach (InferenceStep step in steps)
            {
                float[] target = ReferenceEquals(current, first) ? second : first;
                step.Run(current, target, batch);
                current = target;
            }
            return current;
        }

        private static float* RunBranchImage(InferenceStep[] steps, float* input, float* first, float* second)
        {
            float* current = input;
            foreach (InferenceStep step in steps)
            {
                float* target = current == first ? second : first;
                step.RunImage(current, target);
                current = target;
            }
            return current;
        }

        private static void AddRelu(float* x, float* y, float* z, long count)
        {
            long i = 0;
            if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated)
            {
                var zero = System.Runtime.Intrinsics.Vector256<float>.Zero;
                for (; i + 8 <= count; i += 8)
                {
                    var sum = System.Runtime.Intrinsics.Vector256.Load(x + i) + System.Runtime.Intrinsics.Vector256.Load(y + i);
                    System.Runtime.Intrinsics.Vector256.Store(System.Runtime.Intrinsics.Vector256.Max(sum, zero), z + i);
                }
            }
            for (; i < count; i++)
            {
                float sum = x[i] + y[i];
                z[i] = sum < 0f ? 0f : sum;
            }
        }

        private float[] Rent(int batch)
        {
            long length = (long)batch * _scratch;
            if (_buffers.TryPop(out float[]? buffer) && buffer.Length >= length)
                return buffer;
            // Pinned, like the plan's own buffers: libtorch steps wrap them without copies.
            return GC.AllocateUninitializedArray<float>(checked((int)length), pinned: true);
        }

        private void Return(float[] buffer)
        {
            if (_buffers.Count < 6)
                _buffers.Push(buffer);
        }

        public override void Dispose()
        {
            foreach (InferenceStep step in _body.Concat(_shortcut))
                step.Dispose();
        }

        public override string ToString()
            => base.ToString() + Environment.NewLine
                + string.Join(Environment.NewLine, _body.Select(s => "  body " + s).Concat(_shortcut.Select(s => "  shortcut " + s)));
    }

    /// <summary>
    /// A layer left to libtorch (dense convolutions and fully connected layers, whose libtorch kernels are as fast as
    /// anything here, and layers the managed kernels do not cover), reading the pinned activations without a copy.
    /// </summary>
    internal sealed class LibTorchStep : InferenceStep
    {
        private const int LibTorchAlignment = 64;

        private readonly Func<Tensor, Tensor> _forward;
        private readonly Tensor[] _owned;

        /// <param name="layers">The layers it computes.</param>
        /// <param name="kind">What it runs.</param>
        /// <param name="inputShape">Input shape per image.</param>
        /// <param name="outputShape">Output shape per image.</param>
        /// <param name="forward">The computation, on a tensor [N, input shape].</param>
        /// <param name="owned">Tensors the computation uses and this step disposes.</param>
        public LibTorchStep(string layers, string kind, int[] inputShape, int[] outputShape, Func<Tensor, Tensor> forward, params Tensor[] owned)
            : base(layers, kind, inputShape, outputShape)
        {
            _forward = forward;
            _owned = owned;
        }

        public override bool UsesLibTorch => true;

        public override void Run(float[] input, float[] output, int batch)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            long[] shape = new[] { (long)batch }.Concat(InputShape.Select(d => (long)d)).ToArray();
            Tensor x = frombuffer(input, ScalarType.Float32, (long)batch * InputSize, 0, false).view(shape);
            // libtorch's matrix kernels choose their code path by the data's alignment, so the same input at another
            // address can differ in the last bit; a copy into libtorch's own 64-byte aligned memory keeps scores the same
            // from call to call and from process to process.
            if (!IsAligned(input))
                x = x.clone();
            Tensor y = _forward(x).contiguous();
            long expected = (long)batch * OutputSize;
            if (y.numel() != expected)
                throw new InvalidOperationException($"Step '{Layers}' produced {y.numel()} values; {expected} were expected.");
            MemoryMarshal.Cast<byte, float>(y.bytes).CopyTo(output.AsSpan(0, (int)expected));
        }

        private static unsafe bool IsAligned(float[] values)
        {
            fixed (float* pointer = values)
                return ((nint)pointer & (LibTorchAlignment - 1)) == 0;
        }

        public override void Dispose()
        {
            foreach (Tensor tensor in _owned)
                tensor.Dispose();
        }
    }

    /// <summary>The row-wise softmax that turns logits into probabilities.</summary>
    internal static class Softmax
    {
        public static void Rows(ReadOnlySpan<float> logits, Span<float> probabilities, int classes)
        {
            for (int row = 0; row < logits.Length / classes; row++)
            {
                ReadOnlySpan<float> x = logits.Slice(row * classes, classes);
                Span<float> p = probabilities.Slice(row * classes, classes);
                float max = float.NegativeInfinity;
                foreach (float value in x)
                    max = MathF.Max(max, value);
                float sum = 0;
                for (int i = 0; i < classes; i++)
                {
                    p[i] = MathF.Exp(x[i] - max);
                    sum += p[i];
                }
                float inverse = 1f / sum;
                for (int i = 0; i < classes; i++)
                    p[i] *= inverse;
            }
        }
    }
}
