// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners.Channels;
using Microsoft.ML.Pruning.Pruners.Common;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners
{
    /// <summary>
    /// Channel pruning: removes whole channels — a convolution's filters together with everything coupled to them — so
    /// that the pruned model is a smaller network that runs faster on any runtime. L1-filter pruning (Li et al.), network
    /// slimming (Liu et al.) and random selection are its criteria; discrimination-aware pruning builds on the same engine.
    /// </summary>
    /// <remarks>
    /// <format type="text/markdown"><![CDATA[
    /// Create it with `mlContext.Transforms.PruneChannels(trainedModel, options)` and call `Fit` with the training data
    /// (read for fine-tuning; without fine-tuning only its schema is checked).
    ///
    /// * **Coupled channels.** A channel is removed from every layer that writes, passes or reads it: the convolution
    ///   that writes it, its batch norm, the input of every layer that reads it, the `channel·H·W` block of the first fully
    ///   connected layer after a flatten and, in a residual stage, every block's output and shortcut (one group). The
    ///   groups come from the network definition, so any network the library builds — or has already pruned — has them.
    ///   Fully connected hidden units are groups too. Residual widths are kept unless <see cref="Options.PruneResidualWidth"/>.
    /// * **How much.** <see cref="Options.MacsReduction"/> (default 2: half the multiply-accumulates of one image) or
    ///   <see cref="Options.KeptChannelFraction"/>, spread by <see cref="Options.Allocation"/>: `Uniform` keeps the same
    ///   fraction of every group (the fraction that meets a MACs target is searched); `Global` ranks the channels of all
    ///   groups together and removes the lowest first, no group going below a tenth of its channels.
    ///   <see cref="Options.RoundChannelsTo"/> keeps counts at multiples of 8 or 16, which vectorized kernels prefer.
    /// * **Physical removal.** The result has a new, smaller network definition with its weights sliced; it saves, loads,
    ///   trains and is pruned again like any other model, and `GetSummary()` counts it exactly. It computes what the dense
    ///   network computes with the removed channels zeroed, before fine-tuning.
    /// * **Fine-tuning.** <see cref="PruningOptions.RetrainEpochs"/> (or iterations) of training of the smaller network;
    ///   with <see cref="Options.PruningRounds"/> R > 1 the target is approached in R rounds (reduction R^(k/R) after round k),
    ///   each followed by that fine-tuning.
    /// ]]></format>
    /// </remarks>
    public sealed class ChannelPruner : PruningEstimatorBase
    {
        /// <summary>Options of <see cref="ChannelPruner"/>; the field initializers are the defaults.</summary>
        public sealed class Options : PruningOptions
        {
            /// <summary>How channels are ranked. Default: <see cref="ChannelCriterion.L1Norm"/>.</summary>
            public ChannelCriterion Criterion = ChannelCriterion.L1Norm;

            /// <summary>
            /// The target as a reduction of the multiply-accumulates of one image: 2 keeps half of them (the MACs of the whole
            /// network, pruned layers and kept ones). At least 1. Ignored when <see cref="KeptChannelFraction"/> is set. Default: 2.
            /// </summary>
            public double MacsReduction = 2.0;

            /// <summary>
            /// The target as the fraction of the free groups' channels kept, in (0, 1]; overrides <see cref="MacsReduction"/>
            /// when set. Default: null (the MACs target).
            /// </summary>
            public double? KeptChannelFraction;

            /// <summary>
            /// How the target is spread over the groups; null for the criterion's own: uniform for L1 norm and random, global for
            /// batch-norm scale. Default: null.
            /// </summary>
            public LayerAllocation? Allocation;

            /// <summary>Kept channel counts are multiples of this (a group with fewer channels keeps them all); 1 for exact
            /// fractions. At least 1. Default: 1.</summary>
            public int RoundChannelsTo = 1;

            /// <summary>
            /// Kept fractions of individual groups, by the path of a layer that writes the channels (e.g. <c>conv3</c>,
            /// <c>stage2_0.body.conv1</c>; for a residual stage, any of its writers), overriding the allocation — also for
            /// residual groups. Default: null.
            /// </summary>
            public IDictionary<string, double>? LayerKeptFractions;

            /// <summary>Layers whose output channels are kept (every group a listed layer writes stays whole). Default: null.</summary>
            public IList<string>? IgnoredLayers;

            /// <summary>Whether the width of residual stages (the channels every block of a stage adds into) is pruned too;
            /// otherwise only the channels inside the blocks are, as discrimination-aware pruning does. Default: false.</summary>
            public bool PruneResidualWidth;

            /// <summary>Prune/fine-tune rounds; more than 1 needs fine-tuning (<see cref="PruningOptions.RetrainEpochs"/> or
            /// <see cref="PruningOptions.RetrainIterations"/>). Default: 1 (one-shot).</summary>
            public int PruningRounds = 1;

            internal override void Validate()
            {
                base.Validate();
                if (!Enum.IsDefined(Criterion))
                    throw new ArgumentOutOfRangeException(nameof(Criterion), Criterion, "Unknown channel criterion.");
                Require(double.IsFinite(MacsReduction) && MacsReduction >= 1, nameof(MacsReduction), MacsReduction, "must be a number of at least 1 (2 = half the multiply-accumulates)");
                if (KeptChannelFraction is double fraction)
                    Require(fraction > 0 && fraction <= 1, nameof(KeptChannelFraction), fraction, "must be in (0, 1]");
                if (Allocation is LayerAllocation allocation && !Enum.IsDefined(allocation))
                    throw new ArgumentOutOfRangeException(nameof(Allocation), allocation, "Unknown allocation.");
                Require(RoundChannelsTo >= 1, nameof(RoundChannelsTo), RoundChannelsTo, "must be at least 1");
                RequireFractions(LayerKeptFractions, nameof(LayerKeptFractions));
                Require(PruningRounds >= 1, nameof(PruningRounds), PruningRounds, "must be at least 1");
                if (PruningRounds > 1 && !Retrains)
                {
                    throw new ArgumentException(
                        $"Options.{nameof(PruningRounds)} is {PruningRounds}, but rounds of pruning need fine-tuning in between: set Options.{nameof(RetrainEpochs)} or Options.{nameof(RetrainIterations)}.",
                        nameof(PruningRounds));
                }
            }

            internal override void ValidateFor(NetworkDefinition definition)
            {
                var groups = ChannelGroups.Find(definition);
                var layers = definition.Flatten().Select(l => l.Path).ToHashSet(StringComparer.Ordinal);
                foreach (string name in IgnoredLayers ?? Array.Empty<string>())
                {
                    if (!layers.Contains(name))
                    {
                        throw new ArgumentException(
                            $"Options.{nameof(IgnoredLayers)} names '{name}', which is not a layer of this {definition.Architecture} model ({string.Join(", ", layers)}).",
                            nameof(IgnoredLayers));
                    }
                }
                var writers = groups.Where(g => g.Prunable).SelectMany(g => g.Producers.Select(p => p.Path)).ToList();
                foreach (string name in LayerKeptFractions?.Keys ?? Array.Empty<string>())
                {
                    if (!writers.Contains(name))
                    {
                        throw new ArgumentException(
                            $"Options.{nameof(LayerKeptFractions)} names '{name}', which writes no prunable channels of this {definition.Architecture} model ({string.Join(", ", writers)}).",
                            nameof(LayerKeptFractions));
                    }
                }
                if (Criterion == ChannelCriterion.BatchNormScale && !groups.Any(g => g.Prunable && g.BatchNorms.Any()))
                {
                    throw new ArgumentException(
                        $"Options.{nameof(Criterion)} {nameof(ChannelCriterion.BatchNormScale)} ranks channels by their batch-norm scales, but this {definition.Architecture} model has no batch norm on channels that can be pruned; use {nameof(ChannelCriterion.L1Norm)}.",
                        nameof(Criterion));
                }
            }
        }

        private readonly Options _options;

        internal ChannelPruner(IHostEnvironment env, ITransformer trainedModel, Options options)
            : base(env, trainedModel, options, "channels-" + CriterionName(options?.Criterion ?? ChannelCriterion.L1Norm))
        {
            _options = options!;
        }

        private protected override string RetrainingPhase => "fine-tuning";

        /// <summary>The short name of a criterion in reports and benchmark rows (<c>l1</c>, <c>bn-scale</c>, <c>random</c>).</summary>
        public static string CriterionName(ChannelCriterion criterion) => ChannelImportance.For(criterion, 0).Name;

        private protected override PruningMask Prune(PruningContext context)
        {
            ChannelImportance importance = ChannelImportance.For(_options.Criterion, context.Seed);
            LayerAllocation allocation = _options.Allocation ?? importance.DefaultAllocation;
            NetworkDefinition original = context.Network.Definition;
            long originalMacs = original.MultiplyAccumulates();
            var originalChannels = ChannelGroups.Find(original).ToDictionary(g => g.Name, g => g.Channels, StringComparer.Ordinal);
            int rounds = _options.PruningRounds;
            var clock = new Stopwatch();
            for (int round = 1; ; round++)
            {
                clock.Start();
                double exponent = (double)round / rounds;
                var target = _options.KeptChannelFraction is double fraction
                    ? new ChannelTarget(Math.Pow(fraction, exponent), null)
                    : new ChannelTarget(null, (long)Math.Floor(originalMacs / Math.Pow(_options.MacsReduction, exponent)));
                NetworkDefinition current = context.Network.Definition;
                IReadOnlyList<ChannelGroup> groups = ChannelGroups.Find(current);
                var entries = new List<ChannelAllocator.Entry>();
                using (NewDisposeScope())
                using (no_grad())
                {
                    var state = context.Network.StateDictionary();
                    foreach (ChannelGroup group in groups)
                    {
                        double[]? scores = group.Prunable ? importance.Score(group, state) : null;
                        bool kept = scores is null
                            || (group.IsResidual && !_options.PruneResidualWidth && !HasOverride(group))
                            || group.Producers.Any(p => _options.IgnoredLayers?.Contains(p.Path) == true);
                        double? layerFraction = OverrideOf(group) is double f ? Math.Pow(f, exponent) : null;
                        entries.Add(new ChannelAllocator.Entry(group, scores, kept, kept ? null : layerFraction, originalChannels.GetValueOrDefault(group.Name, group.Channels)));
                    }
                }
                int[] counts = ChannelAllocator.Counts(current, entries, target, allocation, _options.RoundChannelsTo);
                var selection = new ChannelSelection(entries.Select((e, i) => (e.Group, e.Scores is null ? All(e.Group.Channels) : ChannelAllocator.Keep(e.Scores, counts[i]))).ToArray());
                var mask = new PruningMask();
                mask.RemoveChannels(selection);
                clock.Stop();
                context.Channel.Info(MessageSensitivity.None, FormattableString.Invariant(
                    $"Channel pruning round {round}/{rounds} ({importance.Name}, {allocation}): keeping {string.Join(", ", entries.Select((e, i) => $"{e.Group.Name} {counts[i]}/{e.Group.Channels}"))}."));
                if (round == rounds)
                {
                    TimeSpan perLayer = clock.Elapsed / Math.Max(1, entries.Count);
                    ChannelReport.Add(context, original, ChannelSurgery.Resize(current, entries.Select((e, i) => (e.Group, counts[i]))),
                        entries.Select((e, i) => (e.Group, originalChannels.GetValueOrDefault(e.Group.Name, e.Group.Channels), counts[i])), _ => perLayer);
                    return mask;
                }
                using (mask)
                {
                    context.Compact(mask);
                    context.Retrain(mask);
                }
            }

            bool HasOverride(ChannelGroup group) => OverrideOf(group) is not null;
            double? OverrideOf(ChannelGroup group) => _options.LayerKeptFractions is { } fractions
                ? group.Producers.Select(p => fractions.TryGetValue(p.Path, out double f) ? f : (double?)null).FirstOrDefault(f => f is not null)
                : null;
        }

        private static long[] All(int channels) => Enumerable.Range(0, channels).Select(c => (long)c).ToArray();
    }
}
