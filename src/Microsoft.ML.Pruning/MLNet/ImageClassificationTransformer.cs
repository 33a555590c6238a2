// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Data.IO;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

[assembly: LoadableClass(typeof(ImageClassificationTransformer), null, typeof(SignatureLoadModel),
    ImageClassificationTransformer.UserName, ImageClassificationTransformer.LoaderSignature)]

[assembly: LoadableClass(typeof(IRowMapper), typeof(ImageClassificationTransformer), null, typeof(SignatureLoadRowMapper),
    ImageClassificationTransformer.UserName, ImageClassificationTransformer.LoaderSignature)]

namespace Microsoft.ML.Pruning.MLNet
{
    /// <summary>
    /// Scores images with a TorchSharp classifier — dense, pruned or compact. Produced by
    /// <see cref="Training.ImageClassifierTrainer"/> and by the pruners; saved inside the ML.NET model zip
    /// (network definition and weights) and loaded back as this type by <c>mlContext.Model.Load</c>.
    /// </summary>
    /// <remarks>
    /// Output columns: <c>Score</c>, a vector of class probabilities with the class names as slot names, and
    /// <c>PredictedLabel</c>, a key with the training label's values, so <c>Evaluate</c>, <c>PredictionEngine</c>
    /// and <c>MapKeyToValue</c> work on it as on any ML.NET multiclass model.
    /// </remarks>
    public sealed class ImageClassificationTransformer : RowToRowTransformerBase, ITransformer, IDisposable
    {
        internal const string LoaderSignature = "PruneImageClassifier";
        internal const string UserName = "Pruning Image Classifier";
        private const string DefinitionStreamName = "Network.json";
        private const string WeightsStreamName = "Weights.bin";

        private readonly DataViewSchema.DetachedColumn _labelColumn;
        private bool _disposed;

        internal ImageClassificationTransformer(IHostEnvironment env, ClassifierNetwork network, string featureColumnName,
            string scoreColumnName, string predictedLabelColumnName, DataViewSchema.DetachedColumn labelColumn)
            : base(Contracts.CheckRef(env, nameof(env)).Register(nameof(ImageClassificationTransformer)))
        {
            Network = network;
            FeatureColumnName = featureColumnName;
            ScoreColumnName = scoreColumnName;
            PredictedLabelColumnName = predictedLabelColumnName;
            _labelColumn = labelColumn;
            if (labelColumn.Annotations.Schema.GetColumnOrNull(AnnotationUtils.Kinds.KeyValues) is not DataViewSchema.Column keyValues
                || keyValues.Type is not VectorDataViewType { Size: var size }
                || size != network.Definition.Classes)
            {
                throw new ArgumentException(
                    $"The label column '{labelColumn.Name}' must carry {network.Definition.Classes} key values (its class names).", nameof(labelColumn));
            }
            ClassNames = ReadClassNames(labelColumn);
        }

        /// <summary>The network that scores (owned by this transformer).</summary>
        public ClassifierNetwork Network { get; }

        /// <summary>The input column: images as <c>Vector&lt;Single, C, H, W&gt;</c> or a flat vector of C·H·W values.</summary>
        public string FeatureColumnName { get; }

        /// <summary>The output column of class probabilities.</summary>
        public string ScoreColumnName { get; }

        /// <summary>The output column of the predicted class key.</summary>
        public string PredictedLabelColumnName { get; }

        /// <summary>The class names, in key order.</summary>
        public IReadOnlyList<string> ClassNames { get; }

        /// <summary>The training label column, whose key values this model predicts.</summary>
        internal DataViewSchema.DetachedColumn LabelColumn => _labelColumn;

        /// <summary>Parameters, non-zero parameters and multiply-accumulates per layer and in total.</summary>
        public ModelSummary GetSummary() => ModelSummary.Create(Network);

        /// <summary>
        /// Scores <paramref name="input"/>: adds the <c>PredictedLabel</c> and <c>Score</c> columns. Cursors over the result
        /// score the images in blocks of 256 (a shuffled cursor, one at a time); a <c>PredictionEngine</c> scores one image
        /// per call.
        /// </summary>
        /// <exception cref="ArgumentException">The input has no suitable feature column.</exception>
        public new IDataView Transform(IDataView input)
        {
            ArgumentNullException.ThrowIfNull(input);
            return new BlockScoringDataView(this, input, base.Transform(input));
        }

        IDataView ITransformer.Transform(IDataView input) => Transform(input);

        /// <summary>Copies one row's image into <paramref name="destination"/>, checking its length and values.</summary>
        /// <exception cref="InvalidOperationException">The row has another number of values than the model's images, or a
        /// non-finite value.</exception>
        internal static void CopyImage(in VBuffer<float> image, Span<float> destination, long position, ImageClassificationTransformer owner)
        {
            if (image.Length != destination.Length)
            {
                throw new InvalidOperationException(
                    $"Row {position}: feature column '{owner.FeatureColumnName}' has {image.Length} values; the model expects {destination.Length} ({owner.Network.Definition.Input} images).");
            }
            image.CopyTo(destination);
            foreach (float value in destination)
            {
                if (!float.IsFinite(value))
                    throw new InvalidOperationException($"Row {position}: feature column '{owner.FeatureColumnName}' has a non-finite value ({value}).");
            }
        }

        /// <summary>The index of the largest score (the first of equal ones).</summary>
        internal static int ArgMax(ReadOnlySpan<float> scores)
        {
            int best = 0;
            for (int i = 1; i < scores.Length; i++)
            {
                if (scores[i] > scores[best])
                    best = i;
            }
            return best;
        }

        /// <inheritdoc/>
        public void Dispose()
        {
            if (_disposed)
                return;
            _disposed = true;
            Network.Dispose();
        }

        private static VersionInfo GetVersionInfo() => new VersionInfo(
            modelSignature: "PRUNEICL",
            verWrittenCur: 0x00010001, // initial
            verReadableCur: 0x00010001,
            verWeCanReadBack: 0x00010001,
            loaderSignature: LoaderSignature,
            loaderAssemblyName: typeof(ImageClassificationTransformer).Assembly.FullName);

        /// <inheritdoc/>
        protected override void SaveModel(ModelSaveContext ctx)
        {
            Host.CheckValue(ctx, nameof(ctx));
            ctx.CheckAtModel();
            ctx.SetVersionInfo(GetVersionInfo());

            // *** Binary format ***
            // int: id of feature column name
            // int: id of score column name
            // int: id of predicted label column name
            // int: id of label column name
            // label key values: type and value (BinarySaver)
            // stream Network.json: the NetworkDefinition as UTF-8 JSON
            // stream Weights.bin: the weights (TensorStore format)
            ctx.SaveNonEmptyString(FeatureColumnName);
            ctx.SaveNonEmptyString(ScoreColumnName);
            ctx.SaveNonEmptyString(PredictedLabelColumnName);
            ctx.SaveNonEmptyString(_labelColumn.Name);
            var keyValuesType = (VectorDataViewType)_labelColumn.Annotations.Schema[AnnotationUtils.Kinds.KeyValues].Type;
            InvokeGeneric<object?>(SaveKeyValues<int>, keyValuesType.ItemType.RawType, ctx);
            ctx.SaveBinaryStream(DefinitionStreamName, writer => writer.Write(Encoding.UTF8.GetBytes(Network.Definition.ToJson())));
            ctx.SaveBinaryStream(WeightsStreamName, writer => Network.SaveWeights(writer));
        }

        private object? SaveKeyValues<T>(ModelSaveContext ctx)
        {
            var column = _labelColumn.Annotations.Schema[AnnotationUtils.Kinds.KeyValues];
            VBuffer<T> values = default;
            _labelColumn.Annotations.GetValue(AnnotationUtils.Kinds.KeyValues, ref values);
            var saver = new BinarySaver(Host, new BinarySaver.Arguments());
            if (!saver.TryWriteTypeAndValue(ctx.Writer.BaseStream, (VectorDataViewType)column.Type, ref values, out _))
                throw Host.Except($"Label values of type {column.Type} cannot be saved.");
            return null;
        }

        /// <summary>Calls the generic method behind <paramref name="method"/> with its type argument replaced by <paramref name="type"/>.</summary>
        private static TResult InvokeGeneric<TResult>(Delegate method, Type type, object argument)
        {
            var generic = method.Method.GetGenericMethodDefinition().MakeGenericMethod(type);
            try
            {
                return (TResult)generic.Invoke(method.Target, new[] { argument })!;
            }
            catch (System.Reflection.TargetInvocationException ex) when (ex.InnerException is not null)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(ex.InnerException).Throw();
                throw;
            }
        }

        // Factory method for SignatureLoadModel.
        private static ImageClassificationTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
        {
            Contracts.CheckValue(env, nameof(env));
            env.CheckValue(ctx, nameof(ctx));
            ctx.CheckAtModel(GetVersionInfo());

            // *** Binary format ***
            // int: id of feature column name
            // int: id of score column name
            // int: id of predicted label column name
            // int: id of label column name
            // label key values: type and value (BinarySaver)
            // stream Network.json: the NetworkDefinition as UTF-8 JSON
            // stream Weights.bin: the weights (TensorStore format)
            string featureColumnName = ctx.LoadNonEmptyString();
            string scoreColumnName = ctx.LoadNonEmptyString();
            string predictedLabelColumnName = ctx.LoadNonEmptyString();
            string labelColumnName = ctx.LoadNonEmptyString();

            var saver = new BinarySaver(env, new BinarySaver.Arguments());
            if (!saver.TryLoadTypeAndValue(ctx.Reader.BaseStream, out DataViewType type, out object value)
                || type is not VectorDataViewType keyValuesType || value is null)
            {
                throw new FormatException("The image classifier's label values are missing or damaged in the model file.");
            }
            var annotations = new DataViewSchema.Annotations.Builder();
            annotations.Add(AnnotationUtils.Kinds.KeyValues, keyValuesType,
                InvokeGeneric<Delegate>(ValueGetterOf<int>, keyValuesType.ItemType.RawType, value));
            var labelColumn = new DataViewSchema.DetachedColumn(labelColumnName,
                new KeyDataViewType(typeof(uint), keyValuesType.Size), annotations.ToAnnotations());

            string? json = null;
            if (!ctx.TryLoadBinaryStream(DefinitionStreamName, reader => json = Encoding.UTF8.GetString(ReadToEnd(reader.BaseStream))) || json is null)
                throw new FormatException($"The model file lacks the image classifier's '{DefinitionStreamName}' entry.");
            NetworkDefinition definition = NetworkDefinition.FromJson(json);
            if (definition.Classes != keyValuesType.Size)
                throw new FormatException($"The stored network has {definition.Classes} outputs but the label has {keyValuesType.Size} values.");

            ClassifierNetwork network = ClassifierNetwork.Create(definition);
            try
            {
                if (!ctx.TryLoadBinaryStream(WeightsStreamName, reader => network.LoadWeights(reader)))
                    throw new FormatException($"The model file lacks the image classifier's '{WeightsStreamName}' entry.");
                network.Module.eval();
                return new ImageClassificationTransformer(env, network, featureColumnName, scoreColumnName, predictedLabelColumnName, labelColumn);
            }
            catch
            {
                network.Dispose();
                throw;
            }
        }

        // Factory method for SignatureLoadRowMapper.
        private static IRowMapper Create(IHostEnvironment env, ModelLoadContext ctx, DataViewSchema inputSchema)
            => Create(env, ctx).MakeRowMapper(inputSchema);

        private static Delegate ValueGetterOf<T>(object value)
        {
            var values = (VBuffer<T>)value;
            ValueGetter<VBuffer<T>> getter = (ref VBuffer<T> destination) => values.CopyTo(ref destination);
            return getter;
        }

        private static byte[] ReadToEnd(Stream stream)
        {
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            return memory.ToArray();
        }

        private static IReadOnlyList<string> ReadClassNames(DataViewSchema.DetachedColumn labelColumn)
        {
            var type = (VectorDataViewType)labelColumn.Annotations.Schema[AnnotationUtils.Kinds.KeyValues].Type;
            return InvokeGeneric<IReadOnlyList<string>>(ClassNamesOf<int>, type.ItemType.RawType, labelColumn);
        }

        private static IReadOnlyList<string> ClassNamesOf<T>(DataViewSchema.DetachedColumn labelColumn)
        {
            VBuffer<T> values = default;
            labelColumn.Annotations.GetValue(AnnotationUtils.Kinds.KeyValues, ref values);
            return values.DenseValues().Select(v => v?.ToString() ?? "").ToArray();
        }

        /// <inheritdoc/>
        protected override IRowMapper MakeRowMapper(DataViewSchema schema) => new Mapper(this, schema);

        /// <summary>Scores one row per forward pass (a <c>PredictionEngine</c>, a shuffled cursor); the two output getters
        /// of a row share that pass.</summary>
        private sealed class Mapper : MapperBase
        {
            private readonly ImageClassificationTransformer _owner;
            private readonly int _featureColumnIndex;
            private readonly int _inputSize;

            public Mapper(ImageClassificationTransformer parent, DataViewSchema inputSchema)
                : base(parent.Host.Register(nameof(Mapper)), inputSchema, parent)
            {
                _owner = parent;
                ImageShape shape = parent.Network.Definition.Input;
                _inputSize = shape.Size;
                if (inputSchema.GetColumnOrNull(parent.FeatureColumnName) is not DataViewSchema.Column column)
                    throw new ArgumentException($"The input data has no feature column '{parent.FeatureColumnName}'.", nameof(inputSchema));
                // A variable-size vector (a float[] without [VectorType] in a PredictionEngine input class) is checked per row.
                if (column.Type is not VectorDataViewType { ItemType: var item, Size: var size } || item != NumberDataViewType.Single || (size != _inputSize && size != 0))
                {
                    throw new ArgumentException(
                        $"Feature column '{parent.FeatureColumnName}' must be a vector of {_inputSize} Single values ({shape} images); found {column.Type}.",
                        nameof(inputSchema));
                }
                _featureColumnIndex = column.Index;
            }

            protected override DataViewSchema.DetachedColumn[] GetOutputColumnsCore()
            {
                int classes = _owner.Network.Definition.Classes;
                DataViewSchema.DetachedColumn label = _owner._labelColumn;
                var keyValues = label.Annotations.Schema[AnnotationUtils.Kinds.KeyValues];
                Delegate keyValuesGetter = InvokeGeneric<Delegate>(KeyValuesGetter<int>, keyValues.Type.GetItemType().RawType, label);
                var slotNamesType = new VectorDataViewType(TextDataViewType.Instance, classes);
                string[] names = _owner.ClassNames.ToArray();
                ValueGetter<VBuffer<ReadOnlyMemory<char>>> slotNames = (ref VBuffer<ReadOnlyMemory<char>> destination)
                    => destination = new VBuffer<ReadOnlyMemory<char>>(names.Length, names.Select(n => n.AsMemory()).ToArray());

                uint setId = checked(InputSchema.GetMaxAnnotationKind(out _, AnnotationUtils.Kinds.ScoreColumnSetId) + 1);
                var score = new DataViewSchema.Annotations.Builder();
                score.Add(AnnotationUtils.Kinds.ScoreColumnKind, TextDataViewType.Instance,
                    (ref ReadOnlyMemory<char> value) => value = AnnotationUtils.Const.ScoreColumnKind.MulticlassClassification.AsMemory());
                score.Add(AnnotationUtils.Kinds.ScoreColumnSetId, AnnotationUtils.ScoreColumnSetIdType, (ref uint value) => value = setId);
                score.Add(AnnotationUtils.Kinds.ScoreValueKind, TextDataViewType.Instance,
                    (ref ReadOnlyMemory<char> value) => value = AnnotationUtils.Const.ScoreValueKind.Score.AsMemory());
                score.Add(AnnotationUtils.Kinds.TrainingLabelValues, keyValues.Type, keyValuesGetter);
                score.Add(AnnotationUtils.Kinds.SlotNames, slotNamesType, slotNames);

                var predicted = new DataViewSchema.Annotations.Builder();
                predicted.Add(AnnotationUtils.Kinds.KeyValues, keyValues.Type, keyValuesGetter);

                return new[]
                {
                    new DataViewSchema.DetachedColumn(_owner.PredictedLabelColumnName, new KeyDataViewType(typeof(uint), classes), predicted.ToAnnotations()),
                    new DataViewSchema.DetachedColumn(_owner.ScoreColumnName, new VectorDataViewType(NumberDataViewType.Single, classes), score.ToAnnotations()),
                };
            }

            private static Delegate KeyValuesGetter<T>(DataViewSchema.DetachedColumn label)
            {
                ValueGetter<VBuffer<T>> getter = (ref VBuffer<T> destination) => label.Annotations.GetValue(AnnotationUtils.Kinds.KeyValues, ref destination);
                return getter;
            }

            protected override Delegate MakeGetter(DataViewRow input, int iinfo, Func<int, bool> activeOutput, out Action disposer)
                => throw new InvalidOperationException("Getters are created together by CreateGetters.");

            public override Delegate[] CreateGetters(DataViewRow input, Func<int, bool> activeOutput, out Action disposer)
            {
                var getters = new Delegate[2];
                disposer = () => { };
                if (!activeOutput(0) && !activeOutput(1))
                    return getters;
                var cache = new RowCache(input.GetGetter<VBuffer<float>>(input.Schema[_featureColumnIndex]), _owner, _inputSize);
                if (activeOutput(0))
                {
                    ValueGetter<uint> predicted = (ref uint value) =>
                    {
                        cache.Scores(input.Position, out int best);
                        value = (uint)best + 1;
                    };
                    getters[0] = predicted;
                }
                if (activeOutput(1))
                {
                    ValueGetter<VBuffer<float>> score = (ref VBuffer<float> value) =>
                    {
                        float[] scores = cache.Scores(input.Position, out _);
                        var editor = VBufferEditor.Create(ref value, scores.Length);
                        scores.AsSpan().CopyTo(editor.Values);
                        value = editor.Commit();
                    };
                    getters[1] = score;
                }
                return getters;
            }

            protected override Func<int, bool> GetDependenciesCore(Func<int, bool> activeOutput)
                => column => column == _featureColumnIndex && (activeOutput(0) || activeOutput(1));

            protected override void SaveModel(ModelSaveContext ctx) => _owner.SaveModel(ctx);
        }

        /// <summary>The scores of the current row, computed once per row position.</summary>
        private sealed class RowCache
        {
            private readonly ValueGetter<VBuffer<float>> _features;
            private readonly ImageClassificationTransformer _owner;
            private readonly float[] _input;
            private VBuffer<float> _buffer;
            private long _position = -1;
            private float[] _scores = Array.Empty<float>();
            private int _best;

            public RowCache(ValueGetter<VBuffer<float>> features, ImageClassificationTransformer parent, int inputSize)
            {
                _features = features;
                _owner = parent;
                _input = new float[inputSize];
            }

            public float[] Scores(long position, out int best)
            {
                if (position != _position)
                {
                    _features(ref _buffer);
                    CopyImage(_buffer, _input, position, _owner);
                    if (_scores.Length == 0)
                        _scores = new float[_owner.Network.Definition.Classes];
                    _owner.Network.Predict(_input, _scores);
                    _best = ArgMax(_scores);
                    _position = position;
                }
                best = _best;
                return _scores;
            }
        }
    }
}
