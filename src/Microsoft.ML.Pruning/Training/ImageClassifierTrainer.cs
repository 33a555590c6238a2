// Licensed under the MIT license.

using System;
using System.Threading;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Runtime;
using TorchSharp;

namespace Microsoft.ML.Pruning.Training
{
    /// <summary>
    /// The <see cref="IEstimator{TTransformer}"/> that trains a TorchSharp convolutional image classifier inside an
    /// ML.NET pipeline.
    /// </summary>
    /// <remarks>
    /// <format type="text/markdown"><![CDATA[
    /// Create it with `mlContext.MulticlassClassification.Trainers.ImageClassifier(...)`.
    ///
    /// ### Input and output columns
    /// The label column must be a [key](xref:Microsoft.ML.Data.KeyDataViewType) (use `MapValueToKey`); the feature
    /// column a `Vector<Single, C, H, W>` as produced by ImageAnalytics' `ExtractPixels` or by `LoadFromIdx`.
    ///
    /// | Output column | Type | Description |
    /// | -- | -- | -- |
    /// | `Score` | Vector of `Single` | Class probabilities; slot names are the class names. |
    /// | `PredictedLabel` | key | The most probable class, with the label's key values. |
    ///
    /// ### Trainer characteristics
    /// | | |
    /// | -- | -- |
    /// | Machine learning task | Multiclass classification |
    /// | Is normalization required? | No (per-channel standardization is learned from the data by default) |
    /// | Is caching required? | No (the data is read once into memory) |
    /// | Required NuGet in addition to Microsoft.ML | Microsoft.ML.Pruning (brings TorchSharp and the CPU libtorch of the build platform) |
    /// | Exportable to ONNX | No |
    ///
    /// ### Training
    /// Mini-batch SGD (momentum, Nesterov) or Adam with weight decay, a constant, step or cosine learning-rate
    /// schedule, reshuffling every epoch, optional random-crop and horizontal-flip augmentation. Training is
    /// deterministic for an `MLContext` created with a seed. Progress of each epoch (loss, accuracy, images/s) goes
    /// to `mlContext.Log` and to <see cref="Options.EpochCompleted"/>.
    /// ]]></format>
    /// </remarks>
    public sealed class ImageClassifierTrainer : IEstimator<ImageClassificationTransformer>
    {
        /// <summary>Options of <see cref="ImageClassifierTrainer"/>; the field initializers are the defaults.</summary>
        public sealed class Options
        {
            /// <summary>The label column, a key type. Default: <c>Label</c>.</summary>
            public string LabelColumnName = DefaultColumnNames.Label;

            /// <summary>The image column, <c>Vector&lt;Single, C, H, W&gt;</c>. Default: <c>Features</c>.</summary>
            public string FeatureColumnName = DefaultColumnNames.Features;

            /// <summary>The output column of class probabilities. Default: <c>Score</c>.</summary>
            public string ScoreColumnName = DefaultColumnNames.Score;

            /// <summary>The output column of the predicted key. Default: <c>PredictedLabel</c>.</summary>
            public string PredictedLabelColumnName = DefaultColumnNames.PredictedLabel;

            /// <summary>The network to train. Default: <see cref="ImageClassifierArchitecture.LeNet5"/>.</summary>
            public ImageClassifierArchitecture Architecture = ImageClassifierArchitecture.LeNet5;

            /// <summary>
            /// What the 3×3 convolutions after the stem of <see cref="ImageClassifierArchitecture.VggSmall"/> and
            /// <see cref="ImageClassifierArchitecture.ResNet20"/> are made of: <see cref="ConvolutionKind.Convolution"/> or the
            /// fixed <see cref="ConvolutionKind.Shift"/> layers. Shift attention layers are trained by
            /// <c>mlContext.Transforms.PruneAttention</c>, which schedules their temperature and hardens them.
            /// Default: <see cref="ConvolutionKind.Convolution"/>.
            /// </summary>
            public ConvolutionKind Convolution = ConvolutionKind.Convolution;

            /// <summary>
            /// A multiplier on the channel counts of <see cref="ImageClassifierArchitecture.VggSmall"/> and
            /// <see cref="ImageClassifierArchitecture.ResNet20"/>, to compare networks at equal size: every convolution of
            /// <c>c</c> channels gets <c>Math.Max(1, (int)Math.Round(c * Width))</c> (nearest integer, ties to even); the
            /// small VGG's fully connected hidden layer keeps its 256 units. The LeNets have a fixed shape and take only 1.
            /// A finite number greater than 0. The saved model stores the resulting channel counts. Default: 1.
            /// </summary>
            public double Width = 1.0;

            /// <summary>
            /// The image shape, needed only when the feature column is a flat vector without dimensions.
            /// Default: null (read from the column type).
            /// </summary>
            public ImageShape? ImageShape;

            /// <summary>Passes over the training data. Default: 10.</summary>
            public int Epochs = 10;

            /// <summary>Images per optimizer step. Default: 128.</summary>
            public int BatchSize = 128;

            /// <summary>The optimizer. Default: <see cref="OptimizerKind.Sgd"/>.</summary>
            public OptimizerKind Optimizer = OptimizerKind.Sgd;

            /// <summary>The initial learning rate. Default: 0.05 (for SGD; about 1e-3 suits Adam).</summary>
            public double LearningRate = 0.05;

            /// <summary>SGD momentum, in [0, 1). Default: 0.9.</summary>
            public double Momentum = 0.9;

            /// <summary>Nesterov momentum for SGD. Default: true.</summary>
            public bool Nesterov = true;

            /// <summary>L2 weight decay. Default: 5e-4.</summary>
            public double WeightDecay = 5e-4;

            /// <summary>The learning-rate schedule. Default: <see cref="Training.LearningRateSchedule.Cosine"/>.</summary>
            public LearningRateSchedule LearningRateSchedule = LearningRateSchedule.Cosine;

            /// <summary>For the step schedule: epochs between decays. Default: 10.</summary>
            public int StepEpochs = 10;

            /// <summary>For the step schedule: the factor applied at each decay, in (0, 1]. Default: 0.1.</summary>
            public double StepFactor = 0.1;

            /// <summary>Random-crop augmentation: zero padding in pixels before cropping back to size; 0 disables. Default: 0.</summary>
            public int RandomCropPadding;

            /// <summary>Flip half the training images horizontally. Default: false.</summary>
            public bool HorizontalFlip;

            /// <summary>
            /// Sparsity training for network slimming (Liu et al., ICCV 2017): adds <c>λ·Σ|γ|</c> over the scales γ of every
            /// batch-norm layer to the loss (as the subgradient <c>λ·sign(γ)</c> after the backward pass), so that unimportant
            /// channels get scales near zero and <c>mlContext.Transforms.PruneChannels</c> with
            /// <c>ChannelCriterion.BatchNormScale</c> removes them. Zero or positive; the paper uses 1e-4 for VGG and 1e-5 for
            /// ResNets. Needs an architecture with batch norm (VggSmall, ResNet20). Default: 0 (off).
            /// </summary>
            public double BatchNormScaleL1;

            /// <summary>Standardize each channel with the training data's mean and deviation (stored in the model). Default: true.</summary>
            public bool NormalizeInput = true;

            /// <summary>Data whose accuracy is measured after every epoch. Default: null.</summary>
            public IDataView? ValidationSet;

            /// <summary>Where to train and score. Default: <see cref="ComputeDevice.Cpu"/>.</summary>
            public ComputeDevice Device = ComputeDevice.Cpu;

            /// <summary>Threads for torch's intra-op parallelism; null keeps torch's default (the core count). Default: null.</summary>
            public int? NumberOfThreads;

            /// <summary>Called after every epoch with its metrics (e.g. to drive a progress bar). Default: null.</summary>
            public Action<TrainingEpochMetrics>? EpochCompleted;

            /// <summary>Cancels training between steps with an <see cref="OperationCanceledException"/>. Default: none.</summary>
            public CancellationToken CancellationToken;

            internal void Validate()
            {
                RequireName(LabelColumnName, nameof(LabelColumnName));
                RequireName(FeatureColumnName, nameof(FeatureColumnName));
                RequireName(ScoreColumnName, nameof(ScoreColumnName));
                RequireName(PredictedLabelColumnName, nameof(PredictedLabelColumnName));
                if (!Enum.IsDefined(Architecture))
                    throw new ArgumentOutOfRangeException(nameof(Architecture), Architecture, "Unknown architecture.");
                if (!Enum.IsDefined(Convolution))
                    throw new ArgumentOutOfRangeException(nameof(Convolution), Convolution, "Unknown convolution kind.");
                if (Convolution is ConvolutionKind.ShiftAttention or ConvolutionKind.ShiftAttentionShared)
                {
                    throw new ArgumentOutOfRangeException(nameof(Convolution), Convolution,
                        $"Options.Convolution {Convolution} needs a temperature schedule and hardening: train it with mlContext.Transforms.PruneAttention.");
                }
                if (Convolution != ConvolutionKind.Convolution && Architecture is not (ImageClassifierArchitecture.VggSmall or ImageClassifierArchitecture.ResNet20))
                    throw new ArgumentOutOfRangeException(nameof(Convolution), Convolution, $"Options.Convolution {Convolution} needs VggSmall or ResNet20; {Architecture} has no 3x3 convolutions.");
                Require(double.IsFinite(Width) && Width > 0, nameof(Width), Width, "must be a finite number greater than 0");
                if (Width != 1 && Architecture is not (ImageClassifierArchitecture.VggSmall or ImageClassifierArchitecture.ResNet20))
                {
                    throw new ArgumentOutOfRangeException(nameof(Width), Width,
                        FormattableString.Invariant($"Options.Width {Width} needs VggSmall or ResNet20; {Architecture} has a fixed shape (Width must stay 1)."));
                }
                ImageShape?.Validate();
                Require(Epochs >= 1, nameof(Epochs), Epochs, "must be at least 1");
                Require(BatchSize >= 1, nameof(BatchSize), BatchSize, "must be at least 1");
                if (!Enum.IsDefined(Optimizer))
                    throw new ArgumentOutOfRangeException(nameof(Optimizer), Optimizer, "Unknown optimizer.");
                Require(double.IsFinite(LearningRate) && LearningRate > 0, nameof(LearningRate), LearningRate, "must be a positive number");
                Require(Momentum >= 0 && Momentum < 1, nameof(Momentum), Momentum, "must be in [0, 1)");
                Require(double.IsFinite(WeightDecay) && WeightDecay >= 0, nameof(WeightDecay), WeightDecay, "must be zero or positive");
                if (!Enum.IsDefined(LearningRateSchedule))
                    throw new ArgumentOutOfRangeException(nameof(LearningRateSchedule), LearningRateSchedule, "Unknown learning-rate schedule.");
                Require(StepEpochs >= 1, nameof(StepEpochs), StepEpochs, "must be at least 1");
                Require(StepFactor > 0 && StepFactor <= 1, nameof(StepFactor), StepFactor, "must be in (0, 1]");
                Require(double.IsFinite(BatchNormScaleL1) && BatchNormScaleL1 >= 0, nameof(BatchNormScaleL1), BatchNormScaleL1, "must be zero or positive");
                if (BatchNormScaleL1 > 0 && Architecture is not (ImageClassifierArchitecture.VggSmall or ImageClassifierArchitecture.ResNet20))
                {
                    throw new ArgumentOutOfRangeException(nameof(BatchNormScaleL1), BatchNormScaleL1,
                        FormattableString.Invariant($"Options.BatchNormScaleL1 {BatchNormScaleL1} needs a network with batch norm (VggSmall or ResNet20); {Architecture} has none."));
                }
                Require(RandomCropPadding >= 0, nameof(RandomCropPadding), RandomCropPadding, "must be zero or positive");
                if (!Enum.IsDefined(Device))
                    throw new ArgumentOutOfRangeException(nameof(Device), Device, "Unknown device.");
                if (NumberOfThreads is int threads)
                    Require(threads >= 1, nameof(NumberOfThreads), threads, "must be at least 1");
            }

            internal TrainingSettings ToSettings() => new()
            {
                Epochs = Epochs,
                BatchSize = BatchSize,
                Optimizer = Optimizer,
                LearningRate = LearningRate,
                Momentum = Momentum,
                Nesterov = Nesterov,
                WeightDecay = WeightDecay,
                Schedule = LearningRateSchedule,
                StepEpochs = StepEpochs,
                StepFactor = StepFactor,
                RandomCropPadding = RandomCropPadding,
                HorizontalFlip = HorizontalFlip,
            };

            private static void RequireName(string? name, string option)
            {
                if (string.IsNullOrWhiteSpace(name))
                    throw new ArgumentException($"Options.{option} must name a column.", option);
            }

            private static void Require(bool condition, string option, object value, string rule)
            {
                if (!condition)
                    throw new ArgumentOutOfRangeException(option, value, FormattableString.Invariant($"Options.{option} {rule}; got {value}."));
            }
        }

        private readonly IHostEnvironment _env;
        private readonly IHost _host;
        private readonly Options _options;

        internal ImageClassifierTrainer(IHostEnvironment env, Options options)
        {
            ArgumentNullException.ThrowIfNull(env);
            ArgumentNullException.ThrowIfNull(options);
            options.Validate();
            _env = env;
            _host = env.Register(nameof(ImageClassifierTrainer));
            _options = options;
        }

        /// <summary>Trains the network on <paramref name="input"/> and returns the transformer that scores with it.</summary>
        /// <exception cref="ArgumentException">A column is missing or has the wrong type.</exception>
        /// <exception cref="InvalidOperationException">The data is empty, or a row has a NaN pixel or a missing label.</exception>
        public ImageClassificationTransformer Fit(IDataView input)
        {
            ArgumentNullException.ThrowIfNull(input);
            using IChannel channel = _host.Start("Training image classifier");
            using PreparedData data = PreparedData.Load(_env, _options, input);
            NetworkDefinition definition = Architectures.Create(_options.Architecture, data.Shape, data.Classes, data.Normalization, _options.Convolution,
                width: _options.Width);
            channel.Info(MessageSensitivity.None, FormattableString.Invariant(
                $"Training {definition.Architecture}{DescribeWidth(_options.Width)} on {data.Train.Count} images of {data.Shape}, {data.Classes} classes, {_options.Epochs} epochs, seed {data.Seed}."));

            ClassifierNetwork network = ClassifierNetwork.Create(definition, data.Device);
            try
            {
                TrainingLoop.Run(network, data.Train, data.Validation, _options.ToSettings(), data.Seed, channel, Hooks(network), _options.CancellationToken);
                return new ImageClassificationTransformer(_env, network, _options.FeatureColumnName, _options.ScoreColumnName,
                    _options.PredictedLabelColumnName, data.Label);
            }
            catch
            {
                network.Dispose();
                throw;
            }
        }

        /// <summary>The epoch callback and, when asked for, the batch-norm scale penalty.</summary>
        private TrainingHooks Hooks(ClassifierNetwork network)
        {
            var hooks = new TrainingHooks { EpochCompleted = _options.EpochCompleted };
            return _options.BatchNormScaleL1 > 0 ? hooks with { AfterBackward = BatchNormScalePenalty.Create(network, _options.BatchNormScaleL1) } : hooks;
        }

        /// <inheritdoc/>
        public SchemaShape GetOutputSchema(SchemaShape inputSchema)
            => MLNetInternals.MulticlassOutputSchema(inputSchema, _options.FeatureColumnName, _options.LabelColumnName,
                _options.ScoreColumnName, _options.PredictedLabelColumnName);

        /// <summary>" at width 1.5" for the log line of a widened network, empty at width 1.</summary>
        internal static string DescribeWidth(double width) => width == 1 ? "" : FormattableString.Invariant($" at width {width}");

        /// <summary>
        /// What every trainer of this library does before its first step: checks the columns of the training data and the
        /// validation set, resolves the device, seeds libtorch from the MLContext, reads the images into tensors and
        /// measures the input normalization.
        /// </summary>
        internal sealed class PreparedData : IDisposable
        {
            private PreparedData(ImageDataset train, ImageDataset? validation, ImageShape shape, int classes, DataViewSchema.DetachedColumn label,
                int seed, torch.Device device, NormalizeLayer? normalization)
            {
                Train = train;
                Validation = validation;
                Shape = shape;
                Classes = classes;
                Label = label;
                Seed = seed;
                Device = device;
                Normalization = normalization;
            }

            public ImageDataset Train { get; }

            public ImageDataset? Validation { get; }

            public ImageShape Shape { get; }

            public int Classes { get; }

            /// <summary>The training label column, whose key values the model predicts.</summary>
            public DataViewSchema.DetachedColumn Label { get; }

            /// <summary>The MLContext's seed (or a random one), already given to libtorch.</summary>
            public int Seed { get; }

            public torch.Device Device { get; }

            /// <summary>The per-channel standardization measured on the training images, or null when not asked for.</summary>
            public NormalizeLayer? Normalization { get; }

            public static PreparedData Load(IHostEnvironment env, Options options, IDataView input)
            {
                (ImageShape shape, int classes, DataViewSchema.DetachedColumn label) = CheckInput(options, input.Schema, "training data");
                if (options.ValidationSet is IDataView validationData)
                {
                    ImageShape validationShape;
                    int validationClasses;
                    try
                    {
                        (validationShape, validationClasses, _) = CheckInput(options, validationData.Schema, "validation set");
                    }
                    catch (ArgumentException ex)
                    {
                        throw new ArgumentException(ex.Message + " " + ValidationSetHint, nameof(options), ex);
                    }
                    if (validationShape != shape || validationClasses != classes)
                    {
                        throw new ArgumentException(
                            $"The validation set has {validationShape} images and {validationClasses} classes; the training data has {shape} and {classes}. {ValidationSetHint}",
                            nameof(options));
                    }
                }
                Native.TorchSharpNativeLibrary.EnsureLoaded();

                torch.Device device = TorchDevices.Resolve(options.Device);
                if (options.NumberOfThreads is int threads)
                    torch.set_num_threads(threads);
                int seed = MLNetInternals.GetSeed(env) ?? Environment.TickCount;
                torch.random.manual_seed(seed);

                ImageDataset train = ImageDataset.Load(input, options.FeatureColumnName, options.LabelColumnName, shape, classes,
                    "training data", options.CancellationToken);
                try
                {
                    ImageDataset? validation = options.ValidationSet is null ? null : ImageDataset.Load(options.ValidationSet,
                        options.FeatureColumnName, options.LabelColumnName, shape, classes, "validation set", options.CancellationToken);
                    NormalizeLayer? normalization = null;
                    if (options.NormalizeInput)
                    {
                        var (mean, std) = train.ChannelStatistics();
                        normalization = new NormalizeLayer { Name = "normalize", Mean = mean, Std = std };
                    }
                    return new PreparedData(train, validation, shape, classes, label, seed, device, normalization);
                }
                catch
                {
                    train.Dispose();
                    throw;
                }
            }

            public void Dispose()
            {
                Train.Dispose();
                Validation?.Dispose();
            }
        }

        /// <summary>How to prepare a validation set, appended to the messages about one that does not fit.</summary>
        internal const string ValidationSetHint =
            "Options.ValidationSet is read as it is, not through the pipeline: transform it with the same steps that come before " +
            "the trainer (e.g. var prepare = mlContext.Transforms.Conversion.MapValueToKey(\"Label\").Append(...).Fit(train); " +
            "options.ValidationSet = prepare.Transform(validation)), so that it has the training data's label key and image column.";

        /// <summary>The image shape, class count and label column of <paramref name="schema"/>; throws naming what is wrong.</summary>
        internal static (ImageShape Shape, int Classes, DataViewSchema.DetachedColumn Label) CheckInput(Options options, DataViewSchema schema, string dataName)
        {
            if (schema.GetColumnOrNull(options.FeatureColumnName) is not DataViewSchema.Column features)
                throw new ArgumentException($"The {dataName} has no feature column '{options.FeatureColumnName}'.");
            if (schema.GetColumnOrNull(options.LabelColumnName) is not DataViewSchema.Column label)
                throw new ArgumentException($"The {dataName} has no label column '{options.LabelColumnName}'.");
            if (label.Type is not KeyDataViewType key || key.RawType != typeof(uint))
            {
                throw new ArgumentException(
                    $"Label column '{label.Name}' must be a key type (UInt32); found {label.Type}. Map it first with mlContext.Transforms.Conversion.MapValueToKey(\"{label.Name}\").");
            }
            if (key.Count < 2 || key.Count > int.MaxValue)
                throw new ArgumentException($"Label column '{label.Name}' has {key.Count} classes; a classifier needs at least 2.");
            ImageShape shape = ImageDataset.ShapeOf(features, options.ImageShape);
            int classes = (int)key.Count;
            return (shape, classes, MLNetInternals.DetachLabelColumn(label, classes));
        }
    }
}
