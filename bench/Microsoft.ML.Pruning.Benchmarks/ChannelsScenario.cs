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
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Transforms;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Scenarios <c>channels</c> and <c>dcp</c>: the small VGG and ResNet-20 trained with the <c>train</c> recipe (and, for
    /// network slimming, with its batch-norm scale penalty), pruned to 2× and 4× fewer multiply-accumulates by L1-filter,
    /// slimming and random channel selection (<c>channels</c>), or to 2× by discrimination-aware pruning against Random-DCP
    /// and those baselines (<c>dcp</c>), each fine-tuned with the same budget; accuracy, size, and the speed of dense and
    /// pruned models measured interleaved in one run on the compact runtime, on libtorch, and exported to ONNX on ONNX Runtime.
    /// </summary>
    internal static class ChannelsScenario
    {
        /// <summary>The slimming penalty λ of the sparsity-trained models (the paper's VGG value).</summary>
        internal const double SlimmingPenalty = 1e-4;

        /// <summary>Fine-tuning learning rate (cosine to zero), the recipe's rate for the VGG.</summary>
        private const double FineTuneLearningRate = 0.05;

        /// <summary>The criteria of discrimination-aware pruning, next to <see cref="ChannelCriterion"/>'s names.</summary>
        private static readonly string[] s_criteria = { "l1", "bn-scale", "random", "dcp", "random-dcp", "dcp-adapt" };

        /// <summary>DCP-Adapt's ε (the paper's smallest, 2.86× fewer FLOPs on its VGG): <c>--adapt-epsilon</c>.</summary>
        private const double AdaptiveEpsilon = 0.001;

        /// <summary>Runs scenario <paramref name="scenario"/>: <c>channels</c> (the channel baselines at 2× and 4×) or
        /// <c>dcp</c> (discrimination-aware pruning against Random-DCP and the baselines at 2×).</summary>
        public static int Run(string[] args, string scenario = "channels")
        {
            bool quick = args.Contains("--quick");
            bool dcp = scenario == "dcp";
            var architectures = BenchArgs.Models(args, "vgg-small,resnet20",
                name => $"unknown model '{name}'; the channels scenario runs vgg-small and resnet20",
                ImageClassifierArchitecture.VggSmall, ImageClassifierArchitecture.ResNet20);
            int trainRows = quick ? 4000 : 60000, testRows = quick ? 1000 : 10000;
            int fineTuneEpochs = BenchArgs.Option(args, "--finetune-epochs", quick ? 1 : 5);
            double[] targets = BenchArgs.List(args, "--targets", dcp ? "2" : "2,4").Select(t => double.Parse(t, CultureInfo.InvariantCulture)).ToArray();
            string[] criteria = BenchArgs.List(args, "--criteria", dcp ? "dcp,random-dcp,l1,bn-scale,dcp-adapt" : "l1,bn-scale,random");
            double adaptEpsilon = double.Parse(BenchArgs.List(args, "--adapt-epsilon", AdaptiveEpsilon.ToString(CultureInfo.InvariantCulture))[0], CultureInfo.InvariantCulture);
            foreach (string criterion in criteria.Where(c => !s_criteria.Contains(c)))
                throw new ArgumentException($"unknown criterion '{criterion}'; use {string.Join(", ", s_criteria)}");

            var rows = new List<BenchRow>();
            foreach (ImageClassifierArchitecture architecture in architectures)
            {
                string model = Architectures.ShortName(architecture);
                var ml = new MLContext(seed: 1);
                IDataView train = ml.Data.Cache(FashionMnist.LoadTrain(ml, trainRows));
                IDataView test = ml.Data.Cache(FashionMnist.LoadTest(ml, testRows));
                ITransformer dense = DenseModel(ml, train, architecture, slimming: false, quick);
                ITransformer? slim = criteria.Contains("bn-scale") ? DenseModel(ml, train, architecture, slimming: true, quick) : null;
                int denseEpochs = TrainScenario.Recipe(architecture, quick).Epochs;
                // Multiples of 16 keep the VGG's 3x3 convolutions off the padded path of libtorch's convolution (inputs of
                // more than 16 channels that are not a multiple of 16); ResNet-20's block channels (16 to 64) need 8 to be prunable at all.
                int roundTo = BenchArgs.Option(args, "--round-to", architecture == ImageClassifierArchitecture.VggSmall ? 16 : 8);

                var measured = new List<(BenchRow Row, ClassifierNetwork Network, OnnxRuntimeScorer? Onnx)>();
                BenchRow Measure(ITransformer transformer, string method, string? criterion, double? target, PruningReport? report, double? seconds)
                {
                    var metrics = ml.MulticlassClassification.Evaluate(transformer.Transform(test));
                    string zip = Path.Combine("artifacts", "bench", "models",
                        $"channels-result-{model}-{method}{(criterion is null ? "" : "-" + criterion)}{(target is double t ? "-" + t.ToString(CultureInfo.InvariantCulture) + "x" : "")}{(quick ? "-quick" : "")}.zip");
                    ml.Model.Save(transformer, train.Schema, zip);
                    ImageClassificationTransformer classifier = ((IEnumerable<ITransformer>)transformer).OfType<ImageClassificationTransformer>().Single();
                    ClassifierNetwork network = classifier.Network;
                    ModelSummary summary = classifier.GetSummary();
                    var row = new BenchRow
                    {
                        Scenario = scenario,
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
                        TargetMacsReduction = target,
                        FinetuneEpochs = report is null ? null : fineTuneEpochs,
                        PruneSeconds = report?.PruningTime.TotalSeconds,
                        SelectionSeconds = criterion is "dcp" or "random-dcp" or "dcp-adapt" ? report?.PruningTime.TotalSeconds : null,
                        TrainSeconds = seconds,
                    };
                    Console.WriteLine(FormattableString.Invariant(
                        $"  {method} {criterion} {target}: accuracy {row.Accuracy:P2}, params {row.Params:N0}, MACs {row.Macs:N0}, zip {row.ZipBytes:N0} B"));
                    if (report is not null)
                        Console.WriteLine(report);
                    measured.Add((row, network, OnnxRuntimeScorer.Export(ml, classifier, test)));
                    return row;
                }

                Console.WriteLine($"== {model}: dense models");
                BenchRow denseRow = Measure(dense, "dense", null, null, null, null);
                if (slim is not null)
                    Measure(slim, "dense-slimming", null, null, null, null);

                foreach (double target in targets)
                {
                    foreach (string name in criteria)
                    {
                        // DCP-Adapt has no target: each layer adds channels until the loss stops falling. Once, at the first target.
                        if (name == "dcp-adapt" && target != targets[0])
                            continue;
                        Console.WriteLine(name == "dcp-adapt"
                            ? FormattableString.Invariant($"== {model}: dcp-adapt, ε = {adaptEpsilon}, {fineTuneEpochs} fine-tuning epochs")
                            : $"== {model}: {name} at {target}x fewer MACs, {fineTuneEpochs} fine-tuning epochs");
                        // A model pruned by an earlier run with the same settings is reused (with its timings).
                        string cached = Path.Combine("artifacts", "bench", "models",
                            name == "dcp-adapt" ? FormattableString.Invariant($"channels-pruned-{model}-{name}-e{adaptEpsilon}-ft{fineTuneEpochs}{(quick ? "-quick" : "")}.zip")
                                : FormattableString.Invariant($"channels-pruned-{model}-{name}-{target}x-ft{fineTuneEpochs}-r{roundTo}{(quick ? "-quick" : "")}.zip"));
                        var (result, report, seconds) = ModelCache.LoadOrPrune(ml, cached, name, train, onReport => name is "dcp" or "random-dcp" or "dcp-adapt"
                                ? ml.Transforms.PruneDiscriminationAware(dense, new DiscriminationAwarePruner.Options
                                {
                                    MacsReduction = target,
                                    PruningRate = name == "dcp-adapt" ? 0 : null,
                                    AdaptiveEpsilon = name == "dcp-adapt" ? adaptEpsilon : null,
                                    RandomSelection = name == "random-dcp",
                                    SelectionImages = quick ? 256 : 2048,
                                    // The auxiliary classifiers' training is one of the fine-tuning epochs, so every method gets the same budget.
                                    AuxiliaryEpochs = name == "random-dcp" ? 0 : 1,
                                    RetrainEpochs = name == "random-dcp" ? fineTuneEpochs : Math.Max(1, fineTuneEpochs - 1),
                                    LearningRate = FineTuneLearningRate,
                                    PruningCompleted = onReport,
                                })
                                : ml.Transforms.PruneChannels(name == "bn-scale" ? slim! : dense, new ChannelPruner.Options
                                {
                                    Criterion = name switch { "bn-scale" => ChannelCriterion.BatchNormScale, "random" => ChannelCriterion.Random, _ => ChannelCriterion.L1Norm },
                                    MacsReduction = target,
                                    RoundChannelsTo = roundTo,
                                    // With its stages' widths kept, ResNet-20 reaches at most 3.3x fewer MACs (each block's
                                    // inner channels at 8): the baselines prune the widths too, as Torch-Pruning does.
                                    PruneResidualWidth = architecture == ImageClassifierArchitecture.ResNet20,
                                    RetrainEpochs = fineTuneEpochs,
                                    LearningRate = FineTuneLearningRate,
                                    PruningCompleted = onReport,
                                }));
                        Measure(result, "channels", name, name == "dcp-adapt" ? null : target, report, seconds);
                    }
                }

                Console.WriteLine($"== {model}: speed of every model on the compact runtime, libtorch and ONNX Runtime, interleaved");
                rows.AddRange(TimeInterleaved(measured, denseRow, quick));
                foreach (var m in measured)
                    m.Onnx?.Dispose();
            }

            Table.Print(
                new[] { "model", "method", "criterion", "target", "backend", "test acc", "Δ vs dense", "params", "MACs", "MACs ÷", "zip bytes", "b1 ms", "b1 ×", "b256 img/s", "b256 ×" },
                rows.Select(r =>
                {
                    double? denseAccuracy = rows.First(d => d.Model == r.Model && d.Method == "dense").Accuracy;
                    return (IReadOnlyList<string>)new[]
                    {
                        r.Model, r.Method, r.Criterion ?? "-", Table.Format(r.TargetMacsReduction, "0.#"), r.Backend ?? "-",
                        Table.Format(r.Accuracy * 100, "0.00"), Table.Format((r.Accuracy - denseAccuracy) * 100, "+0.00;-0.00;0.00"),
                        Table.Format(r.Params), Table.Format(r.Macs), Table.Format(r.MacsRatio, "0.00"), Table.Format(r.ZipBytes),
                        Table.Format(r.LatencyB1Ms, "0.000"), Table.Format(r.SpeedupB1, "0.00"), Table.Format(r.ThroughputB256, "0"), Table.Format(r.SpeedupB256, "0.00"),
                    };
                }));
            Console.WriteLine("wrote " + BenchOutput.Write(scenario, rows));
            return 0;
        }

        /// <summary>
        /// Batch-1 latency and batch-256 throughput of every model on the compact runtime, on libtorch and, when every model
        /// was exported, on ONNX Runtime: one runtime after the other, and within a runtime every model in turns so that the
        /// machine's slow stretches hit every model alike; speedups are per turn against the dense model on the same runtime,
        /// then the median. One row per model and runtime.
        /// </summary>
        internal static IEnumerable<BenchRow> TimeInterleaved(List<(BenchRow Row, ClassifierNetwork Network, OnnxRuntimeScorer? Onnx)> models,
            BenchRow dense, bool quick)
        {
            var (single, batch) = InferenceTiming.Inputs(models[0].Network.Definition.Input);
            var backends = new List<string> { "compact", "libtorch" };
            if (models.All(m => m.Onnx is not null))
                backends.Add("onnxruntime");
            int turns = quick ? 3 : 7, latencyCalls = quick ? 20 : 60, batchCalls = quick ? 1 : 3;
            var latency = new Dictionary<(int, string), List<double>>();
            var throughput = new Dictionary<(int, string), List<double>>();
            // One runtime at a time (its thread pools alone on the cores), every model in turns within it.
            foreach (string backend in backends)
            {
                InferenceTiming.Settle();
                for (int turn = -1; turn < turns; turn++)
                {
                    for (int m = 0; m < models.Count; m++)
                    {
                        var (_, network, onnx) = models[m];
                        network.Backend = backend == "libtorch" ? InferenceBackend.LibTorch : InferenceBackend.Compact;
                        double Time(float[] images) => onnx is not null && backend == "onnxruntime"
                            ? InferenceTiming.Time(onnx, images) : InferenceTiming.Time(network, images);
                        for (int i = 0; i < 3; i++)
                            Time(single);
                        double b1 = InferenceTiming.Median(Enumerable.Range(0, latencyCalls).Select(_ => Time(single)).ToArray());
                        Time(batch);
                        double b256 = InferenceTiming.Median(Enumerable.Range(0, batchCalls).Select(_ => 256 / (Time(batch) / 1000)).ToArray());
                        network.Backend = InferenceBackend.Compact;
                        if (turn < 0)
                            continue; // warm-up turn
                        (latency.TryGetValue((m, backend), out var l) ? l : latency[(m, backend)] = new List<double>()).Add(b1);
                        (throughput.TryGetValue((m, backend), out var t) ? t : throughput[(m, backend)] = new List<double>()).Add(b256);
                    }
                }
            }
            int denseIndex = models.FindIndex(m => ReferenceEquals(m.Row, dense));
            for (int m = 0; m < models.Count; m++)
            {
                foreach (string backend in backends)
                {
                    BenchRow source = models[m].Row;
                    var l = latency[(m, backend)];
                    var t = throughput[(m, backend)];
                    var dl = latency[(denseIndex, backend)];
                    var dt = throughput[(denseIndex, backend)];
                    BenchRow row = source.Copy();
                    row.Backend = backend;
                    row.MacsRatio = (double)dense.Macs! / source.Macs!;
                    row.LatencyB1Ms = InferenceTiming.Median(l.ToArray());
                    row.ThroughputB256 = InferenceTiming.Median(t.ToArray());
                    row.SpeedupB1 = InferenceTiming.Median(l.Select((v, i) => dl[i] / v).ToArray());
                    row.SpeedupB256 = InferenceTiming.Median(t.Select((v, i) => v / dt[i]).ToArray());
                    yield return row;
                }
            }
        }

        /// <summary>
        /// The trained model (<paramref name="slimming"/>: trained with the batch-norm scale penalty), from
        /// artifacts/bench/models when an earlier run saved it, else trained with the <c>train</c> recipe (or its first
        /// <paramref name="epochs"/> epochs' length, named by <paramref name="tag"/>) and saved there.
        /// </summary>
        internal static ITransformer DenseModel(MLContext ml, IDataView train, ImageClassifierArchitecture architecture, bool slimming, bool quick,
            int? epochs = null, string tag = "")
        {
            string directory = Path.Combine("artifacts", "bench", "models");
            Directory.CreateDirectory(directory);
            string zip = Path.Combine(directory, $"channels-{Architectures.ShortName(architecture)}-{(slimming ? "slimming" : "dense")}{tag}{(quick ? "-quick" : "")}.zip");
            if (File.Exists(zip))
            {
                Console.WriteLine($"== {Architectures.ShortName(architecture)} {(slimming ? "sparsity-trained" : "dense")}: loaded {zip}");
                return ml.Model.Load(zip, out _);
            }
            Console.WriteLine($"== {Architectures.ShortName(architecture)} {(slimming ? "sparsity-trained" : "dense")}: training");
            ImageClassifierTrainer.Options recipe = TrainScenario.Recipe(architecture, quick);
            if (epochs is int e)
                recipe.Epochs = e;
            if (slimming)
                recipe.BatchNormScaleL1 = SlimmingPenalty;
            recipe.EpochCompleted = metrics => Console.WriteLine("  " + metrics);
            var pipeline = ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
                .Append(ml.MulticlassClassification.Trainers.ImageClassifier(recipe))
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
            ITransformer model = pipeline.Fit(train);
            ml.Model.Save(model, train.Schema, zip);
            return model;
        }
    }
}
