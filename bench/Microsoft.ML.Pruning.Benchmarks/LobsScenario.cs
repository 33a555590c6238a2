// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Transforms;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Scenario <c>lobs</c>: dense LeNets trained on Fashion-MNIST through the ML.NET trainer (the <c>train</c> recipe),
    /// then pruned to several kept fractions by layer-wise OBS and by magnitude, each measured before retraining and
    /// after light retraining of 100 and 500 iterations and one epoch with the masks fixed: test accuracy, non-zero
    /// weights, multiply-accumulates with a non-zero weight (the macs field), zip size and the time of the pruning step. Every pruner runs with its defaults except the retraining learning rate (0.1); L-OBS computes its
    /// layer statistics on 5,000 random training images (its default).
    /// </summary>
    internal static class LobsScenario
    {
        /// <summary>Both methods retrain at twice the dense recipe's rate (cosine to zero), the best of 0.01/0.05/0.1 for one epoch.</summary>
        private const double RetrainLearningRate = 0.1;

        private static readonly ImageClassifierArchitecture[] s_defaultModels = { ImageClassifierArchitecture.LeNet300100, ImageClassifierArchitecture.LeNet5 };

        public static int Run(bool quick, IReadOnlyList<ImageClassifierArchitecture>? architectures)
        {
            architectures ??= s_defaultModels;
            int trainRows = quick ? 4000 : 60000, testRows = quick ? 1000 : 10000;
            double[] fractions = quick ? new[] { 0.1, 0.07 } : new[] { 0.5, 0.2, 0.1, 0.07, 0.05 };
            var retrainings = quick
                ? new (string Name, long Iterations, int Epochs)[] { ("none", 0, 0), ("100it", 100, 0) }
                : new (string Name, long Iterations, int Epochs)[] { ("none", 0, 0), ("100it", 100, 0), ("500it", 500, 0), ("1epoch", 0, 1) };
            string directory = Path.Combine("artifacts", "bench", "models");
            Directory.CreateDirectory(directory);

            var rows = new List<BenchRow>();
            foreach (ImageClassifierArchitecture architecture in architectures)
            {
                string model = Architectures.ShortName(architecture);
                var ml = new MLContext(seed: 1);
                IDataView train = ml.Data.Cache(FashionMnist.LoadTrain(ml, trainRows));
                IDataView test = ml.Data.Cache(FashionMnist.LoadTest(ml, testRows));

                Console.WriteLine($"== {model}: dense");
                ImageClassifierTrainer.Options recipe = TrainScenario.Recipe(architecture, quick);
                var pipeline = ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
                    .Append(ml.MulticlassClassification.Trainers.ImageClassifier(recipe))
                    .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
                ITransformer dense = pipeline.Fit(train);
                BenchRow denseRow = Measure(ml, dense, train, test, Path.Combine(directory, $"lobs-{model}-dense{(quick ? "-quick" : "")}.zip"));
                denseRow.Model = model;
                denseRow.Method = "dense";
                denseRow.Quick = quick;
                denseRow.Epochs = recipe.Epochs;
                denseRow.KeptFraction = 1;
                denseRow.Retrain = "none";
                rows.Add(denseRow);
                Console.WriteLine($"  dense: accuracy {denseRow.Accuracy:P2}, zip {denseRow.ZipBytes:N0} bytes");

                long batchesPerEpoch = (trainRows + 127) / 128;
                foreach (double fraction in fractions)
                {
                    foreach (string method in new[] { "lobs", "magnitude" })
                    {
                        foreach (var (retrainName, iterations, epochs) in retrainings)
                        {
                            PruningReport? report = null;
                            var clock = Stopwatch.StartNew();
                            ITransformer pruned = method == "lobs"
                                ? ml.Transforms.PruneLayerwiseObs(dense, new LayerwiseObsPruner.Options
                                {
                                    KeptFraction = fraction,
                                    LearningRate = RetrainLearningRate,
                                    RetrainIterations = iterations,
                                    RetrainEpochs = epochs,
                                    PruningCompleted = r => report = r,
                                }).Fit(train)
                                : ml.Transforms.PruneMagnitude(dense, new MagnitudePruner.Options
                                {
                                    KeptFraction = fraction,
                                    LearningRate = RetrainLearningRate,
                                    RetrainIterations = iterations,
                                    RetrainEpochs = epochs,
                                    PruningCompleted = r => report = r,
                                }).Fit(train);
                            double fitSeconds = clock.Elapsed.TotalSeconds;
                            string zip = Path.Combine(directory, $"lobs-{model}-{method}-{fraction:0.00}-{retrainName}{(quick ? "-quick" : "")}.zip");
                            BenchRow row = Measure(ml, pruned, train, test, zip);
                            row.Model = model;
                            row.Method = method;
                            row.Quick = quick;
                            row.Epochs = (double)report!.RetrainingSteps / batchesPerEpoch;
                            row.KeptFraction = report.KeptFraction;
                            row.Retrain = retrainName;
                            row.PruneSeconds = report.PruningTime.TotalSeconds;
                            row.MacsRatio = (double)denseRow.Macs! / row.Macs;
                            rows.Add(row);
                            Console.WriteLine(FormattableString.Invariant(
                                $"  {method} {fraction:P0} {retrainName}: accuracy {row.Accuracy:P2}, prune {row.PruneSeconds:F2} s, fit {fitSeconds:F1} s, zip {row.ZipBytes:N0} bytes"));
                            if (retrainName == "none")
                                Console.WriteLine("    " + report.ToString().Replace("\n", "\n    ", StringComparison.Ordinal));
                            ModelCache.DisposeAll(pruned);
                        }
                    }
                }
                ModelCache.DisposeAll(dense);
            }

            Table.Print(
                new[] { "model", "method", "kept", "retrain", "test acc", "Δ vs dense", "non-zero", "stored params", "MACs", "zip bytes", "zip / dense", "prune s" },
                rows.Select(r =>
                {
                    BenchRow reference = rows.First(d => d.Model == r.Model && d.Method == "dense");
                    return (IReadOnlyList<string>)new[]
                    {
                        r.Model, r.Method, Table.Format(r.KeptFraction * 100, "0.0") + "%", r.Retrain ?? "-", Table.Format(r.Accuracy * 100, "0.00"),
                        Table.Format((r.Accuracy - reference.Accuracy) * 100, "+0.00;-0.00;0.00"), Table.Format(r.NonZeroParams), Table.Format(r.Params),
                        Table.Format(r.Macs), Table.Format(r.ZipBytes), Table.Format((double?)r.ZipBytes / reference.ZipBytes, "0.000"), Table.Format(r.PruneSeconds, "0.00"),
                    };
                }));
            Console.WriteLine("wrote " + BenchOutput.Write("lobs", rows));
            return 0;
        }

        /// <summary>Test accuracy through the ML.NET pipeline, model size, and the zip written to <paramref name="zip"/>.</summary>
        private static BenchRow Measure(MLContext ml, ITransformer model, IDataView train, IDataView test, string zip)
        {
            MulticlassClassificationMetrics metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
            ImageClassificationTransformer classifier = model is ImageClassificationTransformer c ? c : ((IEnumerable<ITransformer>)model).OfType<ImageClassificationTransformer>().Single();
            ModelSummary summary = classifier.GetSummary();
            ml.Model.Save(model, train.Schema, zip);
            return new BenchRow
            {
                Scenario = "lobs",
                Accuracy = metrics.MicroAccuracy,
                Params = StoredParameters(classifier.Network),
                NonZeroParams = summary.NonZeroParameters,
                Macs = summary.NonZeroMultiplyAccumulates,
                ZipBytes = new FileInfo(zip).Length,
            };
        }

        /// <summary>Parameter values the model file stores: the non-zero ones of bitmask-encoded tensors, all of the others.</summary>
        private static long StoredParameters(ClassifierNetwork network)
        {
            long stored = 0;
            foreach (var (_, parameter) in network.NamedParameters())
            {
                float[] values = parameter.data<float>().ToArray();
                stored += TensorStore.IsSmallerAsBitmask(values) ? values.Count(v => BitConverter.SingleToInt32Bits(v) != 0) : values.Length;
            }
            return stored;
        }

    }
}
