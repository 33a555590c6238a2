// Licensed under the MIT license.

using System;
using System.Diagnostics;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners.Common;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Pruning.Pruners
{
    /// <summary>
    /// The shape every pruner shares: an estimator made from a trained model whose <c>Fit</c> takes calibration (and
    /// retraining) data and returns the pruned model.
    /// </summary>
    /// <remarks>
    /// <format type="text/markdown"><![CDATA[
    /// The trained model is the one <xref:Microsoft.ML.Pruning.MLNet.ImageClassificationTransformer> alone or the
    /// transformer chain that contains it, fresh from `Fit` or loaded with `mlContext.Model.Load`. Pass `Fit` the same
    /// raw data the model was trained on: it runs through the chain's transformers in front of the classifier first.
    /// `Fit` returns a model of the same shape — a new chain with the classifier replaced, or the new classifier — and
    /// leaves the trained model untouched.
    ///
    /// `Fit` runs the method's masks, then compaction, then the retraining the options ask for. Pruned weights are exactly
    /// zero; the saved model stores only the non-zero ones (plus a bitmask), so the model file shrinks with the kept
    /// fraction, and the compact runtime computes only the kept weights (compressed sparse kernels), so scoring gets
    /// faster where enough weights are gone. Removed channels leave the network altogether: the result is a smaller
    /// network definition, which every runtime runs faster.
    /// ]]></format>
    /// </remarks>
    public abstract class PruningEstimatorBase : IEstimator<ITransformer>
    {
        private readonly IHostEnvironment _env;
        private readonly IHost _host;
        private readonly ClassifierInModel _model;
        private readonly PruningOptions _options;
        private readonly string _method;

        private protected PruningEstimatorBase(IHostEnvironment env, ITransformer trainedModel, PruningOptions options, string method)
        {
            ArgumentNullException.ThrowIfNull(env);
            ArgumentNullException.ThrowIfNull(options);
            options.Validate();
            _env = env;
            _host = env.Register(GetType().Name);
            _model = ClassifierInModel.Find(trainedModel, nameof(trainedModel));
            _options = options;
            _method = method;
            options.ValidateFor(_model.Classifier.Network.Definition);
        }

        /// <summary>Prunes a copy of the trained model's network on <paramref name="input"/> and returns the pruned model.</summary>
        /// <param name="input">Calibration data in the form the trained model takes; with retraining, labelled training data.</param>
        /// <exception cref="ArgumentException">A column is missing or has the wrong type.</exception>
        /// <exception cref="InvalidOperationException">The data is empty, or a row has a non-finite pixel or an unknown label.</exception>
        public ITransformer Fit(IDataView input)
        {
            ArgumentNullException.ThrowIfNull(input);
            ImageClassificationTransformer classifier = _model.Classifier;
            IDataView data = _model.TransformBefore(input);
            ImageShape shape = classifier.Network.Definition.Input;
            int classes = classifier.Network.Definition.Classes;
            CheckFeatures(data.Schema, classifier.FeatureColumnName, shape);
            string? labelColumnName = NeedsLabels ? CheckLabel(data.Schema, _options.LabelColumnName ?? classifier.LabelColumn.Name, classes, LabelUse) : null;

            using IChannel channel = _host.Start($"Pruning ({_method})");
            int seed = MLNetInternals.GetSeed(_env) ?? Environment.TickCount;
            using ImageDataset dataset = ImageDataset.Load(data, classifier.FeatureColumnName, labelColumnName, shape, classes,
                "calibration data", _options.CancellationToken, classifier.ClassNames);

            var context = new PruningContext(classifier.Network.Clone(), dataset, _options, seed, channel, RetrainingPhase);
            try
            {
                var clock = Stopwatch.StartNew();
                using (PruningMask mask = Prune(context))
                {
                    // Masks, then compaction (removed channels leave the network), then retraining of what is left.
                    mask.Apply(context.Network);
                    context.Compact(mask);
                    TimeSpan pruningTime = clock.Elapsed - context.RetrainingTime;
                    if (_options.Retrains)
                        context.Retrain(mask);
                    context.Network.Module.eval();
                    var report = new PruningReport(_method, context.Results, pruningTime, context.CalibrationImages, context.RetrainingSteps, context.RetrainingTime)
                    {
                        ChannelGroups = context.ChannelResults.Count == 0 ? null : context.ChannelResults.ToArray(),
                        CalibrationTime = context.CalibrationTime,
                        CalibrationImagesPerSecond = context.CalibrationImagesPerSecond,
                    };
                    channel.Info(MessageSensitivity.None, report.ToString());
                    _options.PruningCompleted?.Invoke(report);
                }
                var pruned = new ImageClassificationTransformer(_env, context.Network, classifier.FeatureColumnName, classifier.ScoreColumnName,
                    classifier.PredictedLabelColumnName, classifier.LabelColumn);
                return _model.WithClassifier(pruned);
            }
            catch
            {
                context.Network.Dispose();
                throw;
            }
        }

        /// <summary>The output schema of the pruned model: the trained model's, for input of <paramref name="inputSchema"/>.</summary>
        public SchemaShape GetOutputSchema(SchemaShape inputSchema)
        {
            ArgumentNullException.ThrowIfNull(inputSchema);
            return MLNetInternals.OutputShapeOf(inputSchema, _model.Flattened, _model.Classifier, _model.Classifier.FeatureColumnName);
        }

        /// <summary>What the log lines call the retraining after pruning.</summary>
        private protected virtual string RetrainingPhase => "retraining";

        /// <summary>Whether <c>Fit</c> reads labels (for retraining).</summary>
        private protected virtual bool NeedsLabels => _options.Retrains;

        /// <summary>What the labels are read for, as the error for a missing label column says it (e.g. <c>Retraining</c>).</summary>
        private protected virtual string LabelUse => "Retraining";

        /// <summary>Prunes <see cref="PruningContext.Network"/>, fills the context's results, and returns the masks (weights to
        /// zero and channels to remove; <c>Fit</c> applies them and compacts the network).</summary>
        private protected abstract PruningMask Prune(PruningContext context);

        private static void CheckFeatures(DataViewSchema schema, string featureColumnName, ImageShape shape)
        {
            if (schema.GetColumnOrNull(featureColumnName) is not DataViewSchema.Column column)
                throw new ArgumentException($"The calibration data has no feature column '{featureColumnName}' (after the model's transforms in front of the classifier).");
            if (column.Type is not VectorDataViewType { ItemType: var item, Size: var size } || item != NumberDataViewType.Single || size != shape.Size)
                throw new ArgumentException($"Feature column '{featureColumnName}' of the calibration data must be a vector of {shape.Size} Single values ({shape} images); found {column.Type}.");
        }

        private static string CheckLabel(DataViewSchema schema, string labelColumnName, int classes, string use)
        {
            if (schema.GetColumnOrNull(labelColumnName) is not DataViewSchema.Column label)
                throw new ArgumentException($"{use} needs labels, but the calibration data has no label column '{labelColumnName}' (set Options.{nameof(PruningOptions.LabelColumnName)}).");
            if (label.Type is KeyDataViewType key && key.Count != (ulong)classes)
                throw new ArgumentException($"Label column '{labelColumnName}' is a key of {key.Count} values; the model has {classes} classes.");
            return labelColumnName;
        }
    }
}
