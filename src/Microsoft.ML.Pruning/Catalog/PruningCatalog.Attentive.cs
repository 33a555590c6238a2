// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Pruners;

namespace Microsoft.ML
{
    public static partial class PruningCatalog
    {
        /// <summary>
        /// Creates an <see cref="AttentivePruner"/> that prunes the connections of <paramref name="trainedModel"/> its top-down
        /// attention selects least (Biparva and Tsotsos); <c>Fit</c> it on labelled (training) data to get the pruned model.
        /// </summary>
        /// <param name="catalog">The transforms catalog.</param>
        /// <param name="trainedModel">A model trained by <c>ImageClassifier</c>: the transformer chain or the classifier, fresh or loaded.</param>
        /// <param name="options">The pruner options; null for the defaults (10% of the weights kept by gating mass on 5,000 images, one-shot, no retraining).</param>
        /// <exception cref="ArgumentException"><paramref name="trainedModel"/> contains no image classifier of this library, or an option is invalid.</exception>
        /// <exception cref="NotSupportedException">The network has a layer the top-down pass cannot route through (the shift layers).</exception>
        /// <example>
        /// <code>
        /// ITransformer pruned = mlContext.Transforms
        ///     .PruneAttentive(trained, new AttentivePruner.Options { KeptFraction = 0.05, RetrainEpochs = 1 })
        ///     .Fit(trainData);
        ///
        /// // The configuration that kept up with magnitude pruning and L-OBS in the benchmark (README, "Attentive pruning"):
        /// // |w| boosted by the attention, magnitude pruning's layer budgets, three prune/retrain rounds.
        /// var closest = new AttentivePruner.Options
        /// {
        ///     KeptFraction = 0.05,
        ///     Score = AttentionScore.BoostedMagnitude,
        ///     LayerBudgets = AttentionBudgets.Magnitude,
        ///     PruningRounds = 3,
        ///     RetrainEpochs = 5,
        /// };
        /// </code>
        /// </example>
        public static AttentivePruner PruneAttentive(this TransformsCatalog catalog, ITransformer trainedModel, AttentivePruner.Options? options = null)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            return new AttentivePruner(MLNetInternals.GetEnvironment(catalog), trainedModel, options ?? new AttentivePruner.Options());
        }

        /// <summary>Creates a one-shot <see cref="AttentivePruner"/> keeping <paramref name="keptFraction"/> of the weights, without retraining.</summary>
        /// <param name="catalog">The transforms catalog.</param>
        /// <param name="trainedModel">A model trained by <c>ImageClassifier</c>: the transformer chain or the classifier, fresh or loaded.</param>
        /// <param name="keptFraction">The fraction of Linear and Conv2d weights kept, in (0, 1].</param>
        public static AttentivePruner PruneAttentive(this TransformsCatalog catalog, ITransformer trainedModel, double keptFraction)
            => PruneAttentive(catalog, trainedModel, new AttentivePruner.Options { KeptFraction = keptFraction });
    }
}
