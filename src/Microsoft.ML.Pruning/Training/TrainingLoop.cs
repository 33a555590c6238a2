// Licensed under the MIT license.

using System;
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
    /// The training loop shared by the trainer and by every pruner that retrains: shuffled mini-batches,
    /// optional augmentation, SGD or Adam, a per-step learning-rate schedule, and per-epoch metrics.
    /// Every step runs inside its own dispose scope.
    /// </summary>
    internal static class TrainingLoop
    {
        /// <summary>Trains <paramref name="network"/> in place.</summary>
        /// <remarks><c>afterStep</c> is called after every optimizer step with the 1-based step number and the total
        /// step count: pruners re-apply masks or update temperatures there. <c>describeEpoch</c> may return text that is
        /// appended to each epoch's log line (e.g. the state of an attention schedule).</remarks>
        public static void Run(ClassifierNetwork network, ImageDataset train, ImageDataset? validation, TrainingSettings settings,
            long seed, IChannel? channel, Action<TrainingEpochMetrics>? epochCompleted, CancellationToken cancellationToken,
            Action<long, long>? afterStep = null, Func<TrainingEpochMetrics, string?>? describeEpoch = null)
        {
            long count = train.Count;
            int batchSize = (int)Math.Min(settings.BatchSize, count);
            long batchesPerEpoch = (count + batchSize - 1) / batchSize;
            // A last batch of one image breaks batch norm's training statistics; fold it away.
            if (count % batchSize == 1 && batchesPerEpoch > 1)
                batchesPerEpoch--;
            long totalSteps = settings.MaxSteps is long max ? Math.Min(max, batchesPerEpoch * settings.Epochs) : batchesPerEpoch * settings.Epochs;
            int epochs = (int)((totalSteps + batchesPerEpoch - 1) / batchesPerEpoch);

            var parameters = network.NamedParameters().Select(p => p.Parameter).Where(p => p.requires_grad).ToList();
            using optim.Optimizer optimizer = settings.Optimizer switch
            {
                OptimizerKind.Sgd => optim.SGD(parameters, settings.LearningRate, settings.Momentum, 0, settings.WeightDecay, settings.Nesterov && settings.Momentum > 0),
                OptimizerKind.Adam => optim.Adam(parameters, settings.LearningRate, weight_decay: settings.WeightDecay),
                _ => throw new ArgumentOutOfRangeException(nameof(settings), settings.Optimizer, "Unknown optimizer."),
            };

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
                    foreach (var group in optimizer.ParamGroups)
                        group.LearningRate = learningRate;

                    using (NewDisposeScope())
                    {
                        long start = batch * batchSize;
                        long length = batch == batchesPerEpoch - 1 ? count - start : batchSize;
                        Tensor indices = order.narrow(0, start, length);
                        Tensor images = train.Images.index_select(0, indices).to(device);
                        Tensor labels = train.Labels.index_select(0, indices).to(device);
                        if (settings.RandomCropPadding > 0 || settings.HorizontalFlip)
                            images = Augmentation.RandomCropAndFlip(images, settings.RandomCropPadding, settings.HorizontalFlip, generator);

                        optimizer.zero_grad();
                        Tensor logits = network.Forward(images);
                        Tensor loss = nn.functional.cross_entropy(logits, labels);
                        loss.backward();
                        optimizer.step();

                        lossSum += loss.item<float>() * length;
                        correct += logits.argmax(1).eq(labels).sum().item<long>();
                        seen += length;
                    }
                    step++;
                    afterStep?.Invoke(step, totalSteps);
                }
                double trainSeconds = clock.Elapsed.TotalSeconds;
                double? validationAccuracy = validation is null ? null : Accuracy(network, validation, cancellationToken: cancellationToken);
                var metrics = new TrainingEpochMetrics(epoch, epochs, lossSum / seen, (double)correct / seen, validationAccuracy,
                    seen / trainSeconds, LearningRateAt(settings, Math.Max(step - 1, 0), totalSteps, batchesPerEpoch), clock.Elapsed);
                string? extra = describeEpoch?.Invoke(metrics);
                channel?.Info(MessageSensitivity.None, extra is null ? metrics.ToString() : metrics + ", " + extra);
                epochCompleted?.Invoke(metrics);
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
