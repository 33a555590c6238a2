// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Pruners;

namespace Microsoft.ML
{
    public static partial class PruningCatalog
    {
        /// <summary>
        /// Creates a <see cref="ChannelPruner"/> that removes whole channels of <paramref name="trainedModel"/> (L1-filter,
        /// network slimming or random selection); <c>Fit</c> it on the training data to get the smaller, faster model.
        /// </summary>
        /// <param name="catalog">The transforms catalog.</param>
        /// <param name="trainedModel">A model trained by <c>ImageClassifier</c>: the transformer chain or the classifier, fresh or loaded.</param>
        /// <param name="options">The pruner options; null for the defaults (L1 norm, half the multiply-accumulates, no fine-tuning).</param>
        /// <exception cref="ArgumentException"><paramref name="trainedModel"/> contains no image classifier of this library, or an option is invalid.</exception>
        /// <example>
        /// <code>
        /// ITransformer pruned = mlContext.Transforms
        ///     .PruneChannels(trained, new ChannelPruner.Options { MacsReduction = 2, RoundChannelsTo = 8, RetrainEpochs = 3 })
        ///     .Fit(trainData);
        ///
        /// // Network slimming: sparsity training, then channels with small batch-norm scales removed.
        /// var slim = pipelineWith(new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.VggSmall, BatchNormScaleL1 = 1e-4 });
        /// ITransformer slimmed = mlContext.Transforms
        ///     .PruneChannels(slim.Fit(trainData), new ChannelPruner.Options { Criterion = ChannelCriterion.BatchNormScale, RetrainEpochs = 3 })
        ///     .Fit(trainData);
        /// </code>
        /// </example>
        public static ChannelPruner PruneChannels(this TransformsCatalog catalog, ITransformer trainedModel, ChannelPruner.Options? options = null)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            return new ChannelPruner(MLNetInternals.GetEnvironment(catalog), trainedModel, options ?? new ChannelPruner.Options());
        }
    }
}
