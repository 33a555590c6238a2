// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Reports;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Scenario <c>synaptic</c>: the small VGG and ResNet-20 of the <c>train</c> recipe (the dense models of <c>channels</c>),
    /// with 90% and 95% of their convolutions' connections pruned by Synaptic Strength (sparsity training, then pruning) and
    /// by kernel L1 norm, both fine-tuned alike; accuracy, kept connections per layer, size, and the speed of the dense and
    /// kernel-sparse models timed interleaved in one run on the compact runtime and on libtorch.
    /// </summary>
    internal static class SynapticScenario
    {
        /// <summary>Fine-tuning (and sparsity-training) learning rate, cosine to zero: the recipe's rate for the VGG.</summary>
        private const double LearningRate = 0.05;

        private static readonly string[] s_criteria = { "synaptic", "kernel-norm" };

        public static int Run(string[] args)
        {
            bool quick = args.Contains("--quick");
            var architectures = BenchArgs.Models(args, "vgg-small,resnet20",
                name => $"unknown model '{name}'; the synaptic scenario runs vgg-small and resnet20",
                ImageClassifierArchitecture.VggSmall, ImageClassifierArchitecture.ResNet20);
            int trainRows = BenchArgs.Option(args, "--train-rows", quick ? 4000 : 60000), testRows = quick ? 1000 : 10000;
            int fineTuneEpochs = BenchArgs.Option(args, "--finetune-epochs", quick ? 1 : 5);
            int sparsityEpochs = BenchArgs.Option(args, "--sparsity-epochs", quick ? 1 : new SynapticStrengthPruner.Options().SparsityEpochs);
            double lambda = double.Parse(BenchArgs.List(args, "--lambda", new SynapticStrengthPruner.Options().Lambda.ToString("R", CultureInfo.InvariantCulture))[0], CultureInfo.InvariantCulture);
            string allocationName = BenchArgs.List(args, "--allocation", new SynapticStrengthPruner.Options().Allocation.ToString().ToLowerInvariant())[0];
            LayerAllocation allocation = allocationName switch
            {
                "uniform" => LayerAllocation.Uniform,
                "global" => LayerAllocation.Global,
                _ => throw new ArgumentException($"--allocation must be uniform or global; got '{allocationName}'"),
            };
            double[] prunedPercents = BenchArgs.List(args, "--pruned", "90,95").Select(p => double.Parse(p, CultureInfo.InvariantCulture)).ToArray();
            string[] criteria = BenchArgs.List(args, "--criteria", "synaptic,kernel-norm");
            foreach (string criterion in criteria.Where(c => !s_criteria.Contains(c)))
                throw new ArgumentException($"unknown criterion '{criterion}'; use {string.Join(", ", s_criteria)}");
            int seed = BenchArgs.Option(args, "--seed", 1);
            // Fewer dense epochs and more sparsity epochs come close to the paper's other form, sparsity training from scratch.
            int? denseEpochsOption = BenchArgs.Option(args, "--dense-epochs") is string d ? int.Parse(d, CultureInfo.InvariantCulture) : null;
            if (denseEpochsOption < 1)
                throw new ArgumentException($"--dense-epochs must be at least 1; got {denseEpochsOption}");
            bool skipTiming = args.Contains("--skip-timing");
            string suffix = FormattableString.Invariant($"ft{fineTuneEpochs}{(allocation == LayerAllocation.Uniform ? "-uniform" : "")}{(trainRows != (quick ? 4000 : 60000) ? "-rows" + trainRows : "")}{(seed != 1 ? "-seed" + seed : "")}{(denseEpochsOption is int de ? "-dense" + de : "")}{(quick ? "-quick" : "")}");

            var rows = new List<BenchRow>();
            foreach (ImageClassifierArchitecture architecture in architectures)
            {
                string model = Architectures.ShortName(architecture);
                var ml = new MLContext(seed: 1);
                IDataView train = ml.Data.Cache(FashionMnist.LoadTrain(ml, trainRows));
                IDataView test = ml.Data.Cache(FashionMnist.LoadTest(ml, testRows));
                ITransformer dense = ChannelsScenario.DenseModel(ml, train, architecture, slimming: false, quick,
                    denseEpochsOption, denseEpochsOption is int e ? $"-{e}epochs" : "");
                // Another seed changes what pruning and fine-tuning draw (batch order, augmentation), not the dense model.
                var pruningContext = seed == 1 ? ml : new MLContext(seed);
                int denseEpochs = denseEpochsOption ?? TrainScenario.Recipe(architecture, quick).Epochs;
                NetworkDefinition denseDefinition = dense.GetImageClassifier().Network.Definition;
                var pruned = SynapticStrengthPruner.PrunedLayers(denseDefinition);
                var denseConnections = denseDefinition.Flatten().Where(l => pruned.Contains(l.Path))
                    .ToDictionary(l => l.Path, l => (long)((Conv2dLayer)l.Layer).InChannels * ((Conv2dLayer)l.Layer).OutChannels, StringComparer.Ordinal);

                var measured = new List<(BenchRow Row, ClassifierNetwork Network, OnnxRuntimeScorer? Onnx)>();
                BenchRow Measure(ITransformer transformer, string method, string? criterion, double? target, PruningReport? report, double? seconds)
                {
                    var metrics = ml.MulticlassClassification.Evaluate(transformer.Transform(test));
                    string zip = Path.Combine("artifacts", "bench", "models",
                        FormattableString.Invariant($"synaptic-result-{model}-{method}{(criterion is null ? "" : "-" + criterion)}{(target is double t ? "-" + t + "pct" : "")}-{suffix}.zip"));
                    ml.Model.Save(transformer, train.Schema, zip);
                    ImageClassificationTransformer classifier = transformer.GetImageClassifier();
                    ModelSummary summary = classifier.GetSummary();
                    var layers = new Dictionary<string, double>(StringComparer.Ordinal);
                    var current = classifier.Network.Definition.Flatten().ToDictionary(l => l.Path, l => l.Layer, StringComparer.Ordinal);
                    foreach (var (path, all) in denseConnections)
                    {
                        long kept = current[path] switch
                        {
                            KernelSparseConv2dLayer k => k.Connections,
                            KernelLayerDefinition k => (long)k.InChannels * k.OutChannels,
                            _ => 0,
                        };
                        layers[path] = Math.Round((double)kept / all, 5);
                    }
                    var row = new BenchRow
                    {
                        Scenario = "synaptic",
                        Model = model,
                        Method = method,
                        Quick = quick,
                        Epochs = denseEpochs,
                        Accuracy = metrics.MicroAccuracy,
                        Params = summary.Parameters,
                        NonZeroParams = summary.NonZeroParameters,
                        Macs = summary.MultiplyAccumulates,
                        ZipBytes = new FileInfo(zip).Length,
                        Criterion = criterion,
                        TargetKeptConnections = target is double p ? Math.Round(1 - p / 100, 6) : null,
                        KeptConnections = Math.Round((double)denseConnections.Sum(c => (long)Math.Round(layers[c.Key] * c.Value)) / denseConnections.Values.Sum(), 5),
                        LayerKeptConnections = layers,
                        FinetuneEpochs = report is null ? null : fineTuneEpochs,
                        SparsityEpochs = criterion == "synaptic" ? sparsityEpochs : null,
                        Lambda = criterion == "synaptic" ? lambda : null,
                        PruneSeconds = report?.PruningTime.TotalSeconds,
                        TrainSeconds = seconds,
                        Seed = seed != 1 && criterion is not null ? seed : null,
                        Allocation = criterion is null ? null : allocationName,
                    };
                    Console.WriteLine(FormattableString.Invariant(
                        $"  {method} {criterion} {target}: accuracy {row.Accuracy:P2}, kept connections {row.KeptConnections:P2}, params {row.Params:N0}, MACs {row.Macs:N0}, zip {row.ZipBytes:N0} B"));
                    Console.WriteLine("  kept per layer: " + string.Join(", ", layers.Select(l => FormattableString.Invariant($"{l.Key} {l.Value:P1}"))));
                    if (report is not null)
                        Console.WriteLine(report);
                    measured.Add((row, classifier.Network, null));
                    return row;
                }

                Console.WriteLine($"== {model}: dense model");
                BenchRow denseRow = Measure(dense, "dense", null, null, null, null);
                foreach (double percent in prunedPercents)
                {
                    foreach (string name in criteria)
                    {
                        Console.WriteLine(FormattableString.Invariant($"== {model}: {name}, {percent}% of the connections pruned, {fineTuneEpochs} fine-tuning epochs"));
                        // A model pruned by an earlier run with the same settings is reused (with its timings).
                        string cached = Path.Combine("artifacts", "bench", "models", FormattableString.Invariant(
                            $"synaptic-pruned-{model}-{name}-{percent}pct{(name == "synaptic" ? $"-se{sparsityEpochs}-l{lambda:R}" : "")}-{suffix}.zip"));
                        var (result, report, seconds) = ModelCache.LoadOrPrune(ml, cached, name, train, onReport =>
                            pruningContext.Transforms.PruneSynapticStrength(dense, new SynapticStrengthPruner.Options
                            {
                                Criterion = name == "synaptic" ? KernelCriterion.SynapticStrength : KernelCriterion.KernelNorm,
                                PrunedConnectionFraction = percent / 100,
                                SparsityEpochs = sparsityEpochs,
                                Lambda = lambda,
                                Allocation = allocation,
                                RetrainEpochs = fineTuneEpochs,
                                LearningRate = LearningRate,
                                PruningCompleted = onReport,
                            }));
                        Measure(result, "kernels", name, percent, report, seconds);
                    }
                }

                if (skipTiming)
                {
                    rows.AddRange(measured.Select(m => m.Row));
                    continue;
                }
                Console.WriteLine($"== {model}: speed of every model on both runtimes, interleaved");
                rows.AddRange(ChannelsScenario.TimeInterleaved(measured, denseRow, quick));
            }

            Table.Print(
                new[] { "model", "criterion", "pruned %", "backend", "test acc", "Δ vs dense", "kept conn.", "params", "MACs", "MACs ÷", "zip bytes", "b1 ms", "b1 ×", "b256 img/s", "b256 ×" },
                rows.Select(r =>
                {
                    double? denseAccuracy = rows.First(d => d.Model == r.Model && d.Method == "dense").Accuracy;
                    return (IReadOnlyList<string>)new[]
                    {
                        r.Model, r.Criterion ?? "dense", Table.Format(r.TargetKeptConnections is double k ? (1 - k) * 100 : null, "0.#"), r.Backend ?? "-",
                        Table.Format(r.Accuracy * 100, "0.00"), Table.Format((r.Accuracy - denseAccuracy) * 100, "+0.00;-0.00;0.00"),
                        Table.Format(r.KeptConnections, "0.000"), Table.Format(r.Params), Table.Format(r.Macs), Table.Format(r.MacsRatio, "0.00"), Table.Format(r.ZipBytes),
                        Table.Format(r.LatencyB1Ms, "0.000"), Table.Format(r.SpeedupB1, "0.00"), Table.Format(r.ThroughputB256, "0"), Table.Format(r.SpeedupB256, "0.00"),
                    };
                }));
            Console.WriteLine("wrote " + BenchOutput.Write("synaptic", rows));
            return 0;
        }
    }
}
