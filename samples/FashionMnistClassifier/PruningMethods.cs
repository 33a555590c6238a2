// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Pruning.Pruners;

namespace FashionMnistClassifier
{
    /// <summary>One way of pruning the trained model, as the demo compares them.</summary>
    /// <param name="Name">The short name in the tables and the plot.</param>
    /// <param name="Description">What the method does, in a few words.</param>
    /// <param name="Create">The pruning estimator for a trained model; its <c>Fit</c> on the training data gives the
    /// pruned model. The callback is the options' <c>PruningCompleted</c> (called with the pruning report when pruning
    /// and retraining are done), for the progress display.</param>
    internal sealed record PruningMethod(string Name, string Description,
        Func<MLContext, ITransformer, Action<PruningReport>, IEstimator<ITransformer>> Create);

    /// <summary>The methods the demo runs, in order. Adding one is adding an entry.</summary>
    internal static class PruningMethods
    {
        public static IReadOnlyList<PruningMethod> For(SampleOptions options)
        {
            string kept = options.KeptFraction.ToString("P0", CultureInfo.InvariantCulture);
            string retrain = options.RetrainEpochs == 0 ? "no retraining" : $"{options.RetrainEpochs} retraining epoch(s)";
            return new PruningMethod[]
            {
                // Han et al. 2015: the smallest weights go, one threshold over all layers.
                new("magnitude", $"smallest weights removed, {kept} kept, {retrain}",
                    (ml, model, pruned) => ml.Transforms.PruneMagnitude(model, new MagnitudePruner.Options
                    {
                        KeptFraction = options.KeptFraction,
                        RetrainEpochs = options.RetrainEpochs,
                        PruningCompleted = pruned,
                    })),

                // Dong et al. 2017: per-layer second-order removal with compensation of the kept weights.
                new("L-OBS", $"layer-wise optimal brain surgeon, {kept} kept, {retrain}",
                    (ml, model, pruned) => ml.Transforms.PruneLayerwiseObs(model, new LayerwiseObsPruner.Options
                    {
                        KeptFraction = options.KeptFraction,
                        RetrainEpochs = options.RetrainEpochs,
                        PruningCompleted = pruned,
                    })),

                // Li et al. 2017: whole channels go (filters with the smallest L1 norm, with their batch norm and the
                // inputs that read them), for half the multiply-accumulates: a smaller network, faster on any runtime.
                new("channels", $"whole channels removed (L1 norm), MACs halved, {retrain}",
                    (ml, model, pruned) => ml.Transforms.PruneChannels(model, new ChannelPruner.Options
                    {
                        MacsReduction = 2,
                        RetrainEpochs = options.RetrainEpochs,
                        PruningCompleted = pruned,
                    })),
            };
        }
    }
}
