// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Threading;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Training
{
    /// <summary>The knobs of one supervised training run (validated by the public options that fill it).</summary>
    internal sealed record TrainingSettings
    {
        public int Epochs { get; init; } = 10;
        public int BatchSize { get; init; } = 128;
        public OptimizerKind Optimizer { get; init; } = OptimizerKind.Sgd;
        public double LearningRate { get; init; } = 0.05;
        public double Momentum { get; init; } = 0.9;
        public bool Nesterov { get; init; } = true;
        public double WeightDecay { get; init; } = 5e-4;
        public LearningRateSchedule Schedule { get; init; } = LearningRateSchedule.Cosine;
        public int StepEpochs { get; init; } = 10;
        public double StepFactor { get; init; } = 0.1;
        public int RandomCropPadding { get; init; }
        public bool HorizontalFlip { get; init; }

        /// <summary>Stops after this many optimizer steps (for short fine-tuning); null runs every epoch.</summary>
        public long? MaxSteps { get; init; }
    }

    /// <summary>
    /// What a caller adds to the shared training loop: an extra loss term, work after the backward pass and after every
    /// optimizer step, text for each epoch's log line, and the epoch callback. Sparsity training (batch-norm scale L1),
    /// masked retraining, temperature schedules and auxiliary losses are all expressed as hooks.
    /// </summary>
    internal sealed record TrainingHooks
    {
        /// <summary>No hooks: plain cross-entropy training.</summary>
        public static readonly TrainingHooks None = new();

        /// <summary>What the log lines call the run: <c>training</c>, <c>retraining</c>, <c>fine-tuning</c>…</summary>
        public string Phase { get; init; } = "training";

        /// <summary>A term added to the cross-entropy of every step before the backward pass, from the batch's logits and
        /// labels (null: nothing added).</summary>
        public Func<Tensor, Tensor, Tensor?>? ExtraLoss { get; init; }

        /// <summary>The forward pass of a training step, when it is not the network's own (e.g. one that also keeps the
        /// activations auxiliary losses read); returns the logits.</summary>
        public Func<Tensor, Tensor>? Forward { get; init; }

        /// <summary>Parameters trained with the network's (e.g. auxiliary classifiers'); none by default.</summary>
        public IReadOnlyList<TorchSharp.Modules.Parameter> ExtraParameters { get; init; } = Array.Empty<TorchSharp.Modules.Parameter>();

        /// <summary>Runs after the backward pass, before the optimizer step (e.g. to add a subgradient).</summary>
        public Action? AfterBackward { get; init; }

        /// <summary>Runs after every optimizer step with the 1-based step number and the total step count (e.g. to
        /// re-apply masks or move a temperature).</summary>
        public Action<long, long>? AfterStep { get; init; }

        /// <summary>Text appended to each epoch's log line (e.g. the state of an attention schedule).</summary>
        public Func<TrainingEpochMetrics, string?>? DescribeEpoch { get; init; }

        /// <summary>Called with each epoch's metrics.</summary>
        public Action<TrainingEpochMetrics>? EpochCompleted { get; init; }

        /// <summary>Both hooks' after-step work, in order (either may be null).</summary>
        public TrainingHooks ThenAfterStep(Action<long, long>? next)
            => next is null ? this : this with { AfterStep = AfterStep is null ? next : (step, total) => { AfterStep(step, total); next(step, total); } };
    }

    /// <summary>
    /// The training loop shared by the trainer and by every pruner that retrains: shuffled mini-batches,
    /// optional augmentation, SGD or Adam, a per-step learning-rate schedule, and per-epoch metrics.
    /// Every step runs inside its own dispose scope.
    /// </summary>
    internal static class TrainingLoop
    {
        /// <summary>Trains <paramref name="network"/> in place, with the extra behaviour of <paramref name="hooks"/>.</summary>
        /// <exception cref="InvalidOperationException">The loss became NaN or infinite (the message names the epoch and step).</exception>
        public static void Run(ClassifierNetwork network, ImageDataset train, ImageDataset? validation, TrainingSettings settings,
            long seed, IChannel? channel, TrainingHooks? hooks, CancellationToken cancellationToken)
        {
            hooks ??= TrainingHooks.None;
            long count = train.Count;
            int batchSize = (int)Math.Min(settings.BatchSize, count);
            long batchesPerEpoch = (count + batchSize - 1) / batchSize;
            // A last batch of one image breaks batch norm's training statistics; fold it away.
            if (count % batchSize == 1 && batchesPerEpoch > 1)
                batchesPerEpoch--;
            long totalSteps = settings.MaxSteps is long max ? Math.Min(max, batchesPerEpoch * settings.Epochs) : batchesPerEpoch * settings.Epochs;
            int epochs = (int)((totalSteps + batchesPerEpoch - 1) / batchesPerEpoch);

            var parameters = network.NamedParameters().Select(p => p.Parameter).Concat(hooks.ExtraParameters).Where(p => p.requires_grad).ToList();
            using ParameterUpdate optimizer = ParameterUpdate.Create(settings.Optimizer, parameters, settings.Momentum, settings.WeightDecay,
                settings.Nesterov && settings.Momentum > 0);

            using var generator = new Generator((ulong)seed);
            Device device = network.Device;
            long step = 0;
            for (int epoch = 1; epoch <= epochs && step < totalSteps; epoch++)
            {
                var clock = Stopwatch.StartNew();
                network.Module.train();
                double lossSum = 0;
                long correct = 0, seen = 0;
                using Tensor order = randperm(count, generator: generator);
                for (long batch = 0; batch < batchesPerEpoch && step < totalSteps; batch++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    double learningRate = LearningRateAt(settings, step, totalSteps, batchesPerEpoch);

                    using (NewDisposeScope())
                    {
                        long start = batch * batchSize;
                        long length = batch == batchesPerEpoch - 1 ? count - start : batchSize;
                        Tensor indices = order.narrow(0, start, length);
                        Tensor images = train.Images.index_select(0, indices).to(device);
                        Tensor labels = train.Labels.index_select(0, indices).to(device);
                        if (settings.RandomCropPadding > 0 || settings.HorizontalFlip)
                            images = Augmentation.RandomCropAndFlip(images, settings.RandomCropPadding, settings.HorizontalFlip, generator);

                        optimizer.ZeroGrad();
                        Tensor logits = hooks.Forward is null ? network.Forward(images) : hooks.Forward(images);
                        Tensor loss = nn.functional.cross_entropy(logits, labels);
                        float lossValue = loss.item<float>();
                        if (!float.IsFinite(lossValue))
                        {
                            throw new InvalidOperationException(FormattableString.Invariant(
                                $"{hooks.Phase} diverged: the loss is {lossValue} at epoch {epoch}, step {step + 1} (learning rate {learningRate:G3}). Lower the learning rate (or the weight decay) and train again."));
                        }
                        if (hooks.ExtraLoss?.Invoke(logits, labels) is Tensor extraLoss)
                            loss = loss + extraLoss;
                        loss.backward();
                        hooks.AfterBackward?.Invoke();
                        optimizer.Step(learningRate);

                        lossSum += lossValue * length;
                        correct += logits.argmax(1).eq(labels).sum().item<long>();
                        seen += length;
                    }
                    step++;
                    hooks.AfterStep?.Invoke(step, totalSteps);
                }
                double trainSeconds = clock.Elapsed.TotalSeconds;
                double? validationAccuracy = validation is null ? null : Accuracy(network, validation, cancellationToken: cancellationToken);
                var metrics = new TrainingEpochMetrics(epoch, epochs, lossSum / seen, (double)correct / seen, validationAccuracy,
                    seen / trainSeconds, LearningRateAt(settings, Math.Max(step - 1, 0), totalSteps, batchesPerEpoch), clock.Elapsed);
                string? extra = hooks.DescribeEpoch?.Invoke(metrics);
                string line = hooks.Phase + " " + metrics;
                channel?.Info(MessageSensitivity.None, extra is null ? line : line + ", " + extra);
                hooks.EpochCompleted?.Invoke(metrics);
            }
            network.Module.eval();
        }

        /// <summary>Top-1 accuracy in evaluation mode.</summary>
        public static double Accuracy(ClassifierNetwork network, ImageDataset data, int batchSize = 256, CancellationToken cancellationToken = default)
        {
            network.Module.eval();
            long correct = 0;
            using (no_grad())
            {
                for (long start = 0; start < data.Count; start += batchSize)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    using var scope = NewDisposeScope();
                    long length = Math.Min(batchSize, data.Count - start);
                    Tensor logits = network.Forward(data.Images.narrow(0, start, length).to(network.Device));
                    correct += logits.argmax(1).eq(data.Labels.narrow(0, start, length).to(network.Device)).sum().item<long>();
                }
            }
            return (double)correct / data.Count;
        }

        internal static double LearningRateAt(TrainingSettings settings, long step, long totalSteps, long stepsPerEpoch) => settings.Schedule switch
        {
            LearningRateSchedule.Constant => settings.LearningRate,
            LearningRateSchedule.Step => settings.LearningRate * Math.Pow(settings.StepFactor, step / stepsPerEpoch / settings.StepEpochs),
            LearningRateSchedule.Cosine => settings.LearningRate * 0.5 * (1 + Math.Cos(Math.PI * step / totalSteps)),
            _ => throw new ArgumentOutOfRangeException(nameof(settings), settings.Schedule, "Unknown schedule."),
        };
    }
}
