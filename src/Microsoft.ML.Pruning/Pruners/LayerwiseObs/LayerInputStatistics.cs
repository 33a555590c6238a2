// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using Microsoft.ML.Pruning.Native;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.LayerwiseObs
{
    /// <summary>
    /// Ψ = mean of x xᵀ over the inputs x that each prunable layer receives in the unpruned network, gathered for all
    /// layers in one pass with forward pre-hooks. x is the layer's input vector, or for a convolution every receptive
    /// field unfolded in the weight's flattening order (C_in, kh, kw), followed by a 1 when the layer has a bias.
    /// Products are formed per chunk in float32 and summed in float64, so memory stays bounded by the chunk.
    /// </summary>
    internal sealed class LayerInputStatistics : IDisposable
    {
        private const int ImagesPerBatch = 64;

        private readonly Tensor[] _sums;
        private readonly long[] _counts;

        private LayerInputStatistics(Tensor[] sums, long[] counts)
        {
            _sums = sums;
            _counts = counts;
        }

        /// <summary>The input dimension d of layer <paramref name="index"/> (bias row included).</summary>
        public long Dimension(int index) => _sums[index].shape[0];

        /// <summary>Input vectors averaged for layer <paramref name="index"/>.</summary>
        public long Samples(int index) => _counts[index];

        /// <summary>Ψ of layer <paramref name="index"/>, [d, d] float64, symmetrized (the caller owns it).</summary>
        public Tensor Psi(int index)
        {
            using var scope = NewDisposeScope();
            using Scalar count = Math.Max(1, _counts[index]).ToScalar();
            Tensor mean = _sums[index].div(count);
            return mean.add(mean.mT).div_(HeldScalars.Of(2)).MoveToOuterDisposeScope();
        }

        /// <summary>Runs <paramref name="images"/> through <paramref name="network"/> in evaluation mode and accumulates Ψ per layer.</summary>
        /// <param name="network">The unpruned network.</param>
        /// <param name="layers">The layers whose inputs to collect.</param>
        /// <param name="images">Calibration images [N, C, H, W] on the CPU.</param>
        /// <param name="maxPatchesPerLayer">For convolutions: at most this many receptive fields in all; positions are subsampled at random beyond it.</param>
        /// <param name="generator">Draws the subsampled positions.</param>
        /// <param name="cancellationToken">Checked between batches.</param>
        public static LayerInputStatistics Collect(ClassifierNetwork network, IReadOnlyList<PrunableLayer> layers, Tensor images, long maxPatchesPerLayer,
            Generator generator, CancellationToken cancellationToken)
        {
            long n = images.shape[0];
            var sums = new Tensor[layers.Count];
            var counts = new long[layers.Count];
            var hooks = new List<Action>();
            try
            {
                for (int i = 0; i < layers.Count; i++)
                {
                    PrunableLayer layer = layers[i];
                    int index = i;
                    long d = layer.Columns + (layer.Bias is null ? 0 : 1);
                    sums[i] = zeros(d, d, dtype: float64, device: network.Device).DetachFromDisposeScope();
                    long perImage = layer.Definition is Conv2dLayer ? Math.Max(1, maxPatchesPerLayer / Math.Max(1, n)) : 1;
                    var remover = layer.Module.register_forward_pre_hook((module, input) =>
                    {
                        Tensor rows = InputRows(layer, input, perImage, generator);
                        sums[index].add_(rows.mT.matmul(rows).to(float64));
                        counts[index] += rows.shape[0];
                        return input;
                    });
                    hooks.Add(remover.remove);
                }

                network.Module.eval();
                using var noGrad = no_grad();
                for (long start = 0; start < n; start += ImagesPerBatch)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    using var scope = NewDisposeScope();
                    network.Forward(images.narrow(0, start, Math.Min(ImagesPerBatch, n - start)).to(network.Device));
                }
                return new LayerInputStatistics(sums, counts);
            }
            catch
            {
                foreach (Tensor? sum in sums)
                    sum?.Dispose();
                throw;
            }
            finally
            {
                foreach (Action remove in hooks)
                    remove();
            }
        }

        /// <summary>The layer's input vectors of one batch as rows [m, d] (float32), bias column last.</summary>
        private static Tensor InputRows(PrunableLayer layer, Tensor input, long perImage, Generator generator)
        {
            Tensor rows;
            if (layer.Definition is Conv2dLayer conv)
            {
                // [N, C·k·k, L] in (C, kh, kw) order, the order of weight.view(out, −1).
                Tensor patches = nn.functional.unfold(input, conv.KernelSize, padding: conv.Padding, stride: conv.Stride);
                long positions = patches.shape[2];
                if (positions > perImage)
                {
                    Tensor chosen = randperm(positions, generator: generator).narrow(0, 0, perImage).to(patches.device);
                    patches = patches.index_select(2, chosen);
                }
                rows = patches.transpose(1, 2).reshape(-1, patches.shape[1]);
            }
            else
            {
                rows = input.reshape(input.shape[0], -1);
            }
            if (layer.Bias is not null)
                rows = cat(new[] { rows, ones(rows.shape[0], 1, dtype: rows.dtype, device: rows.device) }, 1);
            return rows.to(float32);
        }

        /// <inheritdoc/>
        public void Dispose()
        {
            foreach (Tensor sum in _sums)
                sum.Dispose();
        }
    }
}
