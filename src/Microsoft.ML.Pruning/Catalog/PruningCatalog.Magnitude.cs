// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Pruners;

namespace Microsoft.ML
{
    public static partial class PruningCatalog
    {
        /// <summary>
        /// Creates a <see cref="MagnitudePruner"/> that prunes the smallest weights of <paramref name="trainedModel"/>
        /// (Han et al.); <c>Fit</c> it on the (training) data to get the pruned model.
        /// </summary>
        /// <param name="catalog">The transforms catalog.</param>
        /// <param name="trainedModel">A model trained by <c>ImageClassifier</c>: the transformer chain or the classifier, fresh or loaded.</param>
        /// <param name="options">The pruner options; null for the defaults (10% of the weights kept, one-shot, no retraining).</param>
        /// <exception cref="ArgumentException"><paramref name="trainedModel"/> contains no image classifier of this library, or an option is invalid.</exception>
        /// <example>
        /// <code>
        /// ITransformer pruned = mlContext.Transforms
        ///     .PruneMagnitude(trained, new MagnitudePruner.Options { KeptFraction = 0.1, PruningRounds = 3, RetrainEpochs = 1 })
        ///     .Fit(trainData);
        /// </code>
        /// </example>
        public static MagnitudePruner PruneMagnitude(this TransformsCatalog catalog, ITransformer trainedModel, MagnitudePruner.Options? options = null)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            return new MagnitudePruner(MLNetInternals.GetEnvironment(catalog), trainedModel, options ?? new MagnitudePruner.Options());
        }

        /// <summary>Creates a one-shot <see cref="MagnitudePruner"/> keeping <paramref name="keptFraction"/> of the weights, without retraining.</summary>
        /// <param name="catalog">The transforms catalog.</param>
        /// <param name="trainedModel">A model trained by <c>ImageClassifier</c>: the transformer chain or the classifier, fresh or loaded.</param>
        /// <param name="keptFraction">The fraction of Linear and Conv2d weights kept, in (0, 1].</param>
        public static MagnitudePruner PruneMagnitude(this TransformsCatalog catalog, ITransformer trainedModel, double keptFraction)
            => PruneMagnitude(catalog, trainedModel, new MagnitudePruner.Options { KeptFraction = keptFraction });
    }
}
