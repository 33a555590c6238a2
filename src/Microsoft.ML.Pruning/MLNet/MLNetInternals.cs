// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Pruning.MLNet
{
    /// <summary>The few ML.NET internals the library needs outside the transformer's persistence code.</summary>
    internal static class MLNetInternals
    {
        /// <summary>The MLContext behind a catalog (ML.NET keeps it internal).</summary>
        public static IHostEnvironment GetEnvironment(object catalog) => CatalogUtils.GetEnvironment((IInternalCatalog)catalog);

        /// <summary>The seed the MLContext was created with, or null.</summary>
        public static int? GetSeed(IHostEnvironment env) => (env as IHostEnvironmentInternal)?.Seed;

        /// <summary>
        /// The output schema of a multiclass image classifier: the input columns plus <c>PredictedLabel</c> (a key
        /// with the label's values) and <c>Score</c> (a vector of floats with the multiclass score annotations).
        /// </summary>
        public static SchemaShape MulticlassOutputSchema(SchemaShape input, string featureColumnName, string labelColumnName,
            string scoreColumnName, string predictedLabelColumnName)
        {
            if (!input.TryFindColumn(featureColumnName, out SchemaShape.Column features))
                throw new ArgumentOutOfRangeException(nameof(input), $"The input schema has no feature column '{featureColumnName}'.");
            if (features.Kind != SchemaShape.Column.VectorKind.Vector || features.ItemType != NumberDataViewType.Single)
                throw new ArgumentOutOfRangeException(nameof(input), $"Feature column '{featureColumnName}' must be a known-size vector of Single; found {features.GetTypeString()}.");
            if (!input.TryFindColumn(labelColumnName, out SchemaShape.Column label))
                throw new ArgumentOutOfRangeException(nameof(input), $"The input schema has no label column '{labelColumnName}'.");
            if (!label.IsKey)
            {
                throw new ArgumentOutOfRangeException(nameof(input),
                    $"Label column '{labelColumnName}' must be a key type; found {label.GetTypeString()}. Map it first with mlContext.Transforms.Conversion.MapValueToKey(\"{labelColumnName}\").");
            }

            var columns = input.ToDictionary(c => c.Name);
            var keyValues = new SchemaShape(new[] { new SchemaShape.Column(AnnotationUtils.Kinds.KeyValues, SchemaShape.Column.VectorKind.Vector, TextDataViewType.Instance, false) });
            columns[predictedLabelColumnName] = new SchemaShape.Column(predictedLabelColumnName, SchemaShape.Column.VectorKind.Scalar,
                NumberDataViewType.UInt32, true, keyValues);
            columns[scoreColumnName] = new SchemaShape.Column(scoreColumnName, SchemaShape.Column.VectorKind.Vector,
                NumberDataViewType.Single, false, new SchemaShape(AnnotationUtils.AnnotationsForMulticlassScoreColumn(label)));
            return new SchemaShape(columns.Values);
        }

        /// <summary>The transformers and scopes of a <see cref="TransformerChain{TLastTransformer}"/> (ML.NET keeps the scopes internal).</summary>
        public static bool TryGetChain(ITransformer model, out ITransformer[] transformers, out TransformerScope[] scopes)
        {
            if (model is ITransformerChainAccessor chain)
            {
                transformers = chain.Transformers;
                scopes = chain.Scopes;
                return true;
            }
            transformers = Array.Empty<ITransformer>();
            scopes = Array.Empty<TransformerScope>();
            return false;
        }

        /// <summary>
        /// A chain of <paramref name="transformers"/> of the same type as <paramref name="original"/>, so that its
        /// <c>LastTransformer</c> keeps its type; a <c>TransformerChain&lt;ITransformer&gt;</c> when the last one no longer fits.
        /// </summary>
        public static ITransformer CreateChainLike(ITransformer original, ITransformer[] transformers, TransformerScope[] scopes)
        {
            Type type = original.GetType();
            if (!type.IsGenericType || type.GetGenericTypeDefinition() != typeof(TransformerChain<>)
                || (transformers.Length > 0 && !type.GetGenericArguments()[0].IsInstanceOfType(transformers[^1])))
            {
                type = typeof(TransformerChain<ITransformer>);
            }
            var constructor = type.GetConstructor(new[] { typeof(IEnumerable<ITransformer>), typeof(IEnumerable<TransformerScope>) })!;
            return (ITransformer)constructor.Invoke(new object[] { transformers, scopes });
        }

        /// <summary>
        /// The output schema shape of <paramref name="transformers"/> applied in order to data of shape
        /// <paramref name="input"/>. Vector sizes are unknown in a shape, so the column <paramref name="variableSizeColumn"/>
        /// is presented as a vector of unknown size to the transformer that reads it (it checks sizes when it sees data).
        /// </summary>
        public static SchemaShape OutputShapeOf(SchemaShape input, IEnumerable<ITransformer> transformers, ITransformer sizeChecking, string variableSizeColumn)
        {
            DataViewSchema schema = Microsoft.ML.Data.DataLoadSave.FakeSchemaFactory.Create(input);
            foreach (ITransformer transformer in transformers)
            {
                if (ReferenceEquals(transformer, sizeChecking))
                    schema = WithVariableSizeVector(schema, variableSizeColumn);
                schema = transformer.GetOutputSchema(schema);
            }
            return SchemaShape.Create(schema);
        }

        private static DataViewSchema WithVariableSizeVector(DataViewSchema schema, string columnName)
        {
            var builder = new DataViewSchema.Builder();
            foreach (DataViewSchema.Column column in schema)
            {
                DataViewType type = column.Name == columnName && column.Type is VectorDataViewType { ItemType: var item } && !column.IsHidden
                    ? new VectorDataViewType(item)
                    : column.Type;
                builder.AddColumn(column.Name, type, column.Annotations);
            }
            return builder.ToSchema();
        }

        /// <summary>
        /// The label column as the model keeps it: a key with its values. A key without values gets its 1-based
        /// indices as text, so predictions still map back to readable names.
        /// </summary>
        public static DataViewSchema.DetachedColumn DetachLabelColumn(DataViewSchema.Column label, int classes)
        {
            if (label.Annotations.Schema.GetColumnOrNull(AnnotationUtils.Kinds.KeyValues) is DataViewSchema.Column values
                && values.Type is VectorDataViewType { Size: var size } && size == classes)
            {
                return new DataViewSchema.DetachedColumn(label);
            }
            var names = Enumerable.Range(1, classes).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture).AsMemory()).ToArray();
            var annotations = new DataViewSchema.Annotations.Builder();
            annotations.AddKeyValues(classes, TextDataViewType.Instance,
                (ref VBuffer<ReadOnlyMemory<char>> destination) => destination = new VBuffer<ReadOnlyMemory<char>>(classes, names));
            return new DataViewSchema.DetachedColumn(label.Name, label.Type, annotations.ToAnnotations());
        }

        /// <summary>
        /// The uncompressed length the zip declares for entry <paramref name="name"/> of the folder <paramref name="ctx"/> reads,
        /// or null when there is no such entry. ML.NET extracts an entry whole when it is opened; this lets the loader refuse an
        /// oversized one first.
        /// </summary>
        public static long? DeclaredEntryLength(ModelLoadContext ctx, string name)
        {
            if (ctx.Repository is not RepositoryReader repository)
                return null;
            char separator = System.IO.Path.DirectorySeparatorChar;
            string path = (string.IsNullOrEmpty(ctx.Directory) ? name : ctx.Directory + "/" + name).Replace('\\', separator).Replace('/', separator);
            if (repository._entries.TryGetValue(path, out var entry) || repository._entries.TryGetValue(path.Replace('/', '\\'), out entry))
                return entry.Length;
            return null;
        }
    }
}
