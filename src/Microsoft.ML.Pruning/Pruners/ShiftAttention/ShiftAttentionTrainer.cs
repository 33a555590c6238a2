// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Networks.Layers;
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Runtime;
using Microsoft.ML.Pruning.Pruners.ShiftAttention;
using TorchSharp;

namespace Microsoft.ML.Pruning.Pruners
{
    /// <summary>
    /// The <see cref="IEstimator{TTransformer}"/> that trains an image classifier whose 3×3 convolutions are shift attention
    /// layers (Hacene et al., "Attention Based Pruning for Shift Networks") and returns it compacted: each of those layers
    /// keeps one weight and one shift per (output, input) channel pair — or per input channel in the shared variant —
    /// instead of a k×k kernel.
    /// </summary>
    /// <remarks>
    /// <format type="text/markdown"><![CDATA[
    /// Create it with `mlContext.Transforms.PruneAttention(...)`.
    ///
    /// ### Input and output columns
    /// As for the image classifier: a [key](xref:Microsoft.ML.Data.KeyDataViewType) label column and a
    /// `Vector<Single, C, H, W>` feature column; the output columns are `Score` (class probabilities) and
    /// `PredictedLabel` (a key with the label's values).
    ///
    /// ### Estimator characteristics
    /// | | |
    /// | -- | -- |
    /// | Machine learning task | Multiclass classification (training and compaction in one estimator) |
    /// | Is normalization required? | No (per-channel standardization is learned from the data by default) |
    /// | Is caching required? | No (the data is read once into memory) |
    /// | Required NuGet in addition to Microsoft.ML | Microsoft.ML.Pruning |
    /// | Exportable to ONNX | No |
    ///
    /// ### Method
    /// Every 3×3 convolution after the stem of VggSmall or ResNet20 becomes a k×k convolution with kernel `W ⊙ P`, where
    /// `P = softmax(T · A / std(A))` over the k² taps of each channel pair, `A` are learned logits and the inverse
    /// temperature `T` is multiplied by a constant after every optimizer step, from `InitialTemperature` to
    /// `FinalTemperature` at the last step. The loss is plain cross-entropy: the growing `T` alone makes `P` one-hot.
    /// After training each distribution is hardened (arg-max by default), optionally fine-tuned with the shifts frozen,
    /// and the network is compacted: each such layer becomes `y[o] = Σ_i w[o,i] · shift_{s(o,i)}(x[i])` with batch norm
    /// folded in, which computes what the hardened network computes with 1/k² of its weights and multiply-accumulates.
    /// Each epoch's log line carries the temperature and the attention's mean max-probability.
    /// ]]></format>
    /// </remarks>
    public sealed class ShiftAttentionTrainer : IEstimator<ImageClassificationTransformer>
    {
        /// <summary>Options of <see cref="ShiftAttentionTrainer"/>; the field initializers are the defaults.</summary>
        public sealed class Options
        {
            /// <summary>
            /// Columns, network, epochs, optimizer, schedule, augmentation, device and callbacks, exactly as for the image
            /// classifier. <see cref="ImageClassifierTrainer.Options.Architecture"/> must be VggSmall or ResNet20 and
            /// <see cref="ImageClassifierTrainer.Options.Convolution"/> left at its default (<see cref="LayerKind"/> decides);
            /// <see cref="ImageClassifierTrainer.Options.Width"/> widens or narrows the network as it does for the classifier.
            /// Default: the image classifier's defaults with <see cref="ImageClassifierArchitecture.VggSmall"/>.
            /// </summary>
            public ImageClassifierTrainer.Options Training = new() { Architecture = ImageClassifierArchitecture.VggSmall };

            /// <summary>
            /// <see cref="ConvolutionKind.ShiftAttention"/> (one attention distribution per channel pair) or
            /// <see cref="ConvolutionKind.ShiftAttentionShared"/> (one per input channel). Default: ShiftAttention.
            /// </summary>
            public ConvolutionKind LayerKind = ConvolutionKind.ShiftAttention;

            /// <summary>The k of the k×k neighbourhood the shifts range over: odd, from 1 to 15. Default: 3.</summary>
            public int KernelSize = 3;

            /// <summary>
            /// The inverse temperature at the first step. Default: 20, the reference code's CIFAR value; with the logits
            /// divided by their deviation the attention is already sharp at 20 (the ImageNet code starts at 0.15 for a soft
            /// start).
            /// </summary>
            public double InitialTemperature = 20;

            /// <summary>The inverse temperature at the last step, at least <see cref="InitialTemperature"/>. Default: 70
            /// (the reference code's CIFAR value; its ImageNet value is 60).</summary>
            public double FinalTemperature = 70;

            /// <summary>How each distribution becomes one shift. Default: <see cref="AttentionHardening.ArgMax"/>, exactly one
            /// shift per pair as the paper states (the reference code rounds, which can drop a connection).</summary>
            public AttentionHardening Hardening = AttentionHardening.ArgMax;

            /// <summary>Epochs of fine-tuning after hardening, with the shifts frozen; 0 skips it. They are reported through
            /// <see cref="ImageClassifierTrainer.Options.EpochCompleted"/> like training's, numbered from 1. Default: 0.</summary>
            public int FineTuneEpochs;

            /// <summary>The fine-tuning learning rate (same optimizer and schedule as training). Default: null, a tenth of
            /// <see cref="ImageClassifierTrainer.Options.LearningRate"/>.</summary>
            public double? FineTuneLearningRate;

            /// <summary>Fold each batch norm that directly follows a convolution or shift layer into that layer. Default: true.</summary>
            public bool FoldBatchNorm = true;

            /// <summary>Called after every training epoch with the temperature and the attention's one-hotness. Default: null.</summary>
            public Action<ShiftAttentionEpochMetrics>? AttentionEpochCompleted;

            /// <summary>Called once the compact network exists, with the summaries (parameters and multiply-accumulates per
            /// layer) of the trained network and of the compact one. Default: null.</summary>
            public Action<ModelSummary, ModelSummary>? Compacted;

            internal void Validate()
            {
                if (Training is null)
                    throw new ArgumentNullException(nameof(Training), "Options.Training must hold the training options.");
                if (Training.Convolution != ConvolutionKind.Convolution)
                {
                    throw new ArgumentException(
                        $"Options.Training.Convolution must stay Convolution; Options.LayerKind chooses the layers. Got {Training.Convolution}.", "Training.Convolution");
                }
                Training.Validate();
                if (Training.Architecture is not (ImageClassifierArchitecture.VggSmall or ImageClassifierArchitecture.ResNet20))
                {
                    throw new ArgumentOutOfRangeException("Training.Architecture", Training.Architecture,
                        $"Options.Training.Architecture must be VggSmall or ResNet20, whose 3x3 convolutions become shift attention layers; got {Training.Architecture}.");
                }
                if (!Enum.IsDefined(LayerKind))
                    throw new ArgumentOutOfRangeException(nameof(LayerKind), LayerKind, $"Options.LayerKind {LayerKind} is not a known layer kind; use ShiftAttention or ShiftAttentionShared.");
                if (LayerKind is not (ConvolutionKind.ShiftAttention or ConvolutionKind.ShiftAttentionShared))
                {
                    throw new ArgumentOutOfRangeException(nameof(LayerKind), LayerKind,
                        $"Options.LayerKind must be ShiftAttention or ShiftAttentionShared; got {LayerKind} (train it with mlContext.MulticlassClassification.Trainers.ImageClassifier).");
                }
                Require(KernelSize >= 1 && KernelSize % 2 == 1 && KernelSize <= ShiftLayerShapes.MaxKernelSize, nameof(KernelSize), KernelSize,
                    $"must be odd, from 1 to {ShiftLayerShapes.MaxKernelSize}");
                Require(double.IsFinite(InitialTemperature) && InitialTemperature > 0, nameof(InitialTemperature), InitialTemperature, "must be a positive number");
                Require(double.IsFinite(FinalTemperature) && FinalTemperature >= InitialTemperature, nameof(FinalTemperature), FinalTemperature,
                    FormattableString.Invariant($"must be a number at least Options.InitialTemperature ({InitialTemperature})"));
                if (!Enum.IsDefined(Hardening))
                    throw new ArgumentOutOfRangeException(nameof(Hardening), Hardening, "Unknown hardening.");
                Require(FineTuneEpochs >= 0, nameof(FineTuneEpochs), FineTuneEpochs, "must be zero or positive");
                if (FineTuneLearningRate is double rate)
                    Require(double.IsFinite(rate) && rate > 0, nameof(FineTuneLearningRate), rate, "must be a positive number");
            }

            private static void Require(bool condition, string option, object value, string rule)
            {
                if (!condition)
                    throw new ArgumentOutOfRangeException(option, value, string.Create(CultureInfo.InvariantCulture, $"Options.{option} {rule}; got {value}."));
            }
        }

        private readonly IHostEnvironment _env;
        private readonly IHost _host;
        private readonly Options _options;

        internal ShiftAttentionTrainer(IHostEnvironment env, Options options)
        {
            ArgumentNullException.ThrowIfNull(env);
            ArgumentNullException.ThrowIfNull(options);
            options.Validate();
            _env = env;
            _host = env.Register(nameof(ShiftAttentionTrainer));
            _options = options;
        }

        /// <summary>Trains the shift attention network on <paramref name="input"/>, hardens and compacts it, and returns the
        /// transformer that scores with the compact network.</summary>
        /// <exception cref="ArgumentException">A column is missing or has the wrong type.</exception>
        /// <exception cref="InvalidOperationException">The data is empty, or a row has a NaN pixel or a missing label.</exception>
        public ImageClassificationTransformer Fit(IDataView input)
        {
            ArgumentNullException.ThrowIfNull(input);
            ImageClassifierTrainer.Options training = _options.Training;
            using IChannel channel = _host.Start("Training shift attention network");
            using ImageClassifierTrainer.PreparedData data = ImageClassifierTrainer.PreparedData.Load(_env, training, input);
            ImageDataset train = data.Train;
            ImageDataset? validation = data.Validation;
            NetworkDefinition definition = Architectures.Create(training.Architecture, data.Shape, data.Classes, data.Normalization, _options.LayerKind,
                _options.KernelSize, training.Width);
            channel.Info(MessageSensitivity.None, FormattableString.Invariant(
                $"Training {definition.Architecture}{ImageClassifierTrainer.DescribeWidth(training.Width)} with {_options.LayerKind} {_options.KernelSize}x{_options.KernelSize} layers on {train.Count} images of {data.Shape}, {data.Classes} classes, {training.Epochs} epochs, temperature {_options.InitialTemperature} to {_options.FinalTemperature}, seed {data.Seed}."));

            ClassifierNetwork? network = ClassifierNetwork.Create(definition, data.Device);
            ClassifierNetwork? hardened = null, compact = null;
            try
            {
                List<ShiftAttentionConv2dModule> modules = ShiftAttentionCompaction.AttentionModules(network).Select(m => m.Module).ToList();
                ShiftAttentionCompaction.SetTemperature(modules, _options.InitialTemperature);
                TrainingLoop.Run(network, train, validation, training.ToSettings(), data.Seed, channel, new TrainingHooks
                {
                    EpochCompleted = training.EpochCompleted,
                    AfterStep = (step, totalSteps) => ShiftAttentionCompaction.SetTemperature(modules,
                        TemperatureSchedule.At(_options.InitialTemperature, _options.FinalTemperature, step, totalSteps)),
                    DescribeEpoch = metrics => DescribeAttention(metrics, modules),
                }, training.CancellationToken);
                ModelSummary trainedSummary = ModelSummary.Create(network);

                hardened = ShiftAttentionCompaction.Harden(network, _options.Hardening);
                (double, double)? accuracy = validation is null ? null : (TrainingLoop.Accuracy(network, validation), TrainingLoop.Accuracy(hardened, validation));
                channel.Info(MessageSensitivity.None, DescribeHardening(hardened, accuracy));
                network.Dispose();
                network = null;

                if (_options.FineTuneEpochs > 0)
                {
                    TrainingSettings fineTune = training.ToSettings() with
                    {
                        Epochs = _options.FineTuneEpochs,
                        LearningRate = _options.FineTuneLearningRate ?? training.LearningRate / 10,
                    };
                    TrainingLoop.Run(hardened, train, validation, fineTune, data.Seed + 1L, channel, new TrainingHooks
                    {
                        Phase = "fine-tuning with the shifts frozen,",
                        EpochCompleted = training.EpochCompleted,
                    }, training.CancellationToken);
                }

                compact = ShiftAttentionCompaction.Compact(hardened, _options.FoldBatchNorm);
                hardened.Dispose();
                hardened = null;
                ModelSummary compactSummary = ModelSummary.Create(compact);
                channel.Info(MessageSensitivity.None, "Trained network:" + Environment.NewLine + trainedSummary);
                channel.Info(MessageSensitivity.None, "Compact network:" + Environment.NewLine + compactSummary);
                _options.Compacted?.Invoke(trainedSummary, compactSummary);

                var transformer = new ImageClassificationTransformer(_env, compact, training.FeatureColumnName, training.ScoreColumnName,
                    training.PredictedLabelColumnName, data.Label);
                compact = null;
                return transformer;
            }
            finally
            {
                network?.Dispose();
                hardened?.Dispose();
                compact?.Dispose();
            }
        }

        /// <inheritdoc/>
        public SchemaShape GetOutputSchema(SchemaShape inputSchema)
            => MLNetInternals.MulticlassOutputSchema(inputSchema, _options.Training.FeatureColumnName, _options.Training.LabelColumnName,
                _options.Training.ScoreColumnName, _options.Training.PredictedLabelColumnName);

        private string DescribeAttention(TrainingEpochMetrics metrics, IReadOnlyList<ShiftAttentionConv2dModule> modules)
        {
            var attention = new ShiftAttentionEpochMetrics(metrics.Epoch, metrics.Epochs, modules.Count == 0 ? _options.FinalTemperature : modules[0].Temperature,
                ShiftAttentionCompaction.MeanMaxProbability(modules));
            _options.AttentionEpochCompleted?.Invoke(attention);
            return FormattableString.Invariant($"temperature {attention.Temperature:G4}, attention mean max-probability {attention.MeanMaxProbability:F4}");
        }

        private string DescribeHardening(ClassifierNetwork hardened, (double Soft, double Hard)? accuracy)
        {
            long pairs = 0, kept = 0;
            using (torch.NewDisposeScope())
            using (torch.no_grad())
            {
                foreach (var (_, module) in ShiftAttentionCompaction.AttentionModules(hardened))
                {
                    torch.Tensor mask = module.Attention();
                    pairs += mask.numel() / (module.KernelSize * module.KernelSize);
                    kept += (long)Math.Round(mask.sum().item<float>());
                }
            }
            string text = FormattableString.Invariant($"Hardened the attention ({_options.Hardening}): {kept} of {pairs} distributions keep one shift");
            if (accuracy is (double soft, double hard))
                text += FormattableString.Invariant($"; validation accuracy {soft:P2} soft, {hard:P2} hardened");
            return text + ".";
        }
    }
}
