// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Security.Cryptography;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Data.IO;
using Microsoft.ML.Model.OnnxConverter;
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
    /// and <c>MapKeyToValue</c> work on it as on any ML.NET multiclass model. <c>mlContext.Model.ConvertToOnnx</c> (package
    /// Microsoft.ML.OnnxConverter) exports it, alone or in a pipeline, as standard ONNX operators, opset 11 or later
    /// (<see cref="OnnxExport"/>, <see cref="Onnx.OnnxNetworkTranslator"/>).
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
            // verWrittenCur: 0x00010001, // initial
            verWrittenCur: 0x00010002, // label values in the library's format; lengths and SHA-256 of every entry
            verReadableCur: 0x00010002,
            verWeCanReadBack: 0x00010001,
            loaderSignature: LoaderSignature,
            loaderAssemblyName: typeof(ImageClassificationTransformer).Assembly.FullName);

        private const uint VersionSealed = 0x00010002;
        private const string ModelStreamName = "Model.key";

        /// <inheritdoc/>
        protected override void SaveModel(ModelSaveContext ctx)
        {
            Host.CheckValue(ctx, nameof(ctx));
            ctx.CheckAtModel();
            ctx.SetVersionInfo(GetVersionInfo());

            // *** Binary format (0x00010002) ***
            // int: id of feature column name
            // int: id of score column name
            // int: id of predicted label column name
            // int: id of label column name
            // int: byte length L of the label values (at most ModelFileLimits.MaxLabelBytes)
            // L bytes: the label values (ModelFileLimits.WriteLabelValues: item kind, count, values)
            // long: byte length of Network.json (at most DefinitionLimits.MaxJsonBytes); 32 bytes: its SHA-256
            // long: byte length of Weights.bin; 32 bytes: its SHA-256
            // 32 bytes: SHA-256 of the four column names, the label values and the four fields above (ModelFileLimits.Seal)
            // stream Network.json: the NetworkDefinition as UTF-8 JSON
            // stream Weights.bin: the weights (TensorStore format), their names, types and shapes those Network.json implies
            //
            // Version 0x00010001 (still read): the four ids, then the label values as ML.NET's BinarySaver type and value;
            // no lengths or checksums.
            try
            {
                // What the loader refuses is not written.
                DefinitionLimits.Check(Network.Definition);
            }
            catch (InvalidOperationException ex)
            {
                throw new InvalidOperationException($"The network cannot be saved: {ex.Message}", ex);
            }
            byte[] json = Encoding.UTF8.GetBytes(Network.Definition.ToJson());
            if (json.Length > DefinitionLimits.MaxJsonBytes)
                throw Host.Except($"The network definition takes {json.Length} bytes; model files hold at most {DefinitionLimits.MaxJsonBytes}.");
            byte[] weights;
            using (var memory = new MemoryStream())
            {
                using (var writer = new BinaryWriter(memory, Encoding.UTF8, leaveOpen: true))
                    Network.SaveWeights(writer);
                weights = memory.ToArray();
            }
            var keyValuesType = (VectorDataViewType)_labelColumn.Annotations.Schema[AnnotationUtils.Kinds.KeyValues].Type;
            byte[] labels = InvokeGeneric<byte[]>(LabelValuesBytes<int>, keyValuesType.ItemType.RawType, keyValuesType);

            string[] names = { FeatureColumnName, ScoreColumnName, PredictedLabelColumnName, _labelColumn.Name };
            foreach (string name in names)
                ctx.SaveNonEmptyString(name);
            var sealedPart = new ModelFileLimits.SealedFields(labels, json.Length, SHA256.HashData(json), weights.Length, SHA256.HashData(weights));
            sealedPart.Write(ctx.Writer);
            ctx.Writer.Write(sealedPart.Seal(names));
            ctx.SaveBinaryStream(DefinitionStreamName, writer => writer.Write(json));
            ctx.SaveBinaryStream(WeightsStreamName, writer => writer.Write(weights));
        }

        private byte[] LabelValuesBytes<T>(VectorDataViewType type)
        {
            VBuffer<T> values = default;
            _labelColumn.Annotations.GetValue(AnnotationUtils.Kinds.KeyValues, ref values);
            return ModelFileLimits.WriteLabelValues(values.DenseValues().ToArray(), type);
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
            // Loading a model is often an application's first libtorch call: a shim that cannot load says why here.
            Native.TorchSharpNativeLibrary.EnsureLoaded();
            string folder = string.IsNullOrEmpty(ctx.Directory) ? "" : ctx.Directory.Replace('\\', '/') + "/";
            string modelEntry = folder + ModelStreamName, jsonEntry = folder + DefinitionStreamName, weightsEntry = folder + WeightsStreamName;
            try
            {
                return ctx.Header.ModelVerWritten >= VersionSealed
                    ? LoadSealed(env, ctx, modelEntry, jsonEntry, weightsEntry)
                    : LoadInitial(env, ctx, modelEntry, jsonEntry, weightsEntry);
            }
            catch (ModelFileException)
            {
                throw;
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // Whatever escaped the checks below still names the classifier's folder and what failed.
                throw new ModelFileException($"The image classifier in '{folder}' cannot be loaded: {ex.GetType().Name}: {ex.Message}", ex);
            }
        }

        /// <summary>Loads the current format: every field bounded, every entry's length and SHA-256 checked before it is parsed.</summary>
        private static ImageClassificationTransformer LoadSealed(IHostEnvironment env, ModelLoadContext ctx, string modelEntry, string jsonEntry, string weightsEntry)
        {
            // *** Binary format (0x00010002) ***
            // int: id of feature column name
            // int: id of score column name
            // int: id of predicted label column name
            // int: id of label column name
            // int: byte length L of the label values (at most ModelFileLimits.MaxLabelBytes)
            // L bytes: the label values (ModelFileLimits.WriteLabelValues: item kind, count, values)
            // long: byte length of Network.json (at most DefinitionLimits.MaxJsonBytes); 32 bytes: its SHA-256
            // long: byte length of Weights.bin; 32 bytes: its SHA-256
            // 32 bytes: SHA-256 of the four column names, the label values and the four fields above (ModelFileLimits.Seal)
            // stream Network.json: the NetworkDefinition as UTF-8 JSON
            // stream Weights.bin: the weights (TensorStore format), their names, types and shapes those Network.json implies
            //
            // Version 0x00010001 (still read, by LoadInitial): the four ids, then the label values as ML.NET's BinarySaver
            // type and value; no lengths or checksums.
            string[] names = new string[4];
            string[] fields = { "feature column name", "score column name", "predicted label column name", "label column name" };
            for (int i = 0; i < names.Length; i++)
            {
                try
                {
                    names[i] = ctx.LoadNonEmptyString();
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    throw new ModelFileException($"{modelEntry}: field '{fields[i]}' is damaged ({ex.Message}).", ex);
                }
            }
            ModelFileLimits.SealedFields sealedPart = ModelFileLimits.SealedFields.Read(ctx.Reader, modelEntry);
            byte[] seal = ModelFileLimits.ReadBytes(ctx.Reader, 32, modelEntry, "seal");
            if (!seal.AsSpan().SequenceEqual(sealedPart.Seal(names)))
                throw new ModelFileException($"{modelEntry}: field 'seal' (SHA-256 of the column names, label values and entry checksums) does not match: the file is damaged.");

            var (keyValuesType, value) = ModelFileLimits.ReadLabelValues(sealedPart.LabelValues, modelEntry);
            DataViewSchema.DetachedColumn labelColumn = DetachedLabel(names[3], keyValuesType, value);

            byte[] json = ReadEntry(ctx, DefinitionStreamName, jsonEntry, DefinitionLimits.MaxJsonBytes, sealedPart.JsonLength, sealedPart.JsonSha256);
            NetworkDefinition definition = ParseDefinition(json, jsonEntry, keyValuesType.Size, modelEntry);
            long maxWeights = ModelFileLimits.MaxWeightsBytes(definition);
            byte[] weights = ReadEntry(ctx, WeightsStreamName, weightsEntry, maxWeights, sealedPart.WeightsLength, sealedPart.WeightsSha256);
            using var reader = new BinaryReader(new MemoryStream(weights, writable: false));
            return Build(env, definition, reader, weightsEntry, names, labelColumn);
        }

        /// <summary>Loads version 0x00010001 files: the label values, which that version wrote with ML.NET's BinarySaver, read
        /// by the library's own strict reader of that layout (ML.NET's codecs spin or allocate without bound on hostile
        /// headers); the entries bounded in size, but without checksums.</summary>
        private static ImageClassificationTransformer LoadInitial(IHostEnvironment env, ModelLoadContext ctx, string modelEntry, string jsonEntry, string weightsEntry)
        {
            // *** Binary format (0x00010001) ***
            // int: id of feature column name
            // int: id of score column name
            // int: id of predicted label column name
            // int: id of label column name
            // label key values: type and value (BinarySaver)
            // stream Network.json: the NetworkDefinition as UTF-8 JSON
            // stream Weights.bin: the weights (TensorStore format)
            string[] names = new string[4];
            for (int i = 0; i < names.Length; i++)
                names[i] = ctx.LoadNonEmptyString();
            long end = ctx.FpMin + ctx.Header.FpModel + ctx.Header.CbModel;
            long left = end - ctx.Reader.BaseStream.Position;
            if (left <= 0 || left > ModelFileLimits.MaxLabelBytes)
                throw new ModelFileException($"{modelEntry}: field 'label values' has {left} bytes; it must have 1 to {ModelFileLimits.MaxLabelBytes}.");
            byte[] block = ModelFileLimits.ReadBytes(ctx.Reader, (int)left, modelEntry, "label values");
            var (keyValuesType, value) = ModelFileLimits.ReadBinarySaverLabelValues(block, modelEntry);
            DataViewSchema.DetachedColumn labelColumn = DetachedLabel(names[3], keyValuesType, value);
            byte[] json = ReadEntry(ctx, DefinitionStreamName, jsonEntry, DefinitionLimits.MaxJsonBytes, null, null);
            NetworkDefinition definition = ParseDefinition(json, jsonEntry, keyValuesType.Size, modelEntry);
            byte[] weights = ReadEntry(ctx, WeightsStreamName, weightsEntry, ModelFileLimits.MaxWeightsBytes(definition), null, null);
            using var reader = new BinaryReader(new MemoryStream(weights, writable: false));
            return Build(env, definition, reader, weightsEntry, names, labelColumn);
        }

        private static DataViewSchema.DetachedColumn DetachedLabel(string name, VectorDataViewType keyValuesType, object value)
        {
            var annotations = new DataViewSchema.Annotations.Builder();
            annotations.Add(AnnotationUtils.Kinds.KeyValues, keyValuesType,
                InvokeGeneric<Delegate>(ValueGetterOf<int>, keyValuesType.ItemType.RawType, value));
            return new DataViewSchema.DetachedColumn(name, new KeyDataViewType(typeof(uint), keyValuesType.Size), annotations.ToAnnotations());
        }

        /// <summary>The bytes of one entry of the classifier's folder: its length checked against <paramref name="max"/> before
        /// it is extracted and read, then against the length and SHA-256 stored in the model stream (when given).</summary>
        private static byte[] ReadEntry(ModelLoadContext ctx, string name, string entry, long max, long? length, byte[]? sha256)
        {
            if (length is long declared && (declared < 0 || declared > max))
                throw new ModelFileException($"{entry}: its stored length is {declared} bytes; at most {max} are allowed.");
            long? zipped = MLNetInternals.DeclaredEntryLength(ctx, name);
            if (zipped is null)
                throw new ModelFileException($"The model file lacks the image classifier's '{entry}' entry.");
            if (zipped > max)
                throw new ModelFileException($"{entry}: the zip declares {zipped} bytes; at most {max} are allowed.");
            byte[]? bytes = null;
            bool found;
            try
            {
                found = ctx.TryLoadBinaryStream(name, reader =>
                {
                    Stream stream = reader.BaseStream;
                    if (stream.Length > max)
                        throw new ModelFileException($"{entry}: it holds {stream.Length} bytes; at most {max} are allowed.");
                    bytes = ModelFileLimits.ReadBytes(reader, (int)stream.Length, entry, "content");
                });
            }
            catch (Exception ex) when (ex is InvalidDataException or IOException or NotSupportedException)
            {
                throw new ModelFileException($"{entry}: it cannot be extracted from the zip ({ex.Message}).", ex);
            }
            if (!found || bytes is null)
                throw new ModelFileException($"The model file lacks the image classifier's '{entry}' entry.");
            if (length is long expected && bytes.Length != expected)
                throw new ModelFileException($"{entry}: it holds {bytes.Length} bytes, but Model.key records {expected}: the file is damaged.");
            if (sha256 is not null && !SHA256.HashData(bytes).AsSpan().SequenceEqual(sha256))
                throw new ModelFileException($"{entry}: its SHA-256 does not match the one Model.key records: the file is damaged.");
            return bytes;
        }

        private static NetworkDefinition ParseDefinition(byte[] json, string entry, int labelCount, string modelEntry)
        {
            string text;
            try
            {
                text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(json);
            }
            catch (ArgumentException ex)
            {
                throw new ModelFileException($"{entry}: not valid UTF-8.", ex);
            }
            NetworkDefinition definition;
            try
            {
                definition = NetworkDefinition.FromJson(text);
            }
            catch (FormatException ex)
            {
                throw new ModelFileException($"{entry}: {ex.Message}", ex);
            }
            if (definition.Classes != labelCount)
                throw new ModelFileException($"{entry}: field 'Classes' is {definition.Classes}, but the label values in {modelEntry} number {labelCount}.");
            return definition;
        }

        private static ImageClassificationTransformer Build(IHostEnvironment env, NetworkDefinition definition, BinaryReader weights, string weightsEntry,
            string[] names, DataViewSchema.DetachedColumn labelColumn)
        {
            // Every tensor is checked against the definition before anything is allocated for it, and before the network exists.
            Dictionary<string, Tensor> stored;
            try
            {
                stored = ClassifierNetwork.ReadWeights(weights, definition);
            }
            catch (FormatException ex)
            {
                throw new ModelFileException($"{weightsEntry}: {ex.Message}", ex);
            }
            ClassifierNetwork? network = null;
            try
            {
                network = ClassifierNetwork.Create(definition);
                network.LoadWeights(stored);
                network.Module.eval();
                return new ImageClassificationTransformer(env, network, names[0], names[1], names[2], labelColumn);
            }
            catch
            {
                network?.Dispose();
                throw;
            }
            finally
            {
                foreach (Tensor t in stored.Values)
                    t.Dispose();
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
        /// of a row share that pass. Exports itself to ONNX (<see cref="OnnxExport"/>).</summary>
        private sealed class Mapper : MapperBase, ISaveAsOnnx
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

            /// <summary>Always true: a network that cannot be translated makes <see cref="SaveAsOnnx"/> throw, naming the layer,
            /// instead of leaving ML.NET to export the pipeline without the classifier.</summary>
            public bool CanSaveOnnx(OnnxContext ctx) => true;

            public void SaveAsOnnx(OnnxContext ctx) => OnnxExport.SaveAsOnnx(_owner, GetOutputColumnsCore(), ctx);
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

namespace Microsoft.ML.Pruning.MLNet
{
    /// <summary>A damaged or hostile model file: the message names the entry of the zip and the field that does not fit.</summary>
    internal sealed class ModelFileException : FormatException
    {
        public ModelFileException(string message) : base(message)
        {
        }

        public ModelFileException(string message, Exception inner) : base(message, inner)
        {
        }
    }

    /// <summary>The parts of the classifier's <c>Model.key</c> that the library reads itself, with their bounds.</summary>
    internal static class ModelFileLimits
    {
        /// <summary>The largest label values block (bytes).</summary>
        public const int MaxLabelBytes = 16 << 20;

        /// <summary>The longest class name (UTF-8 bytes).</summary>
        public const int MaxLabelTextBytes = 1 << 16;

        // *** Label values format ***
        // byte: item kind (0 = text, 1 = Single, 2 = Double, 3 = SByte, 4 = Byte, 5 = Int16, 6 = UInt16, 7 = Int32,
        //       8 = UInt32, 9 = Int64, 10 = UInt64, 11 = Boolean)
        // int: count (2 to DefinitionLimits.MaxActivation)
        // per value: text: int byte length (0 to MaxLabelTextBytes), then UTF-8; numbers: little-endian; Boolean: byte 0 or 1
        // Nothing follows the last value.
        private const byte Text = 0;

        private static readonly Type[] s_kinds =
        {
            typeof(ReadOnlyMemory<char>), typeof(float), typeof(double), typeof(sbyte), typeof(byte), typeof(short), typeof(ushort),
            typeof(int), typeof(uint), typeof(long), typeof(ulong), typeof(bool),
        };

        private static readonly DataViewType[] s_types =
        {
            TextDataViewType.Instance, NumberDataViewType.Single, NumberDataViewType.Double, NumberDataViewType.SByte, NumberDataViewType.Byte,
            NumberDataViewType.Int16, NumberDataViewType.UInt16, NumberDataViewType.Int32, NumberDataViewType.UInt32, NumberDataViewType.Int64,
            NumberDataViewType.UInt64, BooleanDataViewType.Instance,
        };

        private static readonly int[] s_sizes = { 4, 4, 8, 1, 1, 2, 2, 4, 4, 8, 8, 1 };

        /// <summary>The largest <c>Weights.bin</c> a network of <paramref name="definition"/> can have: every tensor with the
        /// longest name and its larger encoding.</summary>
        public static long MaxWeightsBytes(NetworkDefinition definition)
        {
            long total = 12;
            foreach (var t in DefinitionLimits.ExpectedTensors(definition))
                total += 5 + 1024 + 1 + 4 + 8L * t.Shape.Length + 1 + t.Elements * (t.Element == TensorElement.Int64 ? 8 : 4) + (t.Elements + 7) / 8;
            return total;
        }

        /// <summary>Reads exactly <paramref name="count"/> bytes, checking first that the stream (when seekable) holds them.</summary>
        public static byte[] ReadBytes(BinaryReader reader, int count, string entry, string field)
        {
            Stream stream = reader.BaseStream;
            if (count < 0 || (stream.CanSeek && count > stream.Length - stream.Position))
                throw new ModelFileException($"{entry}: field '{field}' declares {count} bytes, more than the entry holds.");
            byte[] bytes = reader.ReadBytes(count);
            if (bytes.Length != count)
                throw new ModelFileException($"{entry}: field '{field}' is cut short ({bytes.Length} of {count} bytes).");
            return bytes;
        }

        /// <summary>The label values, the lengths and SHA-256 of the two other entries, and their seal.</summary>
        public sealed record SealedFields(byte[] LabelValues, long JsonLength, byte[] JsonSha256, long WeightsLength, byte[] WeightsSha256)
        {
            public void Write(BinaryWriter writer)
            {
                writer.Write(LabelValues.Length);
                writer.Write(LabelValues);
                writer.Write(JsonLength);
                writer.Write(JsonSha256);
                writer.Write(WeightsLength);
                writer.Write(WeightsSha256);
            }

            public static SealedFields Read(BinaryReader reader, string entry)
            {
                try
                {
                    int length = reader.ReadInt32();
                    if (length < 1 || length > MaxLabelBytes)
                        throw new ModelFileException($"{entry}: field 'label values length' is {length}; it must be 1 to {MaxLabelBytes}.");
                    byte[] labels = ReadBytes(reader, length, entry, "label values");
                    long jsonLength = reader.ReadInt64();
                    byte[] jsonSha = ReadBytes(reader, 32, entry, "Network.json SHA-256");
                    long weightsLength = reader.ReadInt64();
                    byte[] weightsSha = ReadBytes(reader, 32, entry, "Weights.bin SHA-256");
                    return new SealedFields(labels, jsonLength, jsonSha, weightsLength, weightsSha);
                }
                catch (EndOfStreamException ex)
                {
                    throw new ModelFileException($"{entry}: the classifier's fields are cut short.", ex);
                }
            }

            /// <summary>SHA-256 of the column names (each as an int byte length and UTF-8) and of these fields as written.</summary>
            public byte[] Seal(string[] names)
            {
                using var memory = new MemoryStream();
                using (var writer = new BinaryWriter(memory, Encoding.UTF8, leaveOpen: true))
                {
                    foreach (string name in names)
                    {
                        byte[] bytes = Encoding.UTF8.GetBytes(name);
                        writer.Write(bytes.Length);
                        writer.Write(bytes);
                    }
                    Write(writer);
                }
                return SHA256.HashData(memory.ToArray());
            }
        }

        /// <summary>The label values in the format above.</summary>
        /// <exception cref="InvalidOperationException">The item type is not text, a number or Boolean, or a class name is too long.</exception>
        public static byte[] WriteLabelValues<T>(T[] values, VectorDataViewType type)
        {
            int kind = Array.IndexOf(s_kinds, typeof(T));
            if (kind < 0)
                throw new InvalidOperationException($"Label values of type {type.ItemType} cannot be saved: model files hold text, numeric or Boolean class values.");
            using var memory = new MemoryStream();
            using (var writer = new BinaryWriter(memory, Encoding.UTF8, leaveOpen: true))
            {
                writer.Write((byte)kind);
                writer.Write(values.Length);
                foreach (T value in values)
                    WriteValue(writer, value);
            }
            return memory.ToArray();
        }

        private static void WriteValue<T>(BinaryWriter writer, T value)
        {
            switch (value)
            {
                case ReadOnlyMemory<char> text:
                    byte[] bytes = Encoding.UTF8.GetBytes(text.ToString());
                    if (bytes.Length > MaxLabelTextBytes)
                        throw new InvalidOperationException($"A class name has {bytes.Length} UTF-8 bytes; model files hold at most {MaxLabelTextBytes}.");
                    writer.Write(bytes.Length);
                    writer.Write(bytes);
                    break;
                case float v: writer.Write(v); break;
                case double v: writer.Write(v); break;
                case sbyte v: writer.Write(v); break;
                case byte v: writer.Write(v); break;
                case short v: writer.Write(v); break;
                case ushort v: writer.Write(v); break;
                case int v: writer.Write(v); break;
                case uint v: writer.Write(v); break;
                case long v: writer.Write(v); break;
                case ulong v: writer.Write(v); break;
                case bool v: writer.Write((byte)(v ? 1 : 0)); break;
                default: throw new NotSupportedException($"Label values of type {typeof(T)} have no item kind.");
            }
        }

        /// <summary>Reads label values written by <see cref="WriteLabelValues"/>: the key values type and a boxed VBuffer.</summary>
        public static (VectorDataViewType Type, object Value) ReadLabelValues(byte[] block, string entry)
        {
            const string field = "label values";
            byte kind = block[0];
            if (kind >= s_kinds.Length)
                throw new ModelFileException($"{entry}: field '{field}' has unknown item kind {kind}.");
            using var reader = new BinaryReader(new MemoryStream(block, 1, block.Length - 1, writable: false));
            try
            {
                int count = reader.ReadInt32();
                long left = block.Length - 5;
                if (count < 2 || count > DefinitionLimits.MaxActivation || (long)count * s_sizes[kind] > left)
                    throw new ModelFileException($"{entry}: field '{field}' declares {count} values in {left} bytes; it must hold 2 to {DefinitionLimits.MaxActivation}.");
                object value = kind switch
                {
                    Text => ReadTexts(reader, count, entry),
                    1 => Read(reader, count, r => r.ReadSingle()),
                    2 => Read(reader, count, r => r.ReadDouble()),
                    3 => Read(reader, count, r => r.ReadSByte()),
                    4 => Read(reader, count, r => r.ReadByte()),
                    5 => Read(reader, count, r => r.ReadInt16()),
                    6 => Read(reader, count, r => r.ReadUInt16()),
                    7 => Read(reader, count, r => r.ReadInt32()),
                    8 => Read(reader, count, r => r.ReadUInt32()),
                    9 => Read(reader, count, r => r.ReadInt64()),
                    10 => Read(reader, count, r => r.ReadUInt64()),
                    _ => Read(reader, count, r => r.ReadByte() switch
                    {
                        0 => false,
                        1 => true,
                        var b => throw new ModelFileException($"{entry}: field '{field}' has Boolean byte {b}."),
                    }),
                };
                if (reader.BaseStream.Position != reader.BaseStream.Length)
                    throw new ModelFileException($"{entry}: field '{field}' has {reader.BaseStream.Length - reader.BaseStream.Position} bytes after its last value.");
                return (new VectorDataViewType((PrimitiveDataViewType)s_types[kind], count), value);
            }
            catch (EndOfStreamException ex)
            {
                throw new ModelFileException($"{entry}: field '{field}' is cut short.", ex);
            }
        }

        /// <summary>The codec names ML.NET's BinarySaver writes for the item kinds above (Boolean excepted).</summary>
        private static readonly string[] s_codecNames =
        {
            "TextSpan", "Single", "Double", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
        };

        /// <summary>
        /// Reads label values that format 0x00010001 wrote with ML.NET's BinarySaver — exactly the layout it writes for a dense
        /// vector of text or numbers, every field bounded — without running ML.NET's codecs on untrusted bytes.
        /// </summary>
        /// <remarks>
        /// Layout: string "VBuffer"; 7-bit parameter length; string item codec name; 7-bit 0; int 1 (dimensions); int N;
        /// then int 1 (vectors), int N (size), int -1 (dense), int 0 (indices); then for text int N, N end boundaries in
        /// characters (high bit: missing), and the characters as one length-prefixed UTF-8 string; for numbers N little-endian
        /// values. Nothing follows.
        /// </remarks>
        public static (VectorDataViewType Type, object Value) ReadBinarySaverLabelValues(byte[] block, string entry)
        {
            const string field = "label values";
            using var reader = new BinaryReader(new MemoryStream(block, writable: false), Encoding.UTF8);
            void Expect(bool condition, string what)
            {
                if (!condition)
                    throw new ModelFileException($"{entry}: field '{field}' is damaged or of a layout this library does not read: {what}.");
            }
            string Name()
            {
                int length = reader.Read7BitEncodedInt();
                Expect(length >= 1 && length <= 64, $"a codec name of {length} bytes");
                return Encoding.UTF8.GetString(ReadBytes(reader, length, entry, field));
            }
            try
            {
                Expect(Name() == "VBuffer", "the codec is not VBuffer");
                int parameters = reader.Read7BitEncodedInt();
                long start = reader.BaseStream.Position;
                int kind = Array.IndexOf(s_codecNames, Name());
                Expect(kind >= 0, "the item codec is not text or a number");
                Expect(reader.Read7BitEncodedInt() == 0, "the item codec has parameters");
                Expect(reader.ReadInt32() == 1, "the vector does not have one dimension");
                int count = reader.ReadInt32();
                Expect(count >= 2 && count <= DefinitionLimits.MaxActivation, $"{count} values");
                Expect(reader.BaseStream.Position - start == parameters, "the codec parameters have another length");
                Expect(reader.ReadInt32() == 1 && reader.ReadInt32() == count && reader.ReadInt32() == -1 && reader.ReadInt32() == 0,
                    "the value is not one dense vector of the declared size");
                object value;
                if (kind == Text)
                {
                    Expect(reader.ReadInt32() == count, "the text block has another number of entries");
                    Expect((long)count * 4 <= block.Length - reader.BaseStream.Position, $"{count} text boundaries");
                    var ends = new int[count];
                    for (int i = 0, previous = 0; i < count; i++)
                    {
                        ends[i] = reader.ReadInt32() & 0x7FFFFFFF;
                        Expect(ends[i] >= previous, "text boundaries decrease");
                        previous = ends[i];
                    }
                    int bytes = reader.Read7BitEncodedInt();
                    string text;
                    try
                    {
                        text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(ReadBytes(reader, bytes, entry, field));
                    }
                    catch (ArgumentException ex)
                    {
                        throw new ModelFileException($"{entry}: field '{field}' is not valid UTF-8.", ex);
                    }
                    Expect(text.Length == ends[^1], "the text has another length than its boundaries say");
                    var values = new ReadOnlyMemory<char>[count];
                    for (int i = 0, begin = 0; i < count; begin = ends[i], i++)
                        values[i] = text.AsMemory(begin, ends[i] - begin);
                    value = new VBuffer<ReadOnlyMemory<char>>(count, values);
                }
                else
                {
                    Expect((long)count * s_sizes[kind] <= block.Length - reader.BaseStream.Position, $"{count} values");
                    value = kind switch
                    {
                        1 => Read(reader, count, r => r.ReadSingle()),
                        2 => Read(reader, count, r => r.ReadDouble()),
                        3 => Read(reader, count, r => r.ReadSByte()),
                        4 => Read(reader, count, r => r.ReadByte()),
                        5 => Read(reader, count, r => r.ReadInt16()),
                        6 => Read(reader, count, r => r.ReadUInt16()),
                        7 => Read(reader, count, r => r.ReadInt32()),
                        8 => Read(reader, count, r => r.ReadUInt32()),
                        9 => Read(reader, count, r => r.ReadInt64()),
                        _ => (object)Read(reader, count, r => r.ReadUInt64()),
                    };
                }
                Expect(reader.BaseStream.Position == block.Length, $"{block.Length - reader.BaseStream.Position} bytes follow the values");
                return (new VectorDataViewType((PrimitiveDataViewType)s_types[kind], count), value);
            }
            catch (EndOfStreamException ex)
            {
                throw new ModelFileException($"{entry}: field '{field}' is cut short.", ex);
            }
            catch (FormatException ex) when (ex is not ModelFileException)
            {
                throw new ModelFileException($"{entry}: field '{field}' has a damaged length ({ex.Message}).", ex);
            }
        }

        private static VBuffer<T> Read<T>(BinaryReader reader, int count, Func<BinaryReader, T> read)
        {
            var values = new T[count];
            for (int i = 0; i < count; i++)
                values[i] = read(reader);
            return new VBuffer<T>(count, values);
        }

        private static VBuffer<ReadOnlyMemory<char>> ReadTexts(BinaryReader reader, int count, string entry)
        {
            var decoder = new UTF8Encoding(false, throwOnInvalidBytes: true);
            var values = new ReadOnlyMemory<char>[count];
            for (int i = 0; i < count; i++)
            {
                int length = reader.ReadInt32();
                if (length < 0 || length > MaxLabelTextBytes)
                    throw new ModelFileException($"{entry}: field 'label values' has a class name {i} of {length} bytes; it must have 0 to {MaxLabelTextBytes}.");
                byte[] bytes = ReadBytes(reader, length, entry, $"label values[{i}]");
                try
                {
                    values[i] = decoder.GetString(bytes).AsMemory();
                }
                catch (ArgumentException ex)
                {
                    throw new ModelFileException($"{entry}: field 'label values[{i}]' is not valid UTF-8.", ex);
                }
            }
            return new VBuffer<ReadOnlyMemory<char>>(count, values);
        }
    }
}
