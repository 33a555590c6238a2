// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using Microsoft.ML.Pruning.Native;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners.Channels;
using Microsoft.ML.Pruning.Pruners.Common;
using Microsoft.ML.Pruning.Pruners.Discrimination;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners
{
    /// <summary>
    /// Discrimination-aware channel pruning (Zhuang et al., "Discrimination-aware Channel Pruning for Deep Neural
    /// Networks", NeurIPS 2018): auxiliary classifiers make the channels that help tell the classes apart visible to each
    /// layer; a greedy selection keeps, layer by layer, the input channels that most reduce a reconstruction loss plus the
    /// auxiliary classifier's loss, and the rest are removed from the network.
    /// </summary>
    /// <remarks>
    /// <format type="text/markdown"><![CDATA[
    /// Create it with `mlContext.Transforms.PruneDiscriminationAware(trainedModel, options)` and call `Fit` with the labelled
    /// training data.
    ///
    /// 1. **Auxiliary classifiers** (batch norm → ReLU → global average pool → linear) are placed evenly along the pruned
    ///    layers (<see cref="Options.AuxiliaryLosses"/>, by default 2 without residual blocks and 3 with them) and trained
    ///    together with the network (<see cref="Options.AuxiliaryEpochs"/>; the official code's all-heads-at-once form,
    ///    each auxiliary loss weighted 1).
    /// 2. **Greedy channel selection**, one layer after another (every convolution's input channels in a plain network; the
    ///    channels inside each residual block — the input of its second convolution — in a ResNet; residual widths are
    ///    kept): the layer's weights start at zero; at each step the unselected input channel whose gradient of
    ///    `L = MSE(output, pre-trained output) + λ·CE(auxiliary classifier)` has the largest norm (summed per output kernel,
    ///    as the code) is added, its weights warm-started from the trained ones, and the layer is trained for
    ///    <see cref="Options.SelectionPasses"/> passes over the selection images with its gradient masked to the selected
    ///    channels (SGD, Nesterov momentum 0.9, weight decay 1e-4, batch norm frozen), until the layer keeps its share.
    ///    <see cref="Options.AdaptiveEpsilon"/> stops a layer early when the loss stops falling (DCP-Adapt).
    /// 3. The unselected channels are removed through the channel engine of `PruneChannels` and the smaller network is
    ///    fine-tuned (<see cref="PruningOptions.RetrainEpochs"/>).
    ///
    /// <see cref="Options.RandomSelection"/> chooses the channels at random instead (the paper's Random-DCP control).
    /// ]]></format>
    /// </remarks>
    public sealed class DiscriminationAwarePruner : PruningEstimatorBase
    {
        /// <summary>Options of <see cref="DiscriminationAwarePruner"/>; the field initializers are the defaults.</summary>
        public sealed class Options : PruningOptions
        {
            /// <summary>The target as a reduction of the multiply-accumulates of one image, met by one pruning rate shared by
            /// every pruned layer. At least 1. Ignored when <see cref="PruningRate"/> is set. Default: 2.</summary>
            public double MacsReduction = 2.0;

            /// <summary>The fraction η of each pruned layer's input channels removed (the layer keeps c − ⌊η·c⌋, as the official
            /// code), in [0, 1); overrides <see cref="MacsReduction"/> when set. Default: null.</summary>
            public double? PruningRate;

            /// <summary>Auxiliary classifiers; null for 2 on networks without residual blocks and 3 with them (the paper's
            /// choices for VGG and ResNet-56). Default: null.</summary>
            public int? AuxiliaryLosses;

            /// <summary>λ, the weight of the auxiliary classifier's loss against the reconstruction loss. Zero or positive. Default: 1.</summary>
            public double Lambda = 1.0;

            /// <summary>Training images (a seeded random subset) the selection computes its losses on. Default: 2048.</summary>
            public int SelectionImages = 2048;

            /// <summary>Learning rate of each selection step's training of the layer. Default: 0.01 (the official code's).</summary>
            public double SelectionLearningRate = 0.01;

            /// <summary>Passes over the selection images of each selection step's training of the layer. Default: 1.</summary>
            public int SelectionPasses = 1;

            /// <summary>DCP-Adapt: a layer stops adding channels when the loss falls by no more than ε times its initial value
            /// in one step (so it may keep fewer than its share). Null: off. Default: null.</summary>
            public double? AdaptiveEpsilon;

            /// <summary>Epochs of training the network with its auxiliary classifiers before selection (with the learning rate,
            /// batch size and optimizer of the fine-tuning options); 0 leaves the classifiers as initialized. Default: 1.</summary>
            public int AuxiliaryEpochs = 1;

            /// <summary>Choose the channels at random (seeded by the MLContext) instead, without auxiliary classifiers: the
            /// paper's Random-DCP control. Default: false.</summary>
            public bool RandomSelection;

            internal override void Validate()
            {
                base.Validate();
                Require(double.IsFinite(MacsReduction) && MacsReduction >= 1, nameof(MacsReduction), MacsReduction, "must be a number of at least 1 (2 = half the multiply-accumulates)");
                if (PruningRate is double rate)
                    Require(rate >= 0 && rate < 1, nameof(PruningRate), rate, "must be in [0, 1)");
                if (AuxiliaryLosses is int losses)
                    Require(losses >= 0, nameof(AuxiliaryLosses), losses, "must be zero or positive");
                Require(double.IsFinite(Lambda) && Lambda >= 0, nameof(Lambda), Lambda, "must be zero or positive");
                Require(SelectionImages >= 1, nameof(SelectionImages), SelectionImages, "must be at least 1");
                Require(double.IsFinite(SelectionLearningRate) && SelectionLearningRate > 0, nameof(SelectionLearningRate), SelectionLearningRate, "must be a positive number");
                Require(SelectionPasses >= 1, nameof(SelectionPasses), SelectionPasses, "must be at least 1");
                if (AdaptiveEpsilon is double epsilon)
                    Require(double.IsFinite(epsilon) && epsilon > 0, nameof(AdaptiveEpsilon), epsilon, "must be a positive number");
                Require(AuxiliaryEpochs >= 0, nameof(AuxiliaryEpochs), AuxiliaryEpochs, "must be zero or positive");
            }

            internal override void ValidateFor(NetworkDefinition definition)
            {
                if (PrunedLayers(definition).Count == 0)
                {
                    throw new ArgumentException(
                        $"Discrimination-aware pruning selects the input channels of convolutions that read another convolution's channels; this {definition.Architecture} model has none.",
                        "trainedModel");
                }
            }
        }

        private const int BatchSize = 128;

        /// <summary>The most memory the selection set's activations before a pruned layer may take to be kept between passes.</summary>
        private const long MaxCachedInputBytes = 1L << 30;
        private readonly Options _options;

        internal DiscriminationAwarePruner(IHostEnvironment env, ITransformer trainedModel, Options options)
            : base(env, trainedModel, options, options is { RandomSelection: true } ? "random-dcp" : "dcp")
        {
            _options = options;
        }

        private protected override bool NeedsLabels => true;

        private protected override string RetrainingPhase => "fine-tuning";

        /// <summary>A layer whose input channels are selected, with the channel group they belong to.</summary>
        /// <param name="Path">The convolution's path.</param>
        /// <param name="Group">The group of its input channels.</param>
        /// <param name="TopLevel">The index of the top-level layer that holds it.</param>
        internal sealed record PrunedLayer(string Path, ChannelGroup Group, int TopLevel);

        /// <summary>
        /// The layers discrimination-aware pruning selects channels for: k×k convolutions whose input channels form a
        /// prunable group that is not a residual width and that only they read, written by a convolution.
        /// </summary>
        internal static IReadOnlyList<PrunedLayer> PrunedLayers(NetworkDefinition definition)
        {
            var topLevel = definition.Layers.Select((l, i) => (l.Name, i)).ToDictionary(p => p.Name, p => p.i, StringComparer.Ordinal);
            return ChannelGroups.Find(definition)
                .Where(g => g.Prunable && !g.IsResidual && g.Consumers.Count() == 1 && g.Producers.All(p => p.Layer is Conv2dLayer)
                    && g.Consumers.Single().Layer is Conv2dLayer { KernelSize: > 1 })
                .Select(g => new PrunedLayer(g.Consumers.Single().Path, g, topLevel[g.Consumers.Single().Path.Split('.')[0]]))
                .ToList();
        }

        private protected override PruningMask Prune(PruningContext context)
        {
            ClassifierNetwork network = context.Network;
            NetworkDefinition definition = network.Definition;
            IReadOnlyList<PrunedLayer> layers = PrunedLayers(definition);
            int[] keep = KeptCounts(definition, layers);

            (Tensor Images, Tensor Labels) selection = SampleSelection(context);
            var kept = new Dictionary<string, long[]>(StringComparer.Ordinal);
            var elapsed = new Dictionary<string, TimeSpan>(StringComparer.Ordinal);
            try
            {
                if (_options.RandomSelection)
                {
                    var random = new Random(context.Seed);
                    for (int i = 0; i < layers.Count; i++)
                        kept[layers[i].Group.Name] = Enumerable.Range(0, layers[i].Group.Channels).OrderBy(_ => random.Next()).Take(keep[i]).OrderBy(c => c).Select(c => (long)c).ToArray();
                }
                else
                {
                    int auxiliary = _options.AuxiliaryLosses ?? (definition.Layers.Any(l => l is ResidualBlock) ? 3 : 2);
                    auxiliary = Math.Min(auxiliary, Math.Max(0, layers.Count - 1));
                    int[] segment = Enumerable.Range(0, layers.Count).Select(i => i * (auxiliary + 1) / layers.Count).ToArray();
                    int[] taps = Enumerable.Range(0, auxiliary).Select(s => Tap(definition, layers[Array.FindLastIndex(segment, x => x == s)].TopLevel)).ToArray();
                    using AuxiliaryClassifiers heads = AuxiliaryClassifiers.Create(network, taps);
                    TrainWithHeads(context, heads);
                    using ClassifierNetwork baseline = network.Clone();
                    for (int i = 0; i < layers.Count; i++)
                    {
                        context.CancellationToken.ThrowIfCancellationRequested();
                        var layerClock = Stopwatch.StartNew();
                        kept[layers[i].Group.Name] = Select(context, network, baseline, heads, layers[i], segment[i] < auxiliary ? segment[i] : -1, keep[i], selection);
                        elapsed[layers[i].Path] = layerClock.Elapsed;
                    }
                }
            }
            finally
            {
                selection.Images.Dispose();
                selection.Labels.Dispose();
            }

            var channelSelection = new ChannelSelection(ChannelGroups.Find(definition)
                .Select(g => (g, kept.TryGetValue(g.Name, out long[]? k) ? k : Enumerable.Range(0, g.Channels).Select(c => (long)c).ToArray())).ToArray());
            var mask = new PruningMask();
            mask.RemoveChannels(channelSelection);
            ChannelReport.Add(context, definition, ChannelSurgery.Resize(definition, channelSelection.Groups.Select(g => (g.Group, g.Kept.Length))),
                channelSelection.Groups.Select(g => (g.Group, g.Group.Channels, g.Kept.Length)), path => elapsed.GetValueOrDefault(path));
            context.CalibrationImages = _options.SelectionImages;
            return mask;
        }

        /// <summary>Input channels each pruned layer keeps: c − ⌊η·c⌋, with η given or searched for the MACs target.</summary>
        private int[] KeptCounts(NetworkDefinition definition, IReadOnlyList<PrunedLayer> layers)
        {
            if (_options.PruningRate is double rate)
                return layers.Select(l => l.Group.Channels - (int)Math.Floor(rate * l.Group.Channels)).ToArray();
            var names = layers.Select(l => l.Group.Name).ToHashSet(StringComparer.Ordinal);
            var entries = ChannelGroups.Find(definition).Select(g => new ChannelAllocator.Entry(g, null, !names.Contains(g.Name), null, g.Channels)).ToList();
            int[] counts = ChannelAllocator.Counts(definition, entries, new ChannelTarget(null, (long)Math.Floor(definition.MultiplyAccumulates() / _options.MacsReduction)),
                LayerAllocation.Uniform, roundTo: 1);
            return layers.Select(l => counts[entries.FindIndex(e => e.Group.Name == l.Group.Name)]).ToArray();
        }

        /// <summary>The top-level layer after which a head reads for a pruned layer held by top-level layer <paramref name="index"/>:
        /// past the batch norm, ReLU and pooling that follow it.</summary>
        private static int Tap(NetworkDefinition definition, int index)
        {
            while (index + 1 < definition.Layers.Count && definition.Layers[index + 1] is BatchNorm2dLayer or ReluLayer or MaxPool2dLayer)
                index++;
            return index;
        }

        private (Tensor Images, Tensor Labels) SampleSelection(PruningContext context)
        {
            using var scope = NewDisposeScope();
            long count = Math.Min(_options.SelectionImages, context.Data.Count);
            using var generator = new Generator((ulong)context.Seed);
            Tensor chosen = randperm(context.Data.Count, generator: generator).narrow(0, 0, count);
            return (context.Data.Images.index_select(0, chosen).to(context.Network.Device).MoveToOuterDisposeScope(),
                context.Data.Labels.index_select(0, chosen).to(context.Network.Device).MoveToOuterDisposeScope());
        }

        /// <summary>Trains the network with its auxiliary classifiers: the final loss plus every head's loss.</summary>
        private void TrainWithHeads(PruningContext context, AuxiliaryClassifiers heads)
        {
            if (_options.AuxiliaryEpochs == 0)
                return;
            Tensor?[] headLogits = Array.Empty<Tensor?>();
            TrainingSettings settings = _options.ToRetrainSettings() with { Epochs = _options.AuxiliaryEpochs, MaxSteps = null };
            heads.Train(true);
            try
            {
                TrainingLoop.Run(context.Network, context.Data, null, settings, context.Seed + 17, context.Channel, new TrainingHooks
                {
                    Phase = "training with auxiliary classifiers,",
                    Forward = images =>
                    {
                        var (logits, perHead) = heads.Forward(images, heads.Last);
                        headLogits = perHead;
                        return logits;
                    },
                    ExtraLoss = (_, labels) => headLogits.Length == 0 ? null : headLogits.Select(h => nn.functional.cross_entropy(h!, labels)).Aggregate((a, b) => a + b),
                    ExtraParameters = heads.Parameters,
                }, context.CancellationToken);
            }
            finally
            {
                heads.Train(false);
                context.Network.Module.eval();
            }
        }

        /// <summary>
        /// Algorithm 2 of the paper for one layer: greedy selection of <paramref name="keep"/> input channels by the norm
        /// of the loss's gradient, each followed by training of the layer restricted to the selected channels. Leaves the
        /// layer's weights trained on the selected channels (and zero on the others); returns the selected channels, ascending.
        /// </summary>
        private long[] Select(PruningContext context, ClassifierNetwork network, ClassifierNetwork baseline, AuxiliaryClassifiers heads, PrunedLayer layer,
            int head, int keep, (Tensor Images, Tensor Labels) selection)
        {
            var modules = network.Module.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
            var conv = (nn.Module<Tensor, Tensor>)modules[layer.Path];
            var reference = (nn.Module<Tensor, Tensor>)baseline.Module.named_modules().First(m => m.name == layer.Path).module;
            TorchSharp.Modules.Parameter weight = network.NamedParameters().Single(p => p.Name == layer.Path + ".weight").Parameter;
            int last = head >= 0 ? heads.Taps[head] : heads.Last;
            long count = selection.Images.shape[0];

            // The pre-trained layer's outputs on the selection images, the reconstruction targets.
            var targets = new List<Tensor>();
            Tensor? captured = null;
            var hook = reference.register_forward_hook((_, _, output) => { captured = output.detach().clone(); return output; });
            try
            {
                using var noGrad = no_grad();
                baseline.Module.eval();
                var referenceLayers = baseline.Module.named_children().Select(c => (nn.Module<Tensor, Tensor>)c.module).ToArray();
                for (long start = 0; start < count; start += BatchSize)
                {
                    using var scope = NewDisposeScope();
                    Tensor x = selection.Images.narrow(0, start, Math.Min(BatchSize, count - start));
                    for (int i = 0; i <= layer.TopLevel; i++)
                        x = referenceLayers[i].call(x);
                    targets.Add(captured!.MoveToOuterDisposeScope());
                }
            }
            finally
            {
                hook.remove();
            }

            var frozen = network.NamedParameters().Select(p => (p.Parameter, p.Parameter.requires_grad)).Concat(heads.Parameters.Select(p => (p, p.requires_grad))).ToList();
            Tensor pretrained = weight.detach().clone();
            var inputs = new List<Tensor>();
            Tensor? output = null;
            // An alias: a Sequential (a residual block's body) disposes its layers' outputs once the next layer has read them.
            var outputHook = conv.register_forward_hook((_, _, o) => { output = o.alias(); return o; });
            try
            {
                foreach (var (parameter, _) in frozen)
                    parameter.requires_grad = false;
                weight.requires_grad = true;
                network.Module.eval(); // batch norm frozen
                using (no_grad())
                    weight.zero_();
                var selected = new List<long>();
                var inputMask = zeros(weight.shape[1], dtype: ScalarType.Bool, device: weight.device);

                // The layers before the one holding this layer stay fixed while it is selected: their output on the
                // selection images is computed once (when it fits in memory) instead of in every pass.
                int first = 0;
                long[] inputShape = NetworkWalker.Walk(network.Definition).Where(s => s.Scope.Length == 0).ElementAt(layer.TopLevel).InputShape
                    .Select(d => (long)d).ToArray();
                if (layer.TopLevel > 0 && count * inputShape.Aggregate(1L, (a, b) => a * b) * sizeof(float) <= MaxCachedInputBytes)
                {
                    using var noGrad = no_grad();
                    for (long start = 0; start < count; start += BatchSize)
                    {
                        using var scope = NewDisposeScope();
                        inputs.Add(heads.InputOf(selection.Images.narrow(0, start, Math.Min(BatchSize, count - start)), layer.TopLevel).MoveToOuterDisposeScope());
                    }
                    first = layer.TopLevel;
                }

                // L over the selection images (mean of the batch means), with gradients accumulated into the weight.
                using Scalar lambda = _options.Lambda.ToScalar();
                double Pass(bool step, ParameterUpdate? optimizer)
                {
                    double total = 0;
                    int batches = 0;
                    for (long start = 0; start < count; start += BatchSize)
                    {
                        context.CancellationToken.ThrowIfCancellationRequested();
                        using var scope = NewDisposeScope();
                        long length = Math.Min(BatchSize, count - start);
                        optimizer?.ZeroGrad();
                        var (final, perHead) = first > 0 ? heads.Forward(inputs[batches], first, last) : heads.Forward(selection.Images.narrow(0, start, length), last);
                        Tensor labels = selection.Labels.narrow(0, start, length);
                        Tensor loss = nn.functional.mse_loss(output!, targets[batches])
                            + nn.functional.cross_entropy(head >= 0 ? perHead[head]! : final, labels).mul(lambda);
                        loss.backward();
                        if (optimizer is not null)
                        {
                            using (no_grad())
                                weight.grad!.mul_(inputMask.view(1, -1, 1, 1));
                            optimizer.Step(_options.SelectionLearningRate);
                        }
                        total += loss.item<float>();
                        batches++;
                    }
                    return total / batches;
                }

                double initial = double.NaN, previous = double.NaN;
                while (selected.Count < keep)
                {
                    // The gradient over the whole selection set, scored per input channel as the sum of its kernels' norms.
                    weight.grad?.zero_();
                    double loss = Pass(step: false, null);
                    if (double.IsNaN(initial))
                        initial = previous = loss;
                    long best;
                    using (no_grad())
                    using (NewDisposeScope())
                    {
                        Tensor scores = weight.grad!.pow(HeldScalars.Of(2)).sum(new long[] { 2, 3 }).sqrt().sum(new long[] { 0 }).to_type(ScalarType.Float64);
                        scores.masked_fill_(inputMask, HeldScalars.Of(double.NegativeInfinity));
                        best = scores.argmax().item<long>();
                        Tensor index = tensor(new[] { best }, device: weight.device);
                        inputMask.index_fill_(0, index, HeldScalars.Of(true));
                        weight.index_copy_(1, index, pretrained.index_select(1, index));
                    }
                    selected.Add(best);

                    using ParameterUpdate optimizer = ParameterUpdate.Create(OptimizerKind.Sgd, new[] { weight }, momentum: 0.9, weightDecay: 1e-4, nesterov: true);
                    double after = 0;
                    for (int pass = 0; pass < _options.SelectionPasses; pass++)
                        after = Pass(step: true, optimizer);
                    context.Channel.Info(MessageSensitivity.None, FormattableString.Invariant(
                        $"Discrimination-aware selection, {layer.Path}{(head >= 0 ? $" (auxiliary classifier {head + 1})" : " (final classifier)")}: {selected.Count}/{keep} channels, loss {after:G4}."));
                    if (_options.AdaptiveEpsilon is double epsilon && Math.Abs(previous - after) <= epsilon * initial)
                        break;
                    previous = after;
                }
                return selected.OrderBy(c => c).ToArray();
            }
            finally
            {
                outputHook.remove();
                pretrained.Dispose();
                foreach (Tensor target in targets.Concat(inputs))
                    target.Dispose();
                foreach (var (parameter, requiresGrad) in frozen)
                    parameter.requires_grad = requiresGrad;
                weight.grad?.zero_();
                network.ResetCompiledForm();
            }
        }
    }
}
