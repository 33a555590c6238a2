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
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Transforms;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Scenario <c>train</c>: each architecture trained on Fashion-MNIST through the ML.NET trainer (accuracy on the
    /// full test set, size, cost, latency, a save/load check in a new process) and through a bare TorchSharp loop on
    /// the same tensors, to measure what the ML.NET glue costs.
    /// </summary>
    internal static class TrainScenario
    {
        /// <summary>The recipe of each architecture: what the README's accuracy figures were measured with.</summary>
        internal static ImageClassifierTrainer.Options Recipe(ImageClassifierArchitecture architecture, bool quick) => architecture switch
        {
            ImageClassifierArchitecture.LeNet300100 => new() { Architecture = architecture, Epochs = quick ? 2 : 20, LearningRate = 0.05 },
            ImageClassifierArchitecture.LeNet5 => new() { Architecture = architecture, Epochs = quick ? 2 : 20, LearningRate = 0.05 },
            ImageClassifierArchitecture.VggSmall => new()
            {
                Architecture = architecture, Epochs = quick ? 1 : 12, LearningRate = 0.05, RandomCropPadding = 2, HorizontalFlip = true,
            },
            ImageClassifierArchitecture.ResNet20 => new()
            {
                Architecture = architecture, Epochs = quick ? 1 : 15, LearningRate = 0.1, RandomCropPadding = 2, HorizontalFlip = true,
            },
            _ => throw new ArgumentOutOfRangeException(nameof(architecture)),
        };

        public static int Run(bool quick, IReadOnlyList<ImageClassifierArchitecture> architectures)
        {
            int trainRows = quick ? 4000 : 60000, testRows = quick ? 1000 : 10000;
            var rows = new List<BenchRow>();
            foreach (ImageClassifierArchitecture architecture in architectures)
            {
                string model = Architectures.ShortName(architecture);
                Console.WriteLine($"== {model}: ML.NET trainer");
                BenchRow dense = TrainWithMLNet(architecture, quick, trainRows, testRows);
                Console.WriteLine($"== {model}: bare TorchSharp loop");
                BenchRow bare = TrainBare(architecture, quick, trainRows);
                dense.OverheadPct = 100 * (bare.ImagesPerSecond - dense.ImagesPerSecond) / bare.ImagesPerSecond;
                rows.Add(dense);
                rows.Add(bare);
            }

            Table.Print(
                new[] { "model", "method", "epochs", "test acc", "params", "MACs", "zip bytes", "b1 ms", "b256 img/s", "train img/s", "overhead %", "reload ok" },
                rows.Select(r => (IReadOnlyList<string>)new[]
                {
                    r.Model, r.Method, Table.Format(r.Epochs, "0"), Table.Format(r.Accuracy * 100, "0.00"), Table.Format(r.Params), Table.Format(r.Macs),
                    Table.Format(r.ZipBytes), Table.Format(r.LatencyB1Ms, "0.000"), Table.Format(r.ThroughputB256, "0"),
                    Table.Format(r.ImagesPerSecond, "0"), Table.Format(r.OverheadPct, "0.0"), r.ReloadIdentical?.ToString() ?? "-",
                }));
            Console.WriteLine("wrote " + BenchOutput.Write("train", rows));
            return rows.All(r => r.ReloadIdentical != false) ? 0 : 1;
        }

        private static BenchRow TrainWithMLNet(ImageClassifierArchitecture architecture, bool quick, int trainRows, int testRows)
        {
            var ml = new MLContext(seed: 1);
            IDataView train = FashionMnist.LoadTrain(ml, trainRows);
            IDataView test = FashionMnist.LoadTest(ml, testRows);
            var epochThroughputs = new List<double>();
            ImageClassifierTrainer.Options options = Recipe(architecture, quick);
            options.EpochCompleted = metrics =>
            {
                epochThroughputs.Add(metrics.ImagesPerSecond);
                Console.WriteLine("  " + metrics);
            };
            var pipeline = ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
                .Append(ml.MulticlassClassification.Trainers.ImageClassifier(options))
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));

            var clock = Stopwatch.StartNew();
            var model = pipeline.Fit(train);
            double trainSeconds = clock.Elapsed.TotalSeconds;
            ImageClassificationTransformer classifier = model.OfType<ImageClassificationTransformer>().Single();

            IDataView scored = model.Transform(test);
            MulticlassClassificationMetrics metrics = ml.MulticlassClassification.Evaluate(scored);
            ModelSummary summary = classifier.GetSummary();

            string directory = Path.Combine("artifacts", "bench", "models");
            Directory.CreateDirectory(directory);
            string zip = Path.GetFullPath(Path.Combine(directory, $"train-{Architectures.ShortName(architecture)}{(quick ? "-quick" : "")}.zip"));
            ml.Model.Save(model, train.Schema, zip);
            string predictions = zip + ".predictions.txt";
            File.WriteAllLines(predictions, scored.GetColumn<string>("PredictedLabel"));
            bool reloadIdentical = VerifyLoadInNewProcess(zip, predictions, testRows);

            var (latency, throughput) = InferenceTiming.Measure(classifier.Network, quick);
            Console.WriteLine(summary);
            var row = new BenchRow
            {
                Scenario = "train",
                Model = Architectures.ShortName(architecture),
                Method = "dense",
                Quick = quick,
                Epochs = options.Epochs,
                Accuracy = metrics.MicroAccuracy,
                Params = summary.Parameters,
                NonZeroParams = summary.NonZeroParameters,
                Macs = summary.MultiplyAccumulates,
                ZipBytes = new FileInfo(zip).Length,
                LatencyB1Ms = latency,
                ThroughputB256 = throughput,
                ImagesPerSecond = InferenceTiming.Median(epochThroughputs.ToArray()),
                TrainSeconds = trainSeconds,
                ReloadIdentical = reloadIdentical,
            };
            classifier.Dispose();
            return row;
        }

        /// <summary>The same network, data and recipe, trained by a plain TorchSharp loop with no ML.NET in between.</summary>
        private static BenchRow TrainBare(ImageClassifierArchitecture architecture, bool quick, int trainRows)
        {
            ImageClassifierTrainer.Options recipe = Recipe(architecture, quick);
            int epochs = quick ? 1 : architecture is ImageClassifierArchitecture.VggSmall or ImageClassifierArchitecture.ResNet20 ? 1 : 3;
            string directory = FashionMnist.DataDirectory;
            IdxImages images = IdxReader.ReadImages(Path.Combine(directory, FashionMnist.TrainImagesFileName), trainRows);
            byte[] labels = IdxReader.ReadLabels(Path.Combine(directory, FashionMnist.TrainLabelsFileName), trainRows);

            torch.random.manual_seed(1);
            using Tensor x = tensor(images.Pixels.Select(p => p / 255f).ToArray()).reshape(images.Count, 1, images.Height, images.Width);
            using Tensor y = tensor(labels.Select(l => (long)l).ToArray());
            float mean = x.mean().item<float>(), std = x.std().item<float>();
            var definition = Architectures.Create(architecture, new ImageShape(1, images.Height, images.Width), 10,
                new NormalizeLayer { Name = "normalize", Mean = new[] { mean }, Std = new[] { std } });
            using ClassifierNetwork network = ClassifierNetwork.Create(definition);
            var parameters = network.NamedParameters().Select(p => p.Parameter).ToList();
            using var optimizer = optim.SGD(parameters, recipe.LearningRate, recipe.Momentum, 0, recipe.WeightDecay, recipe.Nesterov);
            using var generator = new Generator(1);

            long count = images.Count, batchSize = recipe.BatchSize, batches = count / batchSize;
            var throughputs = new List<double>();
            // The first batches allocate and tune kernels (2-10x slower); the trainer's median over many epochs hides
            // them, so the bare loop's single timed epoch starts after a short warm-up.
            const int warmUpBatches = 5;
            for (int epoch = 0; epoch < epochs; epoch++)
            {
                network.Module.train();
                var clock = Stopwatch.StartNew();
                using Tensor order = randperm(count, generator: generator);
                for (long b = epoch == 0 ? -warmUpBatches : 0; b < batches; b++)
                {
                    if (b == 0)
                        clock.Restart();
                    using var scope = NewDisposeScope();
                    Tensor index = order.narrow(0, Math.Max(b, 0) * batchSize, batchSize);
                    Tensor input = x.index_select(0, index);
                    if (recipe.RandomCropPadding > 0 || recipe.HorizontalFlip)
                        input = Augmentation.RandomCropAndFlip(input, recipe.RandomCropPadding, recipe.HorizontalFlip, generator);
                    optimizer.zero_grad();
                    Tensor loss = nn.functional.cross_entropy(network.Forward(input), y.index_select(0, index));
                    loss.backward();
                    optimizer.step();
                }
                double rate = batches * batchSize / clock.Elapsed.TotalSeconds;
                throughputs.Add(rate);
                Console.WriteLine($"  bare epoch {epoch + 1}/{epochs}: {rate:F0} images/s");
            }
            return new BenchRow
            {
                Scenario = "train",
                Model = Architectures.ShortName(architecture),
                Method = "bare-torchsharp",
                Quick = quick,
                Epochs = epochs,
                ImagesPerSecond = InferenceTiming.Median(throughputs.ToArray()),
            };
        }

        /// <summary>Loads the zip in a fresh process and checks that every prediction is the same.</summary>
        private static bool VerifyLoadInNewProcess(string zip, string predictions, int testRows)
        {
            string host = Environment.ProcessPath!;
            var start = new ProcessStartInfo(host) { UseShellExecute = false };
            if (Path.GetFileNameWithoutExtension(host) == "dotnet")
                start.ArgumentList.Add(typeof(TrainScenario).Assembly.Location);
            foreach (string argument in new[] { "verify-load", zip, predictions, testRows.ToString(System.Globalization.CultureInfo.InvariantCulture) })
                start.ArgumentList.Add(argument);
            using Process process = Process.Start(start)!;
            process.WaitForExit();
            return process.ExitCode == 0;
        }

        /// <summary>The child side of <see cref="VerifyLoadInNewProcess"/>.</summary>
        public static int VerifyLoad(string zip, string predictionsPath, int testRows)
        {
            var ml = new MLContext(seed: 7);
            ITransformer model = ml.Model.Load(zip, out _);
            string[] expected = File.ReadAllLines(predictionsPath);
            string[] actual = model.Transform(FashionMnist.LoadTest(ml, testRows)).GetColumn<string>("PredictedLabel").ToArray();
            int differing = expected.Zip(actual).Count(p => p.First != p.Second);
            bool identical = expected.Length == actual.Length && differing == 0;
            Console.WriteLine($"  reloaded in a new process: {actual.Length} predictions, {differing} differ from the saved model's");
            (model as IDisposable)?.Dispose();
            return identical ? 0 : 1;
        }
    }
}
