// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using Microsoft.ML.Pruning.Native;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners.Common;
using Microsoft.ML.Pruning.Pruners.SynapticStrength;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners
{
    /// <summary>
    /// Kernel-level pruning: removes whole input→output connections (k×k kernels) of the convolutions, ranked by Synaptic
    /// Strength (Lin, Zhong, Wu and Yan, NeurIPS 2018) after sparsity training, or by the kernels' L1 norm (Mao et al.,
    /// 2017) as the baseline; the pruned convolutions become kernel-sparse layers that store and compute their kept
    /// kernels only.
    /// </summary>
    /// <remarks>
    /// <format type="text/markdown"><![CDATA[
    /// Create it with `mlContext.Transforms.PruneSynapticStrength(trainedModel, options)` and call `Fit` with the training
    /// data (read for sparsity training and fine-tuning).
    ///
    /// * **Re-parametrization** (<see cref="KernelCriterion.SynapticStrength"/>). The batch-norm scale γ of the layer that
    ///   produces a convolution's input is folded away into the kernels that read it (γ becomes ±1 and stays fixed during
    ///   sparsity training), and each kernel is written as `s[o,i] · K̂[o,i]` with `‖K̂‖_F = 1` and a learnable strength
    ///   `s ≥ 0`, which starts at `|γ_i| · ‖K[o,i]‖_F`: the same network, before training. The paper's text was not
    ///   available; this is the reading of its reviews and summaries (kernel norm times the norm of the input map, batch-norm
    ///   scales removed, kernels re-parametrized).
    /// * **Sparsity training.** <see cref="Options.SparsityEpochs"/> of training with `loss = CE + λ·Σ s`
    ///   (<see cref="Options.Lambda"/>), the penalty as a subgradient and `s` projected to `s ≥ 0` after every step, so weak
    ///   connections reach exactly zero. It uses the options' optimizer, learning rate and schedule. The strengths are then
    ///   read, and the network returns to its ordinary parametrization (each γ back in its batch norm and out of the kernels
    ///   that read its channels: the same function), so that fine-tuning trains the network as it was trained. Fine-tuned
    ///   in the re-parametrized form, the small VGG at 90% pruned scored 0.67 points lower.
    /// * **Pruning.** The connections of lowest strength go until <see cref="Options.KeptConnectionFraction"/> of the pruned
    ///   convolutions' connections remain: one threshold over all layers (`Global`, the default; each layer's strengths are
    ///   divided by their mean first, batch norm making every layer's scale arbitrary, and every layer keeps at least a
    ///   quarter of the overall fraction) or the same fraction per layer (`Uniform`). Strengths that sparsity training took
    ///   to exactly zero rank among themselves by their strength before it, so that a penalty that zeroes more than the
    ///   target does not leave the choice to the kernels' order. Convolutions with one input channel
    ///   (the stem) are not pruned: a connection there is a whole filter.
    /// * **Compaction.** Pruned convolutions become <see cref="KernelSparseConv2dLayer"/>s (per output channel, the kept input
    ///   channels and their kernels); channels with no kernel left to read or to write them are removed by the channel
    ///   engine, as channel pruning would. `GetSummary()` counts the kept kernels; the saved model stores them only; the
    ///   compact runtime computes them only.
    /// * **Batch-norm statistics** are re-estimated on up to 2,048 images of the data after pruning, as the pruned kernels
    ///   change what every batch norm sees (without it a network with 90% of its connections gone scores at chance
    ///   before fine-tuning).
    /// * **Fine-tuning.** <see cref="PruningOptions.RetrainEpochs"/> (or iterations) of training of the kernel-sparse
    ///   network, the pruned connections staying absent.
    /// ]]></format>
    /// </remarks>
    public sealed class SynapticStrengthPruner : PruningEstimatorBase
    {
        /// <summary>Options of <see cref="SynapticStrengthPruner"/>; the field initializers are the defaults.</summary>
        public sealed class Options : PruningOptions
        {
            /// <summary>How connections are ranked. Default: <see cref="KernelCriterion.SynapticStrength"/>.</summary>
            public KernelCriterion Criterion = KernelCriterion.SynapticStrength;

            /// <summary>
            /// The fraction of the pruned convolutions' connections (input→output kernels) kept, in (0, 1]. Ignored when
            /// <see cref="PrunedConnectionFraction"/> is set. Default: 0.1 (90% of the connections pruned).
            /// </summary>
            public double KeptConnectionFraction = 0.1;

            /// <summary>The fraction of connections pruned, in [0, 1); overrides <see cref="KeptConnectionFraction"/> (as
            /// 1 − this) when set. Default: null.</summary>
            public double? PrunedConnectionFraction;

            /// <summary>
            /// λ of the sparsity penalty <c>λ·Σ s</c> on the synaptic strengths, at least 0. Default: 5e-4, chosen for the small
            /// VGG on Fashion-MNIST from the strengths of its trained model (batch-norm scales folded in), whose per-layer
            /// medians are 0.04–0.08 and 90th percentiles 0.06–0.13: over the default 3 sparsity epochs of the default SGD
            /// (469 steps an epoch on the 60,000 images, learning rate 0.05 cosine to zero, momentum 0.9) the penalty alone
            /// moves a strength by up to λ·Σ lr/(1 − momentum) ≈ 350·λ, so 5e-4 moves it by about 0.18, past the 90th
            /// percentile of every layer: only the connections the cross-entropy holds up stay away from zero, which is what
            /// pruning 90% or more of them needs. It scales with the data: fewer steps need a larger λ for the same effect.
            /// </summary>
            public double Lambda = 5e-4;

            /// <summary>Epochs of sparsity training before pruning (<see cref="KernelCriterion.SynapticStrength"/> only; 0
            /// prunes by the initial strengths <c>|γ|·‖K‖</c>). Default: 3.</summary>
            public int SparsityEpochs = 3;

            /// <summary>
            /// The same kept fraction in every pruned layer, or one threshold over all of them (each layer's scores divided
            /// by their mean, every layer keeping at least a quarter of the overall fraction). Default:
            /// <see cref="LayerAllocation.Uniform"/>, the better of the two for Synaptic Strength on the small VGG (5
            /// fine-tuning epochs, one seed): 93.53% at 90% of the connections pruned and 93.39% at 95%, against 93.47–93.62%
            /// and 92.78–93.06% (three seeds) with one threshold, which takes most connections from the layers on the largest
            /// maps. Kernel norm did better with one threshold at 95% (93.01% against 92.90%).
            /// </summary>
            public LayerAllocation Allocation = LayerAllocation.Uniform;

            /// <summary>The kept connection fraction the options ask for.</summary>
            internal double KeptFraction => PrunedConnectionFraction is double pruned ? 1 - pruned : KeptConnectionFraction;

            internal override void Validate()
            {
                base.Validate();
                if (!Enum.IsDefined(Criterion))
                    throw new ArgumentOutOfRangeException(nameof(Criterion), Criterion, "Unknown kernel criterion.");
                Require(KeptConnectionFraction > 0 && KeptConnectionFraction <= 1, nameof(KeptConnectionFraction), KeptConnectionFraction, "must be in (0, 1]");
                if (PrunedConnectionFraction is double pruned)
                    Require(pruned >= 0 && pruned < 1, nameof(PrunedConnectionFraction), pruned, "must be in [0, 1)");
                Require(double.IsFinite(Lambda) && Lambda >= 0, nameof(Lambda), Lambda, "must be zero or a positive number");
                Require(SparsityEpochs >= 0, nameof(SparsityEpochs), SparsityEpochs, "must be zero or positive");
                if (!Enum.IsDefined(Allocation))
                    throw new ArgumentOutOfRangeException(nameof(Allocation), Allocation, "Unknown allocation.");
            }

            internal override void ValidateFor(NetworkDefinition definition)
            {
                if (PrunedLayers(definition).Count == 0)
                {
                    throw new ArgumentException(
                        $"Options.{nameof(Criterion)}: this {definition.Architecture} model has no convolution with more than one input channel whose connections could be pruned.",
                        nameof(Criterion));
                }
            }
        }

        /// <summary>Images of the data on which batch-norm statistics are re-estimated after pruning.</summary>
        private const int RecalibrationImages = 2048;

        private readonly Options _options;

        internal SynapticStrengthPruner(IHostEnvironment env, ITransformer trainedModel, Options options)
            : base(env, trainedModel, options, CriterionName(options?.Criterion ?? KernelCriterion.SynapticStrength))
        {
            _options = options!;
        }

        /// <summary>The short name of a criterion in reports and benchmark rows (<c>synaptic</c>, <c>kernel-norm</c>).</summary>
        public static string CriterionName(KernelCriterion criterion) => Enum.IsDefined(criterion) ? KernelImportance.For(criterion).Name : criterion.ToString();

        private protected override string RetrainingPhase => "fine-tuning";

        private protected override bool NeedsLabels => base.NeedsLabels || SparsityTraining;

        private bool SparsityTraining => _options.Criterion == KernelCriterion.SynapticStrength && _options.SparsityEpochs > 0;

        /// <summary>The convolutions whose connections are pruned: every Conv2d layer with more than one input channel.</summary>
        internal static IReadOnlyList<string> PrunedLayers(NetworkDefinition definition)
            => definition.Flatten().Where(l => l.Layer is Conv2dLayer { InChannels: > 1 }).Select(l => l.Path).ToArray();

        /// <summary>
        /// One score per connection of each pruned layer, [out, in] (float64, outside any dispose scope). Synaptic Strength
        /// re-parametrizes the network, trains the strengths, scores them, then returns the network to its ordinary
        /// parametrization (the same function), so that fine-tuning trains it as it was trained; strengths the penalty took
        /// to exactly zero rank among themselves by what they were before sparsity training.
        /// </summary>
        private Tensor[] Scores(KernelImportance importance, ClassifierNetwork network, IReadOnlyList<string> paths, PruningContext context)
        {
            Tensor[] Score(IReadOnlyDictionary<string, Tensor> state)
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                return paths.Select(p => importance.Score(state[p + ".weight"]).cpu().DetachFromDisposeScope()).ToArray();
            }
            if (!importance.TrainsStrengths)
                return Score(network.StateDictionary());

            using var strengths = SynapticStrengthParametrization.Create(network, paths);
            Tensor[] initial = Score(network.StateDictionary());
            if (!SparsityTraining)
                return initial;
            try
            {
                var settings = _options.ToRetrainSettings() with { Epochs = _options.SparsityEpochs, MaxSteps = null };
                TrainingLoop.Run(network, context.Data, null, settings, context.Seed, context.Channel,
                    strengths.Hooks(network, _options.Lambda, "sparsity training"), context.CancellationToken);
                context.Channel.Info(MessageSensitivity.None, FormattableString.Invariant(
                    $"Sparsity training (λ = {_options.Lambda:G3}): {strengths.ZeroFraction():P1} of the strengths are zero."));
                Tensor[] trained = Score(network.StateDictionary());
                using (NewDisposeScope())
                {
                    return trained.Select((t, i) =>
                    {
                        Tensor ranked = ScoreTies.Break(t, initial[i]).DetachFromDisposeScope();
                        t.Dispose();
                        return ranked;
                    }).ToArray();
                }
            }
            finally
            {
                foreach (Tensor t in initial)
                    t.Dispose();
            }
        }

        private protected override PruningMask Prune(PruningContext context)
        {
            var clock = Stopwatch.StartNew();
            KernelImportance importance = KernelImportance.For(_options.Criterion);
            ClassifierNetwork network = context.Network;
            IReadOnlyList<string> paths = PrunedLayers(network.Definition);
            Tensor[] scores = Scores(importance, network, paths, context);
            network.ResetCompiledForm();

            var state = network.StateDictionary();
            var mask = new PruningMask();
            try
            {
                var kept = new Dictionary<string, bool[,]>(StringComparer.Ordinal);
                using (DisposeScope scoreScope = NewDisposeScope())
                using (no_grad())
                {
                    // The scores live outside any scope: this one disposes them with its own tensors.
                    scoreScope.Attach(scores);
                    var units = paths.Select((p, i) => new KeptFractionAllocator.Unit(p, scores[i].numel())).ToArray();
                    long[] counts = KeptFractionAllocator.Allocate(units, _options.KeptFraction, null, _options.Allocation,
                        i => scores[i] / scores[i].mean().clamp_min(HeldScalars.Of(1e-30)));
                    for (int l = 0; l < paths.Count; l++)
                    {
                        Tensor score = scores[l];
                        long outputs = score.shape[0], inputs = score.shape[1];
                        // Stable descending order: ties keep the lower connection index.
                        var (_, order) = score.flatten().sort(descending: true, stable: true);
                        Tensor chosen = zeros(score.numel(), dtype: ScalarType.Bool).index_fill_(0, order.narrow(0, 0, counts[l]), HeldScalars.Of(true)).view(outputs, inputs);
                        var weight = state[paths[l] + ".weight"];
                        mask.Set(paths[l] + ".weight", chosen.unsqueeze(-1).unsqueeze(-1).expand(weight.shape).contiguous());
                        mask.KernelSparseLayers.Add(paths[l]);
                        bool[] flat = chosen.flatten().data<bool>().ToArray();
                        var connections = new bool[outputs, inputs];
                        for (int c = 0; c < flat.Length; c++)
                            connections[c / inputs, c % inputs] = flat[c];
                        kept[paths[l]] = connections;
                        long taps = weight.shape[2] * weight.shape[3];
                        context.Results.Add(new LayerPruningResult(paths[l], weight.numel(), counts[l] * taps, null, clock.Elapsed / paths.Count));
                    }
                }
                if (KernelSparseCompaction.DeadChannels(network.Definition, kept) is ChannelSelection dead)
                {
                    mask.RemoveChannels(dead);
                    foreach (var (group, channels) in dead.Groups)
                        context.ChannelResults.Add(new ChannelGroupResult(group.Name, group.Members.Select(m => m.Path).Distinct().ToArray(), group.Channels, channels.Length, group.IsResidual));
                }
                // Pruned kernels change what every batch norm sees: re-estimate their statistics on a sample of the data,
                // so that the pruned network scores sensibly before any fine-tuning.
                mask.Apply(network);
                using (Tensor images = context.SampleImages(RecalibrationImages))
                {
                    if (BatchNormRecalibration.Run(network, images, context.CancellationToken))
                        context.CalibrationImages = images.shape[0];
                }
                network.ResetCompiledForm();
                context.Channel.Info(MessageSensitivity.None, FormattableString.Invariant(
                    $"Kernel pruning ({importance.Name}, {_options.Allocation}): keeping {string.Join(", ", context.Results.Select(r => $"{r.Layer} {r.KeptFraction:P1}"))} of the connections."));
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
