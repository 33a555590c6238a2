// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Pruners;

namespace Microsoft.ML
{
    public static partial class PruningCatalog
    {
        /// <summary>
        /// Creates a <see cref="DiscriminationAwarePruner"/> that removes the channels of <paramref name="trainedModel"/> that
        /// matter least to telling the classes apart (Zhuang et al., NeurIPS 2018); <c>Fit</c> it on the labelled training
        /// data to get the smaller model.
        /// </summary>
        /// <param name="catalog">The transforms catalog.</param>
        /// <param name="trainedModel">A model trained by <c>ImageClassifier</c>: the transformer chain or the classifier, fresh or loaded.</param>
        /// <param name="options">The pruner options; null for the defaults (half the multiply-accumulates, 2048 selection images, no fine-tuning).</param>
        /// <exception cref="ArgumentException"><paramref name="trainedModel"/> contains no image classifier of this library, has no
        /// convolution whose input channels can be selected, or an option is invalid.</exception>
        /// <example>
        /// <code>
        /// ITransformer pruned = mlContext.Transforms
        ///     .PruneDiscriminationAware(trained, new DiscriminationAwarePruner.Options { MacsReduction = 2, RetrainEpochs = 5 })
        ///     .Fit(trainData);
        /// </code>
        /// </example>
        public static DiscriminationAwarePruner PruneDiscriminationAware(this TransformsCatalog catalog, ITransformer trainedModel,
            DiscriminationAwarePruner.Options? options = null)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            return new DiscriminationAwarePruner(MLNetInternals.GetEnvironment(catalog), trainedModel, options ?? new DiscriminationAwarePruner.Options());
        }
    }
}
