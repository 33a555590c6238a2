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
    }
}
