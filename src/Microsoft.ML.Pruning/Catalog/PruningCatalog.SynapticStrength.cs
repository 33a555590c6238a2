// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Pruners;

namespace Microsoft.ML
{
    public static partial class PruningCatalog
    {
        /// <summary>
        /// Creates a <see cref="SynapticStrengthPruner"/> that removes input→output connections (whole kernels) of the
        /// convolutions of <paramref name="trainedModel"/>, ranked by Synaptic Strength after sparsity training (or by kernel
        /// L1 norm); <c>Fit</c> it on the training data to get the kernel-sparse model.
        /// </summary>
        /// <param name="catalog">The transforms catalog.</param>
        /// <param name="trainedModel">A model trained by <c>ImageClassifier</c>: the transformer chain or the classifier, fresh or loaded.</param>
        /// <param name="options">The pruner options; null for the defaults (Synaptic Strength, 3 epochs of sparsity training
        /// at λ = 5e-4, 10% of the connections kept by one global threshold, no fine-tuning).</param>
        /// <exception cref="ArgumentException"><paramref name="trainedModel"/> contains no image classifier of this library, or an option is invalid.</exception>
        /// <example>
        /// <code>
        /// ITransformer pruned = mlContext.Transforms
        ///     .PruneSynapticStrength(trained, new SynapticStrengthPruner.Options { KeptConnectionFraction = 0.1, SparsityEpochs = 3, RetrainEpochs = 3 })
        ///     .Fit(trainData);
        /// </code>
        /// </example>
        public static SynapticStrengthPruner PruneSynapticStrength(this TransformsCatalog catalog, ITransformer trainedModel, SynapticStrengthPruner.Options? options = null)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            return new SynapticStrengthPruner(MLNetInternals.GetEnvironment(catalog), trainedModel, options ?? new SynapticStrengthPruner.Options());
        }
    }
}
