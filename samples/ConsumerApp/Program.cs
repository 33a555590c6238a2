// Licensed under the MIT license.

using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Training;

namespace ConsumerApp
{
    /// <summary>
    /// The smallest application of the library, as a new user writes it: train on a few synthetic images, prune, save,
    /// reload and predict. CI builds and runs it referencing the library as a project, as a package from a local folder,
    /// and as published output; it prints "consumer ok" and exits 0 when every step worked.
    /// </summary>
    internal static class Program
    {
        private const int Side = 16;

        /// <summary>One image with its class name.</summary>
        private sealed class Row
        {
            public string Label { get; set; } = "";

            [VectorType(1, Side, Side)]
            public float[] Features { get; set; } = Array.Empty<float>();
        }

        /// <summary>The prediction.</summary>
        private sealed class Prediction
        {
            public string PredictedLabel { get; set; } = "";
        }

        private static int Main()
        {
            var ml = new MLContext(seed: 1);
            // Two classes: a bright left half or a bright right half.
            var random = new Random(1);
            Row[] rows = Enumerable.Range(0, 256).Select(i =>
            {
                var pixels = new float[Side * Side];
                for (int p = 0; p < pixels.Length; p++)
                    pixels[p] = (float)random.NextDouble() * 0.2f + ((p % Side < Side / 2) == (i % 2 == 0) ? 0.8f : 0f);
                return new Row { Label = i % 2 == 0 ? "left" : "right", Features = pixels };
            }).ToArray();
            IDataView data = ml.Data.LoadFromEnumerable(rows);

            ITransformer model = ml.Transforms.Conversion.MapValueToKey("Label")
                .Append(ml.MulticlassClassification.Trainers.ImageClassifier(new ImageClassifierTrainer.Options { Epochs = 2, BatchSize = 32 }))
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
                .Fit(data);
            ITransformer pruned = ml.Transforms.PruneMagnitude(model, new MagnitudePruner.Options { KeptFraction = 0.2 }).Fit(data);

            string path = Path.Combine(Path.GetTempPath(), $"consumer-{Environment.ProcessId}.zip");
            ml.Model.Save(pruned, data.Schema, path);
            ITransformer reloaded = new MLContext().Model.Load(path, out _);
            File.Delete(path);
            var engine = ml.Model.CreatePredictionEngine<Row, Prediction>(reloaded);
            int correct = rows.Take(32).Count(row => engine.Predict(row).PredictedLabel == row.Label);

            var summary = reloaded.GetSummary();
            Console.WriteLine($"dense {model.GetSummary().NonZeroParameters:N0} non-zero parameters, pruned {summary.NonZeroParameters:N0}; reloaded model: {correct}/32 correct");
            bool ok = summary.NonZeroParameters < model.GetSummary().NonZeroParameters && correct >= 28;
            Console.WriteLine(ok ? "consumer ok" : "consumer FAILED");
            return ok ? 0 : 1;
        }
    }
}
