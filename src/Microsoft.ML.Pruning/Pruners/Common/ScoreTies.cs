// Licensed under the MIT license.

using Microsoft.ML.Pruning.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.Common
{
    /// <summary>Orders the connections a criterion scores alike (often zero: never selected, never grown) by a second score.</summary>
    internal static class ScoreTies
    {
        /// <summary>
        /// <paramref name="scores"/> with its ties ordered by <paramref name="fallback"/> (non-negative, e.g. |w|): every score
        /// gains at most a millionth of the smallest positive score, in proportion to its fallback, so positive scores keep
        /// their order above the zeros. A new tensor.
        /// </summary>
        public static Tensor Break(Tensor scores, Tensor fallback)
        {
            Tensor positive = scores.masked_select(scores.gt(HeldScalars.Of(0)));
            double smallest = positive.numel() > 0 ? positive.min().item<double>() : 1;
            double largest = fallback.max().item<double>();
            if (largest <= 0)
                return scores.alias();
            using Scalar largestScalar = largest.ToScalar(), tieScale = (smallest * 1e-6).ToScalar();
            return scores + fallback.div(largestScalar).mul_(tieScale);
        }
    }
}
