// Licensed under the MIT license.

using System;
using System.Buffers;
using System.Collections.Generic;
using System.Threading.Tasks;

namespace Microsoft.ML.Pruning.Runtime.Kernels
{
    /// <summary>
    /// A fully connected layer stored as compressed sparse rows (the kept weights of each output, with their input
    /// indices), <c>y[n, o] = b[o] + Σ_k w_k · x[n, col_k]</c>, with an optional ReLU. Only kept weights are read or
    /// multiplied, so the cost follows the kept fraction.
    /// </summary>
    /// <remarks>
    /// A few images are scored one sparse dot product per output. From <see cref="BlockedBatch"/> images on, blocks of 64
    /// images are transposed so that each input feature's 64 values are consecutive, and every output runs
    /// <see cref="GatherMultiplyAdd"/> over its kept weights: one broadcast and 8 vector multiply-adds per kept weight
    /// for the whole block.
    /// </remarks>
    internal sealed unsafe class CompactLinear
    {
        /// <summary>The batch size from which images are processed in transposed blocks.</summary>
        public const int BlockedBatch = 8;

        private const int Block = GatherMultiplyAdd.BlockLength;
        private const long ParallelWork = 100_000;

        private readonly int _inFeatures, _outFeatures;
        private readonly int[] _rowStart;
        private readonly int[] _columns;
        private readonly int[] _blockOffsets;
        private readonly float[] _weights;
        private readonly float[] _bias;
        private readonly bool _relu;

        /// <param name="weight">The weight matrix [out, in], row-major; zeros are not stored.</param>
        /// <param name="inFeatures">Input features.</param>
        /// <param name="outFeatures">Output features.</param>
        /// <param name="bias">Per-output bias, or null.</param>
        /// <param name="relu">Whether a ReLU follows.</param>
        public CompactLinear(ReadOnlySpan<float> weight, int inFeatures, int outFeatures, float[]? bias, bool relu)
        {
            if (inFeatures < 1 || outFeatures < 1)
                throw new ArgumentOutOfRangeException(nameof(inFeatures), "Feature counts must be positive.");
            if (weight.Length != (long)inFeatures * outFeatures)
                throw new ArgumentException($"Expected {(long)inFeatures * outFeatures} weights ({outFeatures}x{inFeatures}), got {weight.Length}.", nameof(weight));
            _inFeatures = inFeatures;
            _outFeatures = outFeatures;
            _relu = relu;
            _rowStart = new int[outFeatures + 1];
            var columns = new List<int>();
            var weights = new List<float>();
            for (int o = 0; o < outFeatures; o++)
            {
                ReadOnlySpan<float> row = weight.Slice(o * inFeatures, inFeatures);
                for (int i = 0; i < inFeatures; i++)
                {
                    if (row[i] != 0)
                    {
                        columns.Add(i);
                        weights.Add(row[i]);
                    }
                }
                _rowStart[o + 1] = columns.Count;
            }
            _columns = columns.ToArray();
            _weights = weights.ToArray();
            _blockOffsets = Array.ConvertAll(_columns, c => c * Block);
            _bias = bias ?? new float[outFeatures];
            if (_bias.Length != outFeatures)
                throw new ArgumentException($"Expected {outFeatures} bias values, got {_bias.Length}.", nameof(bias));
        }

        /// <summary>Input features.</summary>
        public int InFeatures => _inFeatures;

        /// <summary>Output features.</summary>
        public int OutFeatures => _outFeatures;

        /// <summary>Stored (non-zero) weights.</summary>
        public int Terms => _weights.Length;

        /// <summary>Computes <paramref name="batch"/> rows of <paramref name="input"/> [N, in] into <paramref name="output"/> [N, out].</summary>
        public void Run(float* input, float* output, int batch)
        {
            long work = (long)batch * _weights.Length;
            bool parallel = work >= ParallelWork && Environment.ProcessorCount > 1;
            nint inputAddress = (nint)input, outputAddress = (nint)output;
            if (batch < BlockedBatch)
            {
                if (!parallel)
                {
                    RowsByDot(input, output, batch, 0, _outFeatures);
                    return;
                }
                int parts = Environment.ProcessorCount, chunk = (_outFeatures + parts - 1) / parts;
                Parallel.For(0, parts, part =>
                    RowsByDot((float*)inputAddress, (float*)outputAddress, batch, part * chunk, Math.Min(_outFeatures, (part + 1) * chunk)));
                return;
            }
            int blocks = (batch + Block - 1) / Block;
            if (!parallel || blocks == 1)
            {
                for (int b = 0; b < blocks; b++)
                    RunBlock(input, output, batch, b);
                return;
            }
            Parallel.For(0, blocks, b => RunBlock((float*)inputAddress, (float*)outputAddress, batch, b));
        }

        private void RowsByDot(float* input, float* output, int batch, int firstOutput, int endOutput)
        {
            fixed (int* columns = _columns)
            fixed (float* weights = _weights)
            {
                for (int n = 0; n < batch; n++)
                {
                    float* x = input + (long)n * _inFeatures, y = output + (long)n * _outFeatures;
                    for (int o = firstOutput; o < endOutput; o++)
                    {
                        int start = _rowStart[o];
                        float value = GatherMultiplyAdd.SparseDot(x, columns + start, weights + start, _rowStart[o + 1] - start) + _bias[o];
                        y[o] = _relu && value < 0f ? 0f : value;
                    }
                }
            }
        }

        private void RunBlock(float* input, float* output, int batch, int block)
        {
            int first = block * Block, count = Math.Min(Block, batch - first);
            float[] transposed = ArrayPool<float>.Shared.Rent(_inFeatures * Block);
            try
            {
                fixed (float* xt = transposed)
                fixed (int* offsets = _blockOffsets)
                fixed (float* weights = _weights)
                {
                    // [in, 64]: feature i of image j at i·64 + j; missing images of a last block read zeros.
                    for (int j = 0; j < Block; j++)
                    {
                        if (j < count)
                        {
                            float* x = input + (long)(first + j) * _inFeatures;
                            for (int i = 0; i < _inFeatures; i++)
                                xt[i * Block + j] = x[i];
                        }
                        else
                        {
                            for (int i = 0; i < _inFeatures; i++)
                                xt[i * Block + j] = 0f;
                        }
                    }
                    float* sums = stackalloc float[Block];
                    for (int o = 0; o < _outFeatures; o++)
                    {
                        int start = _rowStart[o];
                        GatherMultiplyAdd.Block(xt, offsets + start, weights + start, _rowStart[o + 1] - start, sums);
                        float bias = _bias[o];
                        float* y = output + (long)first * _outFeatures + o;
                        for (int j = 0; j < count; j++)
                        {
                            float value = sums[j] + bias;
                            y[(long)j * _outFeatures] = _relu && value < 0f ? 0f : value;
                        }
                    }
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(transposed);
            }
        }
    }
}
