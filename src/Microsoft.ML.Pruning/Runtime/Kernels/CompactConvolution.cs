// Licensed under the MIT license.

using System;
using System.Buffers;
using System.Collections.Generic;
using System.Linq;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Threading.Tasks;

namespace Microsoft.ML.Pruning.Runtime.Kernels
{
    /// <summary>One kept weight of a convolution-like layer: output channel, input channel, tap (ky, kx) and value.</summary>
    internal readonly record struct ConvolutionTerm(int Output, int Input, int KernelY, int KernelX, float Weight);

    /// <summary>
    /// A k×k layer evaluated as a list of terms per output channel, <c>y[o](p) = b[o] + Σ_t w_t · x_pad[c_t](p·stride + tap_t)</c>:
    /// a shift + pointwise layer has one term per (output, input) pair, a pruned convolution one per kept weight. Each image
    /// is copied once into a zero-padded buffer (split into stride² phase planes, so that every tap of a strided layer
    /// reads consecutive values); each term then reads the shifted input in place, through its offset into that buffer,
    /// and no shifted copy is ever made. Bias (batch norm folded in), ReLU and a following max pooling are applied while the
    /// result is written out.
    /// </summary>
    /// <remarks>
    /// Output pixels are computed on the padded-width grid <c>q = y·Wq + x</c> (Wq the phase plane's width), so a tap is a
    /// single offset for the whole plane and <see cref="GatherMultiplyAdd"/> runs over blocks of 64 consecutive
    /// <c>q</c>; the few columns past the output width are computed and dropped. Images are spread over the cores; a
    /// single image is split by output channels.
    /// </remarks>
    internal sealed unsafe class CompactConvolution
    {
        // Below this many multiply-accumulates per call the cost of waking other cores outweighs their help: a call of
        // 4 million takes about 0.1 ms on one core. On the 2-core machine the benchmarks run on, splitting a single
        // image's layers of about 2 million multiply-accumulates (ResNet-20's) between the cores made the network slower
        // at batch 1, not faster.
        private const long ParallelWork = 4_000_000;

        private readonly int _inChannels, _outChannels, _height, _width, _stride, _padding, _pool;
        private readonly int _phaseWidth, _phaseHeight, _planeLength, _gridLength, _inputLength;
        private readonly int _outHeight, _outWidth, _resultHeight, _resultWidth;
        private readonly int[] _termStart;
        private readonly int[] _offsets;
        private readonly float[] _weights;
        private readonly float[] _bias;
        private readonly bool _relu;
        private readonly bool _uniform;
        private readonly bool[] _phaseRead;

        /// <param name="inChannels">Input channels.</param>
        /// <param name="height">Input height.</param>
        /// <param name="width">Input width.</param>
        /// <param name="outChannels">Output channels.</param>
        /// <param name="kernelSize">The k of the k×k neighbourhood.</param>
        /// <param name="stride">Stride.</param>
        /// <param name="padding">Zero padding on every side.</param>
        /// <param name="terms">The non-zero weights; terms with weight 0 are dropped.</param>
        /// <param name="bias">Per-output bias, or null for none.</param>
        /// <param name="relu">Whether a ReLU follows.</param>
        /// <param name="pool">The window (and stride) of a max pooling that follows, or 1 for none.</param>
        public CompactConvolution(int inChannels, int height, int width, int outChannels, int kernelSize, int stride, int padding,
            IEnumerable<ConvolutionTerm> terms, float[]? bias, bool relu, int pool)
        {
            if (inChannels < 1 || outChannels < 1 || kernelSize < 1 || stride < 1 || padding < 0 || pool < 1)
                throw new ArgumentOutOfRangeException(nameof(inChannels), "Channels, kernel size, stride and pool must be positive and padding non-negative.");
            _inChannels = inChannels;
            _outChannels = outChannels;
            _height = height;
            _width = width;
            _stride = stride;
            _padding = padding;
            _pool = pool;
            _relu = relu;
            _outHeight = (height + 2 * padding - kernelSize) / stride + 1;
            _outWidth = (width + 2 * padding - kernelSize) / stride + 1;
            if (_outHeight < 1 || _outWidth < 1)
                throw new ArgumentException($"A {kernelSize}x{kernelSize} kernel with padding {padding} does not fit a {height}x{width} input.");
            _resultHeight = _outHeight / pool;
            _resultWidth = _outWidth / pool;
            if (_resultHeight < 1 || _resultWidth < 1)
                throw new ArgumentException($"A {pool}x{pool} pooling does not fit the {_outHeight}x{_outWidth} output.");
            _phaseHeight = (height + 2 * padding + stride - 1) / stride;
            _phaseWidth = (width + 2 * padding + stride - 1) / stride;
            _planeLength = _phaseHeight * _phaseWidth;
            _gridLength = (_outHeight * _phaseWidth + GatherMultiplyAdd.BlockLength - 1) / GatherMultiplyAdd.BlockLength * GatherMultiplyAdd.BlockLength;

            var byOutput = new List<(int Offset, float Weight)>[outChannels];
            for (int o = 0; o < outChannels; o++)
                byOutput[o] = new List<(int, float)>();
            int maxOffset = 0;
            _phaseRead = new bool[stride * stride];
            foreach (ConvolutionTerm term in terms)
            {
                if ((uint)term.Output >= outChannels || (uint)term.Input >= inChannels || (uint)term.KernelY >= kernelSize || (uint)term.KernelX >= kernelSize)
                    throw new ArgumentOutOfRangeException(nameof(terms), $"Term {term} lies outside a {outChannels}x{inChannels}x{kernelSize}x{kernelSize} kernel.");
                int phase = (term.KernelY % stride) * stride + term.KernelX % stride;
                _phaseRead[phase] = true;
                int offset = (term.Input * stride * stride + phase) * _planeLength + term.KernelY / stride * _phaseWidth + term.KernelX / stride;
                byOutput[term.Output].Add((offset, term.Weight));
                maxOffset = Math.Max(maxOffset, offset);
            }
            // In offset order, so consecutive terms read neighbouring memory.
            for (int o = 0; o < outChannels; o++)
                byOutput[o].Sort((a, b) => a.Offset.CompareTo(b.Offset));

            // A dense or shared-shift layer reads the same windows for every output: groups of four outputs then share
            // each load. Pruned layers keep only their non-zero terms, output by output.
            long zeros = byOutput.Sum(list => list.Count(t => t.Weight == 0)), all = byOutput.Sum(list => (long)list.Count);
            _uniform = outChannels >= 4 && zeros <= all / 4
                && byOutput.All(list => list.Count == byOutput[0].Count && list.Select(t => t.Offset).SequenceEqual(byOutput[0].Select(t => t.Offset)));
            if (_uniform)
            {
                int count = byOutput[0].Count, groups = (outChannels + 3) / 4;
                _offsets = byOutput[0].Select(t => t.Offset).ToArray();
                _weights = new float[groups * count * 4];
                for (int o = 0; o < outChannels; o++)
                {
                    for (int t = 0; t < count; t++)
                        _weights[((o / 4) * count + t) * 4 + o % 4] = byOutput[o][t].Weight;
                }
                _termStart = Array.Empty<int>();
                Terms = count * outChannels;
            }
            else
            {
                _termStart = new int[outChannels + 1];
                var kept = byOutput.Select(list => list.Where(t => t.Weight != 0).ToArray()).ToArray();
                for (int o = 0; o < outChannels; o++)
                    _termStart[o + 1] = _termStart[o] + kept[o].Length;
                _offsets = kept.SelectMany(list => list.Select(t => t.Offset)).ToArray();
                _weights = kept.SelectMany(list => list.Select(t => t.Weight)).ToArray();
                Terms = _weights.Length;
            }
            _bias = bias ?? new float[outChannels];
            if (_bias.Length != outChannels)
                throw new ArgumentException($"Expected {outChannels} bias values, got {_bias.Length}.", nameof(bias));
            // Every window [offset, offset + grid) must lie inside the buffer; the part past the planes stays zero.
            _inputLength = Math.Max(inChannels * stride * stride * _planeLength, maxOffset + _gridLength);
        }

        /// <summary>The values per image this layer reads: [in, H, W].</summary>
        public int InputSize => _inChannels * _height * _width;

        /// <summary>The values per image this layer writes: [out, H', W'] (after pooling).</summary>
        public int OutputSize => _outChannels * _resultHeight * _resultWidth;

        /// <summary>The output shape per image, [out, H', W'].</summary>
        public int[] OutputShape => new[] { _outChannels, _resultHeight, _resultWidth };

        /// <summary>Weights multiplied per output pixel, summed over outputs: the non-zero ones, or all of them when
        /// groups of outputs share their loads (<see cref="SharesLoads"/>).</summary>
        public int Terms { get; }

        /// <summary>Whether every output reads the same windows, so that groups of four outputs share each load.</summary>
        public bool SharesLoads => _uniform;

        /// <summary>Multiply-accumulates per image: every term once per output pixel.</summary>
        public long MultiplyAccumulates => (long)Terms * _outHeight * _outWidth;

        /// <summary>Computes <paramref name="batch"/> images from <paramref name="input"/> into <paramref name="output"/>.</summary>
        public void Run(float* input, float* output, int batch)
        {
            long work = (long)batch * Terms * _gridLength;
            int threads = work < ParallelWork ? 1 : Math.Min(Environment.ProcessorCount, Math.Max(batch, 2));
            nint inputAddress = (nint)input, outputAddress = (nint)output;
            if (threads == 1)
            {
                for (int n = 0; n < batch; n++)
                    RunImage(input + (long)n * InputSize, output + (long)n * OutputSize, 0, _outChannels);
            }
            else if (batch >= threads)
            {
                Parallel.For(0, batch, new ParallelOptions { MaxDegreeOfParallelism = threads },
                    n => RunImage((float*)inputAddress + (long)n * InputSize, (float*)outputAddress + (long)n * OutputSize, 0, _outChannels));
            }
            else
            {
                // Fewer images than cores: each image's output channels are split between the cores.
                for (int n = 0; n < batch; n++)
                {
                    float[] padded = ArrayPool<float>.Shared.Rent(_inputLength);
                    try
                    {
                        fixed (float* paddedPointer = padded)
                        {
                            FillPadded((float*)inputAddress + (long)n * InputSize, paddedPointer);
                            nint paddedAddress = (nint)paddedPointer, imageOutput = outputAddress + (nint)((long)n * OutputSize * sizeof(float));
                            // Whole groups of four, so that no group is split between cores.
                            int chunk = ((_outChannels + threads - 1) / threads + 3) / 4 * 4;
                            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, part =>
                            {
                                int first = part * chunk, end = Math.Min(_outChannels, first + chunk);
                                if (first < end)
                                    Compute((float*)paddedAddress, (float*)imageOutput, first, end);
                            });
                        }
                    }
                    finally
                    {
                        ArrayPool<float>.Shared.Return(padded);
                    }
                }
            }
        }

        /// <summary>Computes one image on the calling thread.</summary>
        public void RunImage(float* image, float* result) => RunImage(image, result, 0, _outChannels);

        private void RunImage(float* image, float* result, int firstOutput, int endOutput)
        {
            float[] padded = ArrayPool<float>.Shared.Rent(_inputLength);
            try
            {
                fixed (float* paddedPointer = padded)
                {
                    FillPadded(image, paddedPointer);
                    Compute(paddedPointer, result, firstOutput, endOutput);
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(padded);
            }
        }

        /// <summary>Computes output channels [first, end) of one image from its padded buffer (first a multiple of four
        /// when outputs share loads).</summary>
        private void Compute(float* padded, float* result, int firstOutput, int endOutput)
        {
            int count = endOutput - firstOutput;
            float[] grid = ArrayPool<float>.Shared.Rent((count + 3) / 4 * 4 * _gridLength);
            try
            {
                fixed (float* gridPointer = grid)
                fixed (int* offsets = _offsets)
                fixed (float* weights = _weights)
                {
                    // Block-major: the windows that all output channels read for one block stay in L1.
                    for (int q = 0; q < _gridLength; q += GatherMultiplyAdd.BlockLength)
                    {
                        if (_uniform)
                        {
                            int terms = _offsets.Length;
                            for (int o = firstOutput; o < endOutput; o += 4)
                            {
                                GatherMultiplyAdd.Block4(padded + q, offsets, weights + (long)(o / 4) * terms * 4, terms,
                                    gridPointer + (long)(o - firstOutput) * _gridLength + q, _gridLength);
                            }
                            continue;
                        }
                        bool half = _outHeight * _phaseWidth - q <= GatherMultiplyAdd.BlockLength / 2;
                        for (int o = firstOutput; o < endOutput; o++)
                        {
                            int start = _termStart[o];
                            float* block = gridPointer + (long)(o - firstOutput) * _gridLength + q;
                            if (half)
                                GatherMultiplyAdd.HalfBlock(padded + q, offsets + start, weights + start, _termStart[o + 1] - start, block);
                            else
                                GatherMultiplyAdd.Block(padded + q, offsets + start, weights + start, _termStart[o + 1] - start, block);
                        }
                    }
                    int plane = _resultHeight * _resultWidth;
                    for (int o = firstOutput; o < endOutput; o++)
                        WriteOutput(gridPointer + (long)(o - firstOutput) * _gridLength, result + (long)o * plane, _bias[o]);
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(grid);
            }
        }

        /// <summary>Copies one image into the zero-padded phase planes: padded pixel (Y, X) goes to phase
        /// (Y mod s, X mod s) at (Y div s, X div s).</summary>
        private void FillPadded(float* image, float* padded)
        {
            int s = _stride, p = _padding, planes = _inChannels * s * s;
            new Span<float>(padded + planes * _planeLength, _inputLength - planes * _planeLength).Clear();
            if (s == 1)
            {
                int wp = _phaseWidth;
                for (int c = 0; c < _inChannels; c++)
                {
                    float* plane = padded + (long)c * _planeLength;
                    new Span<float>(plane, p * wp).Clear();
                    new Span<float>(plane + (p + _height) * wp, (_phaseHeight - p - _height) * wp).Clear();
                    for (int y = 0; y < _height; y++)
                    {
                        float* row = plane + (y + p) * wp;
                        new Span<float>(row, p).Clear();
                        new ReadOnlySpan<float>(image + ((long)c * _height + y) * _width, _width).CopyTo(new Span<float>(row + p, _width));
                        new Span<float>(row + p + _width, wp - p - _width).Clear();
                    }
                }
                return;
            }
            // Strided: every plane zeroed at once, then each input row goes, column phase by column phase, to its place.
            // Phases no term reads (a 1x1 strided layer reads one) stay zero.
            new Span<float>(padded, planes * _planeLength).Clear();
            for (int c = 0; c < _inChannels; c++)
            {
                float* channel = image + (long)c * _height * _width;
                for (int y = 0; y < _height; y++)
                {
                    int ry = (y + p) % s, yq = (y + p) / s;
                    for (int rx = 0; rx < s; rx++)
                    {
                        if (!_phaseRead[ry * s + rx])
                            continue;
                        // The first column x with (x + p) mod s = rx, and every s-th after it.
                        int x0 = ((rx - p) % s + s) % s;
                        if (x0 >= _width)
                            continue;
                        float* plane = padded + (long)((c * s + ry) * s + rx) * _planeLength;
                        StridedCopy(channel + (long)y * _width + x0, s, plane + yq * _phaseWidth + (x0 + p) / s, (_width - 1 - x0) / s + 1);
                    }
                }
            }
        }

        /// <summary><c>destination[i] = source[i·stride]</c> for i &lt; count.</summary>
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        internal static void StridedCopy(float* source, int stride, float* destination, int count)
        {
            int i = 0;
            if (stride == 2 && Avx2.IsSupported)
            {
                // Sixteen values give their eight even ones: pairs of lanes picked, then the 64-bit lanes back into order.
                // A vector's loads end one value past its last even one, so the loop leaves the last value to the scalar
                // tail and never reads past source[(count − 1)·2].
                for (; i + 8 <= count - 1; i += 8)
                {
                    Vector256<float> low = Avx.LoadVector256(source + 2 * i), high = Avx.LoadVector256(source + 2 * i + 8);
                    Vector256<float> even = Avx.Shuffle(low, high, 0b10_00_10_00);
                    Avx.Store(destination + i, Avx2.Permute4x64(even.AsDouble(), 0b11_01_10_00).AsSingle());
                }
            }
            for (; i < count; i++)
                destination[i] = source[(long)i * stride];
        }

        /// <summary>Writes one output channel from its grid: bias, then ReLU, then max pooling (they commute, so
        /// pooling first does a quarter of the work).</summary>
        private void WriteOutput(float* grid, float* destination, float bias)
        {
            int wq = _phaseWidth;
            float floor = _relu ? 0f : float.NegativeInfinity;
            if (_pool == 1)
            {
                for (int y = 0; y < _outHeight; y++)
                    BiasActivateRow(grid + y * wq, destination + y * _outWidth, _outWidth, bias, floor);
                return;
            }
            if (_pool == 2 && Avx2.IsSupported && _resultWidth >= 8)
            {
                Vector256<float> b = Vector256.Create(bias), f = Vector256.Create(floor);
                for (int y = 0; y < _resultHeight; y++)
                {
                    float* top = grid + 2 * y * wq, bottom = top + wq, row = destination + y * _resultWidth;
                    // Vectors of 8 outputs; the last one ends exactly at the row's end (recomputing a few values).
                    for (int x = 0; ; x += 8)
                    {
                        x = Math.Min(x, _resultWidth - 8);
                        Vector256<float> left = Avx.Max(Avx.LoadVector256(top + 2 * x), Avx.LoadVector256(bottom + 2 * x));
                        Vector256<float> right = Avx.Max(Avx.LoadVector256(top + 2 * x + 8), Avx.LoadVector256(bottom + 2 * x + 8));
                        // Pairwise maxima of neighbours, then the 64-bit lanes back into order.
                        Vector256<float> pairs = Avx.Max(Avx.Shuffle(left, right, 0b10_00_10_00), Avx.Shuffle(left, right, 0b11_01_11_01));
                        Vector256<float> ordered = Avx2.Permute4x64(pairs.AsDouble(), 0b11_01_10_00).AsSingle();
                        Avx.Store(row + x, Avx.Max(Avx.Add(ordered, b), f));
                        if (x + 8 >= _resultWidth)
                            break;
                    }
                }
                return;
            }
            for (int y = 0; y < _resultHeight; y++)
            {
                for (int x = 0; x < _resultWidth; x++)
                {
                    float max = float.NegativeInfinity;
                    for (int dy = 0; dy < _pool; dy++)
                    {
                        float* source = grid + (y * _pool + dy) * wq + x * _pool;
                        for (int dx = 0; dx < _pool; dx++)
                            max = MathF.Max(max, source[dx]);
                    }
                    destination[y * _resultWidth + x] = MathF.Max(max + bias, floor);
                }
            }
        }

        /// <summary><c>destination[x] = max(source[x] + bias, floor)</c> for one row.</summary>
        internal static void BiasActivateRow(float* source, float* destination, int length, float bias, float floor)
        {
            int x = 0;
            if (Vector256.IsHardwareAccelerated && length >= 8)
            {
                Vector256<float> b = Vector256.Create(bias), f = Vector256.Create(floor);
                for (; x + 8 <= length; x += 8)
                    Vector256.Max(Vector256.Load(source + x) + b, f).Store(destination + x);
                // One more vector ends exactly at the row's end (source and destination do not overlap).
                if (x < length)
                    Vector256.Max(Vector256.Load(source + length - 8) + b, f).Store(destination + length - 8);
                return;
            }
            for (; x < length; x++)
                destination[x] = MathF.Max(source[x] + bias, floor);
        }
    }
}
