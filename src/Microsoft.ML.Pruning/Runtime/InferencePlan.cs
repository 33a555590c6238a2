// Licensed under the MIT license.

using System;
using System.Buffers;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Linq;
using System.Threading.Tasks;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Networks.Layers;
using Microsoft.ML.Pruning.Runtime.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Runtime
{
    /// <summary>
    /// The compact model's inference engine: a network compiled, for scoring on the CPU, into a list of steps whose
    /// cost follows the stored weights. Shift + pointwise layers, pruned and small convolutions run on
    /// <see cref="CompactConvolution"/>, which reads shifted inputs in place; pruned and small fully connected layers run as
    /// compressed sparse rows (<see cref="CompactLinear"/>); batch norm is folded into the layer before it, ReLU and
    /// max pooling into the layer's output. Dense convolutions and dense fully connected layers, whose libtorch kernels
    /// are already as fast as their FLOPs allow, and layers the kernels do not cover stay on libtorch; a dense
    /// convolution of up to 80,000 weights runs on the managed kernel when a single image is scored, where libtorch's
    /// fixed cost per call is most of its time, and one of up to 40,000 for batches too when its input channels are a
    /// count libtorch would pad (the channel counts that pruning leaves, such as 24).
    /// </summary>
    /// <remarks>
    /// The plan holds a copy of the weights taken when it was compiled. It is immutable and safe to use from several
    /// threads at once; each call takes its own activation buffers from a small pool.
    /// </remarks>
    internal sealed class InferencePlan : IDisposable
    {
        /// <summary>Images scored per pass of the steps; larger inputs are cut into passes of this size.</summary>
        public const int MaxPassImages = 256;

        // A convolution or fully connected layer with at most this fraction of non-zero weights runs on the sparse
        // kernels; one with at most SmallLayerWeights weights always does (libtorch's per-call cost dominates there).
        private const double SparseConvolutionDensity = 0.5;
        private const double SparseLinearDensity = 0.3;
        private const long SmallLayerWeights = 4096;

        // A dense convolution with at most this many weights that runs on libtorch for batches runs on the managed kernel
        // for a single image, where libtorch's fixed cost per call is most of the layer's time. The small VGG's last
        // convolution (64 -> 128 channels on 7x7 maps, 73,728 weights) took about half as long on the managed kernel as on
        // libtorch for one image (`bench plan --batch 1`).
        private const long SingleImageLayerWeights = 80_000;

        // A dense convolution with at most this many weights whose input channels libtorch would pad
        // (Convolution.SafeInputChannels: 24 channels run as 32), as channel pruning leaves them, runs on the managed
        // kernel at every batch size.
        private const long PaddedLayerWeights = 40_000;
        private const int PooledBuffers = 8;

        private readonly ConcurrentStack<float[]> _buffers = new();
        private readonly int _largestActivation;
        private bool _disposed;

        private InferencePlan(NetworkDefinition definition, IReadOnlyList<InferenceStep> steps)
        {
            Definition = definition;
            Steps = steps;
            _largestActivation = steps.Select(s => Math.Max(s.InputSize, s.OutputSize)).Append(definition.Input.Size).Max();
        }

        /// <summary>The definition the plan was compiled from.</summary>
        public NetworkDefinition Definition { get; }

        /// <summary>The steps, in order.</summary>
        public IReadOnlyList<InferenceStep> Steps { get; }

        /// <summary>Compiles <paramref name="network"/> (on the CPU) with its current weights.</summary>
        public static InferencePlan Compile(ClassifierNetwork network)
        {
            ArgumentNullException.ThrowIfNull(network);
            if (network.Device.type != DeviceType.CPU)
                throw new InvalidOperationException($"The compact runtime scores on the CPU; the network lives on {network.Device}.");
            var builder = new Builder(network);
            var steps = new List<InferenceStep>();
            try
            {
                builder.Add(steps);
                return new InferencePlan(network.Definition, steps);
            }
            catch
            {
                foreach (InferenceStep step in steps)
                    step.Dispose();
                throw;
            }
        }

        /// <summary>Class probabilities of the images in <paramref name="images"/> (C·H·W values each) into
        /// <paramref name="probabilities"/> (one row of classes per image); the lengths are the caller's to check.</summary>
        /// <remarks>
        /// Consecutive steps that can run image by image form a segment: with several images, each core takes its share of
        /// the images through the whole segment, one image at a time, so that the activations between those layers stay
        /// in the core's cache instead of going through memory for the whole batch. A single image runs layer by layer,
        /// each layer split between the cores.
        /// </remarks>
        public void Predict(ReadOnlySpan<float> images, Span<float> probabilities)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            int size = Definition.Input.Size, classes = Definition.Classes;
            int count = images.Length / size;
            int pass = Math.Min(count, MaxPassImages);
            if (pass == 0)
                return;
            float[] first = Rent(pass), second = Rent(pass);
            try
            {
                for (int start = 0; start < count; start += pass)
                {
                    int n = Math.Min(pass, count - start);
                    images.Slice(start * size, n * size).CopyTo(first);
                    float[] current = first, next = second;
                    for (int s = 0; s < Steps.Count;)
                    {
                        int end = s + 1;
                        if (n > 1)
                        {
                            while (end <= Steps.Count && Steps[end - 1].RunsPerImage)
                                end++;
                            end = Math.Max(s + 1, end - 1);
                        }
                        if (end - s > 1)
                            RunSegment(s, end, current, next, n);
                        else
                            Steps[s].Run(current, next, n);
                        (current, next) = (next, current);
                        s = end;
                    }
                    Softmax.Rows(current.AsSpan(0, n * classes), probabilities.Slice(start * classes, n * classes), classes);
                }
            }
            finally
            {
                Return(first);
                Return(second);
            }
        }

        /// <summary>Runs steps [first, end) image by image, the images shared between the cores.</summary>
        private unsafe void RunSegment(int firstStep, int endStep, float[] input, float[] output, int images)
        {
            int scratchSize = 0;
            for (int s = firstStep; s < endStep - 1; s++)
                scratchSize = Math.Max(scratchSize, Steps[s].OutputSize);
            int inputSize = Steps[firstStep].InputSize, outputSize = Steps[endStep - 1].OutputSize;
            int workers = Math.Min(images, Environment.ProcessorCount), share = (images + workers - 1) / workers;
            fixed (float* inputPointer = input)
            fixed (float* outputPointer = output)
            {
                nint inputAddress = (nint)inputPointer, outputAddress = (nint)outputPointer;
                Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, worker =>
                {
                    float[] a = ArrayPool<float>.Shared.Rent(scratchSize), b = ArrayPool<float>.Shared.Rent(scratchSize);
                    try
                    {
                        fixed (float* pa = a)
                        fixed (float* pb = b)
                        {
                            for (int image = worker * share; image < Math.Min(images, (worker + 1) * share); image++)
                            {
                                float* source = (float*)inputAddress + (long)image * inputSize;
                                float* target = pa;
                                for (int s = firstStep; s < endStep; s++)
                                {
                                    if (s == endStep - 1)
                                        target = (float*)outputAddress + (long)image * outputSize;
                                    Steps[s].RunImage(source, target);
                                    source = target;
                                    target = target == pa ? pb : pa;
                                }
                            }
                        }
                    }
                    finally
                    {
                        ArrayPool<float>.Shared.Return(a);
                        ArrayPool<float>.Shared.Return(b);
                    }
                });
            }
        }

        private float[] Rent(int images)
        {
            long length = (long)images * _largestActivation;
            if (length > Array.MaxLength)
                throw new InvalidOperationException($"A pass of {images} images needs {length} activation values, more than an array holds.");
            if (_buffers.TryPop(out float[]? buffer) && buffer.Length >= length)
                return buffer;
            // Pinned, so that steps take pointers and libtorch wraps them without copies.
            return GC.AllocateUninitializedArray<float>((int)length, pinned: true);
        }

        private void Return(float[] buffer)
        {
            if (_buffers.Count < PooledBuffers)
                _buffers.Push(buffer);
        }

        /// <inheritdoc/>
        public void Dispose()
        {
            if (_disposed)
                return;
            _disposed = true;
            foreach (InferenceStep step in Steps)
                step.Dispose();
            _buffers.Clear();
        }

        /// <inheritdoc/>
        public override string ToString() => string.Join(Environment.NewLine, Steps);

        /// <summary>Turns layer definitions and the network's weights into steps.</summary>
        private sealed class Builder
        {
            private readonly ClassifierNetwork _network;
            private readonly IReadOnlyDictionary<string, Tensor> _state;
            private readonly Dictionary<string, nn.Module> _modules;

            public Builder(ClassifierNetwork network)
            {
                _network = network;
                _state = network.StateDictionary();
                _modules = network.Module.named_modules().ToDictionary(c => c.name, c => c.module, StringComparer.Ordinal);
            }

            public void Add(List<InferenceStep> steps) => AddSequence(steps, _network.Definition.Layers, "", _network.Definition.InputDimensions);

            /// <summary>Compiles a sequence of layers (the network's, or a residual block's branch) and returns its output shape.</summary>
            private int[] AddSequence(List<InferenceStep> steps, IReadOnlyList<LayerDefinition> layers, string scope, int[] shape)
            {
                for (int i = 0; i < layers.Count; i++)
                {
                    LayerDefinition layer = layers[i];
                    string path = scope + layer.Name;
                    int[] output = layer.OutputShape(shape);
                    switch (layer)
                    {
                        case FlattenLayer:
                            break; // [C,H,W] and [C·H·W] are the same values in the same order
                        case NormalizeLayer normalize:
                            steps.Add(new NormalizeStep(path, shape, normalize.Mean, normalize.Std));
                            break;
                        case Conv2dLayer or KernelSparseConv2dLayer or ShiftPointwiseConv2dLayer or ShiftConv2dLayer:
                            i = AddKernelLayer(steps, layers, scope, i, shape, out output);
                            break;
                        case LinearLayer linear:
                            i = AddLinear(steps, layers, scope, i, linear);
                            break;
                        case BatchNorm2dLayer norm:
                            {
                                var (scale, shift) = BatchNormAffine(path);
                                bool relu = i + 1 < layers.Count && layers[i + 1] is ReluLayer;
                                steps.Add(new ChannelAffineStep(relu ? path + "+" + layers[i + 1].Name : path, shape,
                                    scale.Select(v => (float)v).ToArray(), shift.Select(v => (float)v).ToArray(), relu));
                                if (relu)
                                    i++;
                                break;
                            }
                        case ReluLayer:
                            steps.Add(new ReluStep(path, shape));
                            break;
                        case MaxPool2dLayer pool:
                            steps.Add(new MaxPoolStep(path, shape, pool.KernelSize));
                            break;
                        case GlobalAvgPoolLayer:
                            steps.Add(new GlobalAveragePoolStep(path, shape));
                            break;
                        case ResidualBlock block:
                            {
                                var body = new List<InferenceStep>();
                                var shortcut = new List<InferenceStep>();
                                try
                                {
                                    AddSequence(body, block.Body, NetworkWalker.BodyScope(path), shape);
                                    AddSequence(shortcut, block.Shortcut, NetworkWalker.ShortcutScope(path), shape);
                                }
                                catch
                                {
                                    foreach (InferenceStep step in body.Concat(shortcut))
                                        step.Dispose();
                                    throw;
                                }
                                steps.Add(new ResidualStep(path, shape, output, body, shortcut));
                                break;
                            }
                        default:
                            // Soft shift attention layers: the network's own module.
                            nn.Module<Tensor, Tensor> module = (nn.Module<Tensor, Tensor>)_modules[path];
                            steps.Add(new LibTorchStep(path, "libtorch " + layer.GetType().Name, shape, output, module.call));
                            break;
                    }
                    shape = output;
                }
                return shape;
            }

            /// <summary>A convolution or shift layer with a following batch norm folded in and ReLU and max pooling fused;
            /// returns the index of the last layer taken.</summary>
            private int AddKernelLayer(List<InferenceStep> steps, IReadOnlyList<LayerDefinition> layers, string scope, int index, int[] shape, out int[] output)
            {
                var layer = (KernelLayerDefinition)layers[index];
                string path = scope + layer.Name;
                var names = new List<string> { path };
                float[] weight, folded;
                int next = index + 1;
                if (next < layers.Count && layers[next] is BatchNorm2dLayer norm)
                {
                    using var tensors = NewDisposeScope();
                    var (w, b) = BatchNormFolding.Fold(WeightOf(layer, path), layer.Bias ? _state[path + ".bias"] : null,
                        BatchNormFolding.Affine(_state, scope + norm.Name));
                    weight = w.contiguous().data<float>().ToArray();
                    folded = b.contiguous().data<float>().ToArray();
                    names.Add(norm.Name);
                    next++;
                }
                else
                {
                    using (NewDisposeScope())
                        weight = WeightOf(layer, path).contiguous().data<float>().ToArray();
                    folded = layer.Bias ? Values(path + ".bias") : new float[layer.OutChannels];
                }
                bool relu = next < layers.Count && layers[next] is ReluLayer;
                if (relu)
                    names.Add(layers[next++].Name);
                int k = layer.KernelSize;

                if (layer is Conv2dLayer or KernelSparseConv2dLayer)
                {
                    var conv = layer;
                    long total = weight.LongLength;
                    long nonZero = weight.LongCount(w => w != 0);
                    bool paddedOnLibTorch = Convolution.SafeInputChannels(conv.InChannels, k, conv.Stride) != conv.InChannels;
                    if (total > SmallLayerWeights && nonZero > SparseConvolutionDensity * total && !(paddedOnLibTorch && total <= PaddedLayerWeights))
                    {
                        Tensor w = Owned(weight, conv.OutChannels, conv.InChannels, k, k);
                        Tensor b = Owned(folded);
                        long[] stride = { conv.Stride, conv.Stride }, padding = { conv.Padding, conv.Padding };
                        output = conv.OutputShape(shape);
                        string fused = string.Join("+", names);
                        var batched = new LibTorchStep(fused, "libtorch conv2d", shape, output, x =>
                        {
                            Tensor y = Convolution.Conv2d(x, w, b, stride, padding);
                            return relu ? y.relu_() : y;
                        }, w, b);
                        if (total > SingleImageLayerWeights)
                        {
                            steps.Add(batched);
                            return next - 1;
                        }
                        var single = new CompactConvolution(conv.InChannels, shape[1], shape[2], conv.OutChannels, k, conv.Stride, conv.Padding,
                            ConvolutionTerms(weight, conv.OutChannels, conv.InChannels, k), folded, relu, pool: 1);
                        steps.Add(new BatchSizeStep(new CompactConvolutionStep(fused, "dense conv2d", shape, single), batched));
                        return next - 1;
                    }
                }

                int pool = 1;
                if (next < layers.Count && layers[next] is MaxPool2dLayer maxPool)
                {
                    pool = maxPool.KernelSize;
                    names.Add(maxPool.Name);
                    next++;
                }
                IEnumerable<ConvolutionTerm> terms = layer switch
                {
                    Conv2dLayer or KernelSparseConv2dLayer => ConvolutionTerms(weight, layer.OutChannels, layer.InChannels, k),
                    ShiftPointwiseConv2dLayer s => ShiftTerms(weight, s.OutChannels, s.InChannels, k, Values<byte>(path + ".shift"), s.Shared),
                    ShiftConv2dLayer s => ShiftTerms(weight, s.OutChannels, s.InChannels, k, ShiftConv2dLayer.GroupedShifts(s.InChannels, k), shared: true),
                    _ => throw new InvalidOperationException($"Layer '{layer.Name}' has no compact kernel."),
                };
                var kernel = new CompactConvolution(layer.InChannels, shape[1], shape[2], layer.OutChannels, k, layer.Stride, layer.Padding, terms, folded, relu, pool);
                string kind = layer switch
                {
                    Conv2dLayer => "sparse conv2d",
                    KernelSparseConv2dLayer => "kernel-sparse conv2d",
                    _ => "shift-pointwise",
                };
                steps.Add(new CompactConvolutionStep(string.Join("+", names), kind, shape, kernel));
                output = kernel.OutputShape;
                return next - 1;
            }

            private int AddLinear(List<InferenceStep> steps, IReadOnlyList<LayerDefinition> layers, string scope, int index, LinearLayer linear)
            {
                string path = scope + linear.Name;
                float[] weight = Values(path + ".weight");
                float[]? bias = linear.Bias ? Values(path + ".bias") : null;
                bool relu = index + 1 < layers.Count && layers[index + 1] is ReluLayer;
                string names = relu ? path + "+" + layers[index + 1].Name : path;
                long nonZero = weight.LongCount(w => w != 0);
                if (weight.LongLength <= SmallLayerWeights || nonZero <= SparseLinearDensity * weight.LongLength)
                {
                    steps.Add(new CompactLinearStep(names, new CompactLinear(weight, linear.InFeatures, linear.OutFeatures, bias, relu)));
                }
                else
                {
                    Tensor w = Owned(weight, linear.OutFeatures, linear.InFeatures);
                    Tensor? b = bias is null ? null : Owned(bias);
                    steps.Add(new LibTorchStep(names, "libtorch linear", new[] { linear.InFeatures }, new[] { linear.OutFeatures }, x =>
                    {
                        Tensor y = nn.functional.linear(x, w, b);
                        return relu ? y.relu_() : y;
                    }, b is null ? new[] { w } : new[] { w, b }));
                }
                return relu ? index + 1 : index;
            }

            private static IEnumerable<ConvolutionTerm> ConvolutionTerms(float[] weight, int outChannels, int inChannels, int k)
            {
                for (int o = 0; o < outChannels; o++)
                    for (int i = 0; i < inChannels; i++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++)
                                yield return new ConvolutionTerm(o, i, ky, kx, weight[((o * inChannels + i) * k + ky) * k + kx]);
            }

            private static IEnumerable<ConvolutionTerm> ShiftTerms(float[] weight, int outChannels, int inChannels, int k, byte[] shifts, bool shared)
            {
                for (int o = 0; o < outChannels; o++)
                {
                    for (int i = 0; i < inChannels; i++)
                    {
                        int tap = shifts[shared ? i : o * inChannels + i];
                        yield return new ConvolutionTerm(o, i, tap / k, tap % k, weight[o * inChannels + i]);
                    }
                }
            }

            /// <summary>Batch norm in evaluation mode as <c>x · scale + shift</c> per channel, in double precision.</summary>
            private (double[] Scale, double[] Shift) BatchNormAffine(string path)
            {
                using var scope = NewDisposeScope();
                var (scale, shift) = BatchNormFolding.Affine(_state, path);
                return (scale.contiguous().data<double>().ToArray(), shift.contiguous().data<double>().ToArray());
            }

            /// <summary>
            /// A copy of <paramref name="values"/> in libtorch's own memory, owned by the step that uses it: it lives as long
            /// as the plan, whatever dispose scope the plan is compiled in. libtorch's matrix kernels choose their code path
            /// by the data's alignment, and a tensor over a managed array has whatever alignment the array got; the copy is
            /// 64-byte aligned, so that every compilation of the same weights scores the same, bit for bit.
            /// </summary>
            private static Tensor Owned(float[] values, params long[] shape)
            {
                using Tensor wrapped = tensor(values, shape.Length == 0 ? new long[] { values.Length } : shape);
                return wrapped.clone().DetachFromDisposeScope();
            }

            /// <summary>The layer's [out, in, k, k] weight; a kernel-sparse layer's kept kernels in place, zeros elsewhere.</summary>
            private Tensor WeightOf(KernelLayerDefinition layer, string path) => layer is KernelSparseConv2dLayer
                ? ((KernelSparseConv2dModule)_modules[path]).DenseWeight().detach()
                : _state[path + ".weight"];

            private float[] Values(string name) => Values<float>(name);

            private T[] Values<T>(string name) where T : unmanaged
            {
                if (!_state.TryGetValue(name, out Tensor? value))
                    throw new InvalidOperationException($"The network has no tensor '{name}'.");
                using var scope = NewDisposeScope();
                return value.detach().cpu().contiguous().data<T>().ToArray();
            }
        }
    }
}
