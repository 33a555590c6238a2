// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using Microsoft.ML.Data;
using Microsoft.ML.Model.OnnxConverter;
using Microsoft.ML.Pruning.Onnx;

namespace Microsoft.ML.Pruning.MLNet
{
    /// <summary>
    /// The image classifier's part in ML.NET's ONNX export (<c>mlContext.Model.ConvertToOnnx</c>, package
    /// Microsoft.ML.OnnxConverter): its row mapper and its scoring view implement ML.NET's internal <c>ISaveAsOnnx</c> /
    /// <c>ITransformCanSaveOnnx</c>, and call this, which adds the network (<see cref="OnnxNetworkTranslator"/>) and the two
    /// output columns to the ONNX graph ML.NET builds.
    /// </summary>
    /// <remarks>
    /// Columns in the ONNX model: <c>Score</c> is a float tensor [N, classes] (<c>Softmax</c> of the network's logits);
    /// <c>PredictedLabel</c> is the key as ML.NET's ONNX export represents keys, a uint32 tensor [N, 1] holding the 1-based
    /// class index (<c>ArgMax</c> of the scores, the first of equal ones as the transformer takes it, plus one, <c>Cast</c>).
    /// A <c>MapKeyToValue</c> after the classifier exports as usual and turns it back into the class name. The model needs
    /// opset <see cref="OnnxNetworkTranslator.MinimumOpset"/> or later; <c>ConvertToOnnx</c> writes opset 12 unless told otherwise.
    /// </remarks>
    internal static class OnnxExport
    {
        private const long OnnxUInt32 = 12; // TensorProto.DataType.UINT32

        /// <summary>Adds <paramref name="classifier"/> to <paramref name="ctx"/>: reads its feature column's variable, defines
        /// its score and predicted-label columns.</summary>
        /// <exception cref="NotSupportedException">The network has a layer without an ONNX translation (the message names it).</exception>
        /// <exception cref="InvalidOperationException">The feature column is not in the ONNX graph.</exception>
        public static void SaveAsOnnx(ImageClassificationTransformer classifier, DataViewSchema.DetachedColumn[] outputColumns, OnnxContext ctx)
        {
            ArgumentNullException.ThrowIfNull(ctx);
            OnnxNetworkTranslator.CheckExportable(classifier.Network.Definition);
            ctx.CheckOpSetVersion(OnnxNetworkTranslator.MinimumOpset, ImageClassificationTransformer.UserName);
            if (!ctx.ContainsColumn(classifier.FeatureColumnName))
            {
                throw new InvalidOperationException(
                    $"Feature column '{classifier.FeatureColumnName}' is not in the ONNX graph: the steps before the image classifier must be exportable too.");
            }
            string images = ctx.GetVariableName(classifier.FeatureColumnName);
            var graph = new ContextGraph(ctx);

            DataViewSchema.DetachedColumn predicted = Array.Find(outputColumns, c => c.Name == classifier.PredictedLabelColumnName)!;
            DataViewSchema.DetachedColumn score = Array.Find(outputColumns, c => c.Name == classifier.ScoreColumnName)!;
            string scoreVariable = ctx.AddIntermediateVariable(score.Type, score.Name);
            OnnxNetworkTranslator.AddNetwork(classifier.Network, graph, images, scoreVariable);
            string best = graph.NewVariable(classifier.PredictedLabelColumnName + ".argmax");
            graph.AddNode("ArgMax", new[] { scoreVariable }, new[] { best }, "argmax", new[] { OnnxAttribute.Of("axis", 1L), OnnxAttribute.Of("keepdims", 1L) });
            string oneBased = graph.NewVariable(classifier.PredictedLabelColumnName + ".key");
            graph.AddNode("Add", new[] { best, graph.AddInt64s("key.offset", new[] { 1L }, new[] { 1L }) }, new[] { oneBased }, "key", Array.Empty<OnnxAttribute>());
            string predictedVariable = ctx.AddIntermediateVariable(predicted.Type, predicted.Name);
            graph.AddNode("Cast", new[] { oneBased }, new[] { predictedVariable }, "predicted_label", new[] { OnnxAttribute.Of("to", OnnxUInt32) });
        }

        /// <summary>The translator's view of ML.NET's ONNX context. Its variables and initializers are no data view columns: a
        /// name that is one is made unique first, and the context stops tracking each new name as a column, so that later
        /// steps of the pipeline still find the columns they read.</summary>
        private sealed class ContextGraph : IOnnxGraphWriter
        {
            private readonly OnnxContext _ctx;

            public ContextGraph(OnnxContext ctx)
            {
                _ctx = ctx;
            }

            public string NewVariable(string hint)
            {
                string free = FreeName(hint);
                string name = _ctx.AddIntermediateVariable(null!, free, skip: true);
                Untrack(free);
                return name;
            }

            public string AddFloats(string hint, IReadOnlyList<float> values, long[] dims)
            {
                string free = FreeName(hint);
                string name = _ctx.AddInitializer(values, dims, free, true);
                Untrack(free);
                return name;
            }

            public string AddInt64s(string hint, IReadOnlyList<long> values, long[] dims)
            {
                string free = FreeName(hint);
                string name = _ctx.AddInitializer(values, dims, free, true);
                Untrack(free);
                return name;
            }

            public string AddBytes(string hint, IReadOnlyList<byte> values, long[] dims)
            {
                string free = FreeName(hint);
                string name = _ctx.AddInitializer(System.Linq.Enumerable.Select(values, v => (int)v), typeof(byte), dims, free, true);
                Untrack(free);
                return name;
            }

            public void AddNode(string opType, IReadOnlyList<string> inputs, IReadOnlyList<string> outputs, string nameHint, IReadOnlyList<OnnxAttribute> attributes)
            {
                OnnxNode node = _ctx.CreateNode(opType, inputs, outputs, _ctx.GetNodeName(nameHint), "");
                foreach (OnnxAttribute attribute in attributes)
                {
                    if (attribute.Int is long value)
                        node.AddAttribute(attribute.Name, value);
                    else
                        node.AddAttribute(attribute.Name, (IEnumerable<long>)attribute.Ints!);
                }
            }

            private string FreeName(string hint)
            {
                string name = hint;
                for (int i = 1; _ctx.ContainsColumn(name); i++)
                    name = hint + "_" + i;
                return name;
            }

            private void Untrack(string column)
            {
                if (_ctx.ContainsColumn(column))
                    _ctx.RemoveColumn(column, false);
            }
        }
    }
}
