// Licensed under the MIT license.

using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>
    /// Batch norm in evaluation mode as a per-channel affine map, and its folding into the layer before it. Computed in
    /// float64 and rounded once to float32, so that compaction and the compact runtime's compiler, which both fold, give
    /// the same weights bit for bit.
    /// </summary>
    internal static class BatchNormFolding
    {
        /// <summary><c>x · scale + shift</c> per channel (float64 tensors) for the batch norm at <paramref name="path"/> in
        /// <paramref name="state"/>: <c>scale = γ / sqrt(var + ε)</c>, <c>shift = β − mean · scale</c>.</summary>
        public static (Tensor Scale, Tensor Shift) Affine(IReadOnlyDictionary<string, Tensor> state, string path)
        {
            Tensor gamma = state[path + ".weight"].detach().to_type(ScalarType.Float64);
            Tensor beta = state[path + ".bias"].detach().to_type(ScalarType.Float64);
            Tensor mean = state[path + ".running_mean"].detach().to_type(ScalarType.Float64);
            Tensor variance = state[path + ".running_var"].detach().to_type(ScalarType.Float64);
            Tensor scale = gamma / variance.add(HeldScalars.Of(NetworkModules.BatchNormEpsilon)).sqrt();
            return (scale, beta - mean * scale);
        }

        /// <summary>
        /// The float32 weight and bias of a layer whose outputs (dimension 0 of <paramref name="weight"/>) go through the
        /// batch norm <paramref name="affine"/>: <c>W · scale</c> and <c>b · scale + shift</c> (<c>shift</c> when there is no bias).
        /// </summary>
        public static (Tensor Weight, Tensor Bias) Fold(Tensor weight, Tensor? bias, (Tensor Scale, Tensor Shift) affine)
        {
            var (scale, shift) = affine;
            long[] perOutput = Enumerable.Repeat(1L, (int)weight.dim()).ToArray();
            perOutput[0] = -1;
            Tensor folded = (weight.detach().to_type(ScalarType.Float64) * scale.view(perOutput)).to_type(ScalarType.Float32);
            Tensor foldedBias = (bias is null ? shift : bias.detach().to_type(ScalarType.Float64) * scale + shift).to_type(ScalarType.Float32);
            return (folded, foldedBias);
        }
    }
}
