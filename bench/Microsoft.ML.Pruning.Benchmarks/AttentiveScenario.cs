// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Reports;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Scenario <c>attentive</c>: the dense models of the <c>train</c> recipe (cached with the <c>channels</c> scenario's
    /// models), pruned to 10%, 5% and 2% of their Linear and Conv2d weights by top-down attentive pruning, by magnitude and by
    /// layer-wise OBS, each with its default allocation (global) and the same retraining with the masks fixed (none, and one
    /// epoch of SGD at the <c>lobs</c> scenario's rate, or <c>--retrain-epochs N</c> with the rate cosine to zero over them; attentive pruning on 2,000 calibration images, <c>--calibration</c>); test accuracy, sizes, the top-down pass's images per second, and the
    /// speed of the pruned models on the compact runtime against the dense one, timed in turns in the same run. Pruned models
    /// are cached in artifacts/bench/models, so a rerun only re-times them.
    /// </summary>
    /// <remarks>
    /// Variants of attentive pruning: <c>--score mass|hits|flow|massmagnitude|boostedmagnitude</c>, <c>--allocation global|uniform</c>,
    /// <c>--layer-budgets magnitude</c> (<see cref="AttentionBudgets.Magnitude"/>: each layer keeps as many weights as
    /// magnitude pruning's global allocation gives it; the attention only ranks within layers). <c>--rounds R</c>:
    /// attentive and magnitude pruning in R prune/retrain rounds of N epochs each, L-OBS once with R·N epochs, so that
    /// every method retrains as long; rows are compared at the same total of retraining epochs (<c>finetune_epochs</c>).
    /// </remarks>
    internal static class AttentiveScenario
    {
        private static readonly string[] s_methods = { "attentive", "magnitude", "lobs" };

        public static int Run(string[] args)
        {
            bool quick = args.Contains("--quick");
            var architectures = BenchArgs.Models(args, "lenet300,lenet5", name => $"unknown model '{name}'; use lenet300, lenet5, vgg-small, resnet20",
                ImageClassifierArchitecture.LeNet300100, ImageClassifierArchitecture.LeNet5, ImageClassifierArchitecture.VggSmall, ImageClassifierArchitecture.ResNet20);
            int trainRows = int.Parse(BenchArgs.List(args, "--train-rows", quick ? "4000" : "60000")[0], CultureInfo.InvariantCulture), testRows = quick ? 1000 : 10000;
            int? denseEpochsOption = args.Contains("--epochs") ? int.Parse(BenchArgs.List(args, "--epochs", "")[0], CultureInfo.InvariantCulture) : null;
            // Models trained on other data or for another length are cached under their own names.
            string tag = (denseEpochsOption is int de ? $"-e{de}" : "") + (trainRows != (quick ? 4000 : 60000) ? $"-r{trainRows}" : "");
            double[] fractions = BenchArgs.List(args, "--kept", "0.1,0.05,0.02").Select(f => double.Parse(f, CultureInfo.InvariantCulture)).ToArray();
            string[] methods = BenchArgs.List(args, "--methods", string.Join(",", s_methods));
            // Retraining with the masks fixed: none, and this many epochs (one by default).
            int retrainEpochs = BenchArgs.Option(args, "--retrain-epochs", 1);
            if (retrainEpochs < 1)
                throw new ArgumentException($"--retrain-epochs must be at least 1; got {retrainEpochs}");
            // Prune/retrain rounds of attentive and magnitude pruning (each round retrains as long as the one-shot form does).
            int rounds = BenchArgs.Option(args, "--rounds", 1);
            if (rounds < 1)
                throw new ArgumentException($"--rounds must be at least 1; got {rounds}");
            // Another seed changes what pruning and retraining draw (calibration images, batch order, augmentation), not the dense model.
            int seed = BenchArgs.Option(args, "--seed", 1);
            bool skipTiming = args.Contains("--skip-timing");
            int calibration = int.Parse(BenchArgs.List(args, "--calibration", quick ? "1000" : "2000")[0], CultureInfo.InvariantCulture);
            AttentionScore score = Enum.Parse<AttentionScore>(BenchArgs.List(args, "--score", nameof(AttentionScore.Mass))[0], ignoreCase: true);
            // Attentive pruning with magnitude pruning's per-layer budgets (its global allocation at the same kept fraction):
            // the attention then only ranks connections within each layer.
            string budgetsOption = BenchArgs.List(args, "--layer-budgets", "own")[0];
            if (budgetsOption is not ("own" or "magnitude"))
                throw new ArgumentException($"unknown --layer-budgets '{budgetsOption}'; use own (the pruner's allocation) or magnitude");
            bool magnitudeBudgets = budgetsOption == "magnitude";
            LayerAllocation allocation = Enum.Parse<LayerAllocation>(BenchArgs.List(args, "--allocation", nameof(LayerAllocation.Global))[0], ignoreCase: true);
            foreach (string method in methods.Where(m => !s_methods.Contains(m)))
                throw new ArgumentException($"unknown method '{method}'; use {string.Join(", ", s_methods)}");
            string directory = Path.Combine("artifacts", "bench", "models");
            Directory.CreateDirectory(directory);

            var rows = new List<BenchRow>();
            foreach (ImageClassifierArchitecture architecture in architectures)
            {
                string model = Architectures.ShortName(architecture);
                var ml = new MLContext(seed: 1);
                IDataView train = ml.Data.Cache(FashionMnist.LoadTrain(ml, trainRows));
                IDataView test = ml.Data.Cache(FashionMnist.LoadTest(ml, testRows));
                ITransformer dense = ChannelsScenario.DenseModel(ml, train, architecture, slimming: false, quick, denseEpochsOption, tag);
                MLContext pruningContext = seed == 1 ? ml : new MLContext(seed);
                int denseEpochs = denseEpochsOption ?? TrainScenario.Recipe(architecture, quick).Epochs;
                // One epoch at the lobs scenario's rate for the LeNets; the VGG at its training rate.
                double learningRate = architecture == ImageClassifierArchitecture.VggSmall ? 0.05 : 0.1;
                var timed = new List<(BenchRow Row, ClassifierNetwork Network)>();

                BenchRow Measure(ITransformer transformer, string method, double? fraction, string retrain)
                {
                    MulticlassClassificationMetrics metrics = ml.MulticlassClassification.Evaluate(transformer.Transform(test));
                    ImageClassificationTransformer classifier = ((IEnumerable<ITransformer>)transformer).OfType<ImageClassificationTransformer>().Single();
                    ModelSummary summary = classifier.GetSummary();
                    string zip = Path.Combine(directory, FormattableString.Invariant(
                        $"attentive-result-{model}{tag}-{method}{(fraction is double f ? $"-{f:0.00}" : "")}-{retrain}{(quick ? "-quick" : "")}.zip"));
                    ml.Model.Save(transformer, train.Schema, zip);
                    return new BenchRow
                    {
                        Scenario = "attentive",
                        Model = model,
                        Method = method,
                        Quick = quick,
                        Accuracy = metrics.MicroAccuracy,
                        Params = summary.Parameters,
                        NonZeroParams = summary.NonZeroParameters,
                        Macs = summary.NonZeroMultiplyAccumulates,
                        ZipBytes = new FileInfo(zip).Length,
                        KeptFraction = fraction ?? 1,
                        Retrain = retrain,
                        Backend = "compact",
                    };
                }

                Console.WriteLine($"== {model}: dense");
                BenchRow denseRow = Measure(dense, "dense", null, "none");
                denseRow.Epochs = denseEpochs;
                rows.Add(denseRow);
                timed.Add((denseRow, ((IEnumerable<ITransformer>)dense).OfType<ImageClassificationTransformer>().Single().Network));
                Console.WriteLine(FormattableString.Invariant($"  dense: accuracy {denseRow.Accuracy:P2}"));

                var results = new List<ITransformer>();
                foreach (double fraction in fractions)
                {
                    foreach (string method in methods)
                    {
                        foreach (int epochs in new[] { 0, retrainEpochs })
                        {
                            // L-OBS prunes once: with rounds it retrains as long as the others do in all their rounds.
                            int methodRounds = epochs > 0 && method != "lobs" ? rounds : 1;
                            int methodEpochs = method == "lobs" ? epochs * rounds : epochs;
                            string retrain = (methodEpochs == 0 ? "none" : methodEpochs == 1 ? "1epoch" : $"{methodEpochs}epochs") + (methodRounds > 1 ? $"-{methodRounds}rounds" : "");
                            string cached = Path.Combine(directory, FormattableString.Invariant(
                                $"attentive-pruned-{model}{tag}-{method}-{fraction:0.00}-{retrain}{(method == "attentive" ? $"-c{calibration}{(score == AttentionScore.Mass ? "" : "-" + score.ToString().ToLowerInvariant())}{(allocation == LayerAllocation.Global ? "" : "-" + allocation.ToString().ToLowerInvariant())}{(magnitudeBudgets ? "-mbudgets" : "")}" : "")}{(seed != 1 ? $"-seed{seed}" : "")}{(quick ? "-quick" : "")}.zip"));
                            ITransformer? pruned;
                            double pruneSeconds, fitSeconds;
                            double? imagesPerSecond;
                            if (ModelCache.TryLoad(ml, cached, out pruned, out double?[] times))
                            {
                                pruneSeconds = times[0]!.Value;
                                fitSeconds = times[1]!.Value;
                                imagesPerSecond = times[2];
                            }
                            else
                            {
                                PruningReport? report = null;
                                var clock = Stopwatch.StartNew();
                                IEstimator<ITransformer> pruner = method switch
                                {
                                    "attentive" => pruningContext.Transforms.PruneAttentive(dense, new AttentivePruner.Options
                                    {
                                        KeptFraction = fraction, CalibrationImages = calibration, Score = score, Allocation = allocation, RetrainEpochs = methodEpochs, LearningRate = learningRate, PruningRounds = methodRounds,
                                        LayerBudgets = magnitudeBudgets ? AttentionBudgets.Magnitude : AttentionBudgets.Attention,
                                        PruningCompleted = r => report = r,
                                    }),
                                    "magnitude" => pruningContext.Transforms.PruneMagnitude(dense, new MagnitudePruner.Options
                                    {
                                        KeptFraction = fraction, RetrainEpochs = methodEpochs, LearningRate = learningRate, PruningRounds = methodRounds, PruningCompleted = r => report = r,
                                    }),
                                    _ => pruningContext.Transforms.PruneLayerwiseObs(dense, new LayerwiseObsPruner.Options
                                    {
                                        KeptFraction = fraction, RetrainEpochs = methodEpochs, LearningRate = learningRate, PruningCompleted = r => report = r,
                                    }),
                                };
                                pruned = pruner.Fit(train);
                                fitSeconds = clock.Elapsed.TotalSeconds;
                                pruneSeconds = report!.PruningTime.TotalSeconds;
                                imagesPerSecond = report.CalibrationImagesPerSecond;
                                if (epochs == 0)
                                    Console.WriteLine("    " + report.ToString().Replace("\n", "\n    ", StringComparison.Ordinal));
                                ModelCache.Save(ml, pruned, train.Schema, cached, pruneSeconds, fitSeconds, imagesPerSecond);
                            }
                            BenchRow row = Measure(pruned, method, fraction, retrain);
                            row.Epochs = methodEpochs * methodRounds;
                            row.FinetuneEpochs = methodEpochs * methodRounds;
                            row.PruneSeconds = pruneSeconds;
                            row.TrainSeconds = fitSeconds;
                            row.TopdownImagesPerS = method == "attentive" ? imagesPerSecond : null;
                            row.Criterion = method == "attentive" ? score.ToString().ToLowerInvariant() + (allocation == LayerAllocation.Global ? "" : "-" + allocation.ToString().ToLowerInvariant()) + (magnitudeBudgets ? "-magnitude-budgets" : "") : null;
                            row.MacsRatio = (double)denseRow.Macs! / row.Macs;
                            row.Seed = seed != 1 ? seed : null;
                            row.KeptFraction = Math.Round(fraction, 4);
                            rows.Add(row);
                            Console.WriteLine(FormattableString.Invariant(
                                $"  {method} {fraction:P0} {retrain}: accuracy {row.Accuracy:P2}, prune {pruneSeconds:F2} s, fit {fitSeconds:F1} s{(row.TopdownImagesPerS is double ips ? $", top-down {ips:N0} images/s" : "")}"));
                            results.Add(pruned);
                            if (epochs > 0)
                                timed.Add((row, ((IEnumerable<ITransformer>)pruned).OfType<ImageClassificationTransformer>().Single().Network));
                        }
                    }
                }

                if (!skipTiming)
                {
                    Console.WriteLine($"== {model}: speed on the compact runtime, in turns");
                    TimeInTurns(timed, quick);
                }
                results.ForEach(ModelCache.DisposeAll);
                ModelCache.DisposeAll(dense);
            }

            Table.Print(
                new[] { "model", "method", "kept", "retrain", "test acc", "Δ vs dense", "vs best other", "non-zero", "MACs ≠ 0", "zip bytes", "b1 ms", "b1 ×", "b256 img/s", "b256 ×", "prune s", "top-down img/s" },
                rows.Select(r =>
                {
                    double? denseAccuracy = rows.First(d => d.Model == r.Model && d.Method == "dense").Accuracy;
                    double? bestOther = r.Method == "attentive"
                        ? rows.Where(o => o.Model == r.Model && o.FinetuneEpochs == r.FinetuneEpochs && o.KeptFraction == r.KeptFraction && o.Seed == r.Seed && o.Method is "magnitude" or "lobs")
                            .Select(o => o.Accuracy).DefaultIfEmpty(null).Max()
                        : null;
                    return (IReadOnlyList<string>)new[]
                    {
                        r.Model, r.Method, Table.Format(r.KeptFraction * 100, "0.#") + "%", r.Retrain ?? "-", Table.Format(r.Accuracy * 100, "0.00"),
                        Table.Format((r.Accuracy - denseAccuracy) * 100, "+0.00;-0.00;0.00"), Table.Format((r.Accuracy - bestOther) * 100, "+0.00;-0.00;0.00"),
                        Table.Format(r.NonZeroParams), Table.Format(r.Macs), Table.Format(r.ZipBytes),
                        Table.Format(r.LatencyB1Ms, "0.000"), Table.Format(r.SpeedupB1, "0.00"), Table.Format(r.ThroughputB256, "0"), Table.Format(r.SpeedupB256, "0.00"),
                        Table.Format(r.PruneSeconds, "0.00"), Table.Format(r.TopdownImagesPerS, "0"),
                    };
                }));
            Console.WriteLine("wrote " + BenchOutput.Write("attentive", rows));
            return 0;
        }

        /// <summary>
        /// Batch-1 latency and batch-256 throughput of every model on the compact runtime, taken in turns so that the machine's
        /// slow stretches hit every model alike; speedups are per turn against the first (dense) model, then the median.
        /// </summary>
        private static void TimeInTurns(List<(BenchRow Row, ClassifierNetwork Network)> models, bool quick)
        {
            var (single, batch) = InferenceTiming.Inputs(models[0].Network.Definition.Input);
            int turns = quick ? 3 : 5, latencyCalls = quick ? 20 : 60, batchCalls = quick ? 1 : 3;
            var latency = models.Select(_ => new List<double>()).ToArray();
            var throughput = models.Select(_ => new List<double>()).ToArray();
            for (int turn = -1; turn < turns; turn++)
            {
                for (int m = 0; m < models.Count; m++)
                {
                    ClassifierNetwork network = models[m].Network;
                    for (int i = 0; i < 3; i++)
                        InferenceTiming.Time(network, single);
                    double b1 = InferenceTiming.Median(Enumerable.Range(0, latencyCalls).Select(_ => InferenceTiming.Time(network, single)).ToArray());
                    InferenceTiming.Time(network, batch);
                    double b256 = InferenceTiming.Median(Enumerable.Range(0, batchCalls).Select(_ => 256 / (InferenceTiming.Time(network, batch) / 1000)).ToArray());
                    if (turn < 0)
                        continue; // warm-up turn
                    latency[m].Add(b1);
                    throughput[m].Add(b256);
                }
            }
            for (int m = 0; m < models.Count; m++)
            {
                BenchRow row = models[m].Row;
                row.LatencyB1Ms = InferenceTiming.Median(latency[m].ToArray());
                row.ThroughputB256 = InferenceTiming.Median(throughput[m].ToArray());
                row.SpeedupB1 = InferenceTiming.Median(latency[m].Select((v, i) => latency[0][i] / v).ToArray());
                row.SpeedupB256 = InferenceTiming.Median(throughput[m].Select((v, i) => v / throughput[0][i]).ToArray());
            }
        }
    }
}
