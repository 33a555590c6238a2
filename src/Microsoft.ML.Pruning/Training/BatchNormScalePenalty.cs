// Licensed under the MIT license.

using System;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Training
{
    /// <summary>
    /// The sparsity term of network slimming (Liu et al., ICCV 2017): <c>λ·Σ|γ|</c> over the scales of every batch-norm
    /// layer, applied as its subgradient <c>λ·sign(γ)</c> added to the scales' gradients after the backward pass (what the
    /// reference implementation does; the same as adding the term to the loss, without a graph for it).
    /// </summary>
    internal static class BatchNormScalePenalty
    {
        /// <summary>The after-backward hook for <paramref name="network"/>.</summary>
        /// <exception cref="ArgumentException">The network has no batch norm.</exception>
        public static Action Create(ClassifierNetwork network, double lambda)
        {
            var scales = network.Module.modules().OfType<TorchSharp.Modules.NormBase>()
                .Select(norm => norm.named_parameters().FirstOrDefault(p => p.name == "weight").parameter)
                .Where(p => p is not null)
                .ToArray();
            if (scales.Length == 0)
                throw new ArgumentException($"A batch-norm scale penalty needs batch-norm layers; the {network.Definition.Architecture} network has none.");
            // Held by the hook for every step's native calls (TorchSharp frees a temporary scalar only in its finalizer,
            // which may run during the call that reads it; see ParameterUpdate).
            Scalar penalty = lambda.ToScalar();
            return () =>
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                foreach (var gamma in scales)
                    gamma.grad?.add_(gamma.sign(), penalty);
            };
        }
    }
}
