// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using Microsoft.ML.Pruning.Pruners.Common;
using Microsoft.ML.Pruning.Pruners.Magnitude;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners
{
    /// <summary>
    /// Magnitude pruning (Han, Pool, Tran and Dally, "Learning both Weights and Connections", NIPS 2015): removes the
    /// Linear and Conv2d weights of smallest absolute value, one-shot or in rounds of pruning and retraining, with the
    /// masks fixed during retraining.
    /// </summary>
    /// <remarks>
    /// <format type="text/markdown"><![CDATA[
    /// Create it with `mlContext.Transforms.PruneMagnitude(trainedModel, options)` and call `Fit` with the data (used
    /// only for retraining; without retraining the method needs no data beyond a schema check, but `Fit` still reads it).
    ///
    /// * **Threshold.** `Global` (default) keeps the largest |w| over all layers — one threshold — with a floor of a
    ///   quarter of the overall fraction per layer; `Uniform` keeps the same fraction of each layer, each with its own
    ///   threshold (Han et al. set per-layer thresholds q·std(W) from a sensitivity analysis; a kept fraction is the
    ///   same knob, stated directly).
    /// * **Rounds.** With <see cref="Options.PruningRounds"/> = R > 1 the kept fraction falls geometrically,
    ///   f^(1/R), f^(2/R), …, f, with the retraining length of the options after every round (the prune/retrain loop of
    ///   Han et al.); weights pruned once stay pruned.
    /// ]]></format>
    /// </remarks>
    public sealed class MagnitudePruner : PruningEstimatorBase
    {
        /// <summary>Options of <see cref="MagnitudePruner"/>; the field initializers are the defaults.</summary>
        public sealed class Options : WeightPruningOptions
        {
            /// <summary>Per-layer or global threshold. Default: <see cref="LayerAllocation.Global"/>.</summary>
            public LayerAllocation Allocation = LayerAllocation.Global;

            /// <summary>Prune/retrain rounds; more than 1 needs retraining (<see cref="PruningOptions.RetrainIterations"/> or <see cref="PruningOptions.RetrainEpochs"/>). Default: 1 (one-shot).</summary>
            public int PruningRounds = 1;

            internal override void Validate()
            {
                base.Validate();
                if (!Enum.IsDefined(Allocation))
                    throw new ArgumentOutOfRangeException(nameof(Allocation), Allocation, "Unknown allocation.");
                Require(PruningRounds >= 1, nameof(PruningRounds), PruningRounds, "must be at least 1");
                if (PruningRounds > 1 && !Retrains)
                {
                    throw new ArgumentException(
                        $"Options.{nameof(PruningRounds)} is {PruningRounds}, but rounds of pruning need retraining in between: set Options.{nameof(RetrainIterations)} or Options.{nameof(RetrainEpochs)}.",
                        nameof(PruningRounds));
                }
            }
        }

        private readonly Options _options;

        internal MagnitudePruner(IHostEnvironment env, ITransformer trainedModel, Options options)
            : base(env, trainedModel, options, "magnitude")
        {
            _options = options;
        }

        private protected override PruningMask Prune(PruningContext context)
        {
            IReadOnlyList<PrunableLayer> layers = context.Layers;
            var mask = new PruningMask();
            try
            {
                var elapsed = new TimeSpan[layers.Count];
                int rounds = _options.PruningRounds;
                for (int round = 1; round <= rounds; round++)
                {
                    double exponent = (double)round / rounds;
                    var layerFractions = _options.LayerKeptFractions?.ToDictionary(kv => kv.Key, kv => Math.Pow(kv.Value, exponent), StringComparer.Ordinal);
                    long[] keptCounts = MagnitudeImportance.Allocate(layers, Math.Pow(_options.KeptFraction, exponent), layerFractions, _options.Allocation);
                    for (int i = 0; i < layers.Count; i++)
                    {
                        var clock = Stopwatch.StartNew();
                        using Tensor kept = MagnitudeImportance.KeepLargest(layers[i], keptCounts[i]);
                        mask.Set(layers[i].WeightName, kept);
                        elapsed[i] += clock.Elapsed;
                    }
                    mask.Apply(context.Network);
                    if (round < rounds)
                        context.Retrain(mask);
                }
                for (int i = 0; i < layers.Count; i++)
                    context.Results.Add(new LayerPruningResult(layers[i].Path, layers[i].Count, mask.Kept(layers[i].WeightName), null, elapsed[i]));
                return mask;
            }
            catch
            {
                mask.Dispose();
                throw;
            }
        }
    }
}
