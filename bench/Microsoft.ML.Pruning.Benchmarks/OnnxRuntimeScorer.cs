// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// A classifier exported with <c>mlContext.Model.ConvertToOnnx</c> and scored by ONNX Runtime: the CPU execution provider,
    /// every graph optimization on, as many intra-op threads as the compact runtime uses (one per core), one inter-op thread.
    /// The speed reference of the <c>runtime</c> scenario, and the third runtime of <c>channels</c> and <c>dcp</c>.
    /// </summary>
    internal sealed class OnnxRuntimeScorer : IDisposable
    {
        private const string InputName = "Features", ScoreName = "Score.output", PredictedLabelName = "PredictedLabel.output";

        private readonly InferenceSession _session;
        private readonly SessionOptions _options;
        private readonly RunOptions _run = new();
        private readonly ImageShape _shape;

        private OnnxRuntimeScorer(byte[] model, ImageShape shape)
        {
            _options = new SessionOptions
            {
                GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
                ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
                IntraOpNumThreads = Environment.ProcessorCount,
                InterOpNumThreads = 1,
            };
            _session = new InferenceSession(model, _options);
            _shape = shape;
            ModelBytes = model.Length;
        }

        /// <summary>The size of the exported ONNX file.</summary>
        public long ModelBytes { get; }

        /// <summary>Exports <paramref name="classifier"/> (alone, reading the feature column of <paramref name="data"/>) and opens it.</summary>
        public static OnnxRuntimeScorer Export(MLContext ml, ImageClassificationTransformer classifier, IDataView data)
        {
            IDataView images = ml.Transforms.SelectColumns(classifier.FeatureColumnName).Fit(data).Transform(data);
            using var stream = new MemoryStream();
            ml.Model.ConvertToOnnx(classifier, images, stream);
            return new OnnxRuntimeScorer(stream.ToArray(), classifier.Network.Definition.Input);
        }

        /// <summary>Scores <paramref name="images"/> (whole images, channels first) and returns the probabilities.</summary>
        public float[] Score(float[] images)
        {
            long count = images.Length / _shape.Size;
            using OrtValue input = OrtValue.CreateTensorValueFromMemory(images, new[] { count, _shape.Channels, _shape.Height, _shape.Width });
            using IDisposableReadOnlyCollection<OrtValue> outputs = _session.Run(_run, new[] { InputName }, new[] { input }, new[] { ScoreName });
            return outputs[0].GetTensorDataAsSpan<float>().ToArray();
        }

        /// <summary>The fraction of <paramref name="images"/> whose predicted class (the exported <c>PredictedLabel</c>) is
        /// <paramref name="labels"/>, scored in batches of 256.</summary>
        public double Accuracy(float[] images, IReadOnlyList<string> labels, IReadOnlyList<string> classNames)
        {
            int size = _shape.Size, count = images.Length / size, correct = 0;
            for (int start = 0; start < count; start += 256)
            {
                int n = Math.Min(256, count - start);
                float[] batch = images.AsSpan(start * size, n * size).ToArray();
                using OrtValue input = OrtValue.CreateTensorValueFromMemory(batch, new long[] { n, _shape.Channels, _shape.Height, _shape.Width });
                using IDisposableReadOnlyCollection<OrtValue> outputs = _session.Run(_run, new[] { InputName }, new[] { input }, new[] { PredictedLabelName });
                ReadOnlySpan<uint> keys = outputs[0].GetTensorDataAsSpan<uint>();
                for (int i = 0; i < n; i++)
                {
                    if (classNames[(int)keys[i] - 1] == labels[start + i])
                        correct++;
                }
            }
            return (double)correct / count;
        }

        public void Dispose()
        {
            _session.Dispose();
            _options.Dispose();
            _run.Dispose();
        }
    }
}
