// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Pruners;

namespace Microsoft.ML
{
    public static partial class PruningCatalog
    {
        /// <summary>
        /// Creates a <see cref="LayerwiseObsPruner"/> that prunes <paramref name="trainedModel"/> with layer-wise Optimal
        /// Brain Surgeon; <c>Fit</c> it on calibration data to get the pruned model.
        /// </summary>
        /// <param name="catalog">The transforms catalog.</param>
        /// <param name="trainedModel">A model trained by <c>ImageClassifier</c>: the transformer chain or the classifier, fresh or loaded.</param>
        /// <param name="options">The pruner options; null for the defaults (10% of the weights kept, no retraining).</param>
        /// <exception cref="ArgumentException"><paramref name="trainedModel"/> contains no image classifier of this library, or an option is invalid.</exception>
        /// <example>
        /// <code>
        /// ITransformer trained = pipeline.Fit(trainData);
        /// ITransformer pruned = mlContext.Transforms
        ///     .PruneLayerwiseObs(trained, new LayerwiseObsPruner.Options { KeptFraction = 0.07, RetrainEpochs = 1 })
        ///     .Fit(trainData);
        /// </code>
        /// </example>
        public static LayerwiseObsPruner PruneLayerwiseObs(this TransformsCatalog catalog, ITransformer trainedModel, LayerwiseObsPruner.Options? options = null)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            return new LayerwiseObsPruner(MLNetInternals.GetEnvironment(catalog), trainedModel, options ?? new LayerwiseObsPruner.Options());
        }

        /// <summary>Creates a <see cref="LayerwiseObsPruner"/> keeping <paramref name="keptFraction"/> of the weights, without retraining.</summary>
        /// <param name="catalog">The transforms catalog.</param>
        /// <param name="trainedModel">A model trained by <c>ImageClassifier</c>: the transformer chain or the classifier, fresh or loaded.</param>
        /// <param name="keptFraction">The fraction of Linear and Conv2d weights kept, in (0, 1].</param>
        public static LayerwiseObsPruner PruneLayerwiseObs(this TransformsCatalog catalog, ITransformer trainedModel, double keptFraction)
            => PruneLayerwiseObs(catalog, trainedModel, new LayerwiseObsPruner.Options { KeptFraction = keptFraction });
    }
}
