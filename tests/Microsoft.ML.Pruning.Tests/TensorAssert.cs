// Licensed under the MIT license.

using System;
using TorchSharp;

namespace Microsoft.ML.Pruning.Tests
{
    /// <summary>Tensor comparisons for assertions.</summary>
    internal static class TensorAssert
    {
        /// <summary>True when both tensors have the same shape and exactly the same elements.</summary>
        public static bool Same(torch.Tensor a, torch.Tensor b)
        {
            if (!a.shape.AsSpan().SequenceEqual(b.shape))
                return false;
            using var equal = a.eq(b).all();
            return equal.item<bool>();
        }
    }
}
