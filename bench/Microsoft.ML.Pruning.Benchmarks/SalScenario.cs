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
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Pruners.ShiftAttention;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Transforms;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Scenario <c>sal</c>: the same architecture, seed, data and epochs with plain convolutions, fixed shift layers, and
    /// shift attention layers (per pair and shared) compacted to shift + pointwise; test accuracy, size, cost and the
    /// compact models' speed next to the convolution network's, timed interleaved in one process. With <c>--widths</c>,
    /// the same comparison at several channel widths: accuracy against stored parameters, as a table, JSON rows and a plot.
    /// </summary>
    /// <remarks>Options: <c>--quick</c>, <c>--models vgg-small,resnet20</c> (default vgg-small), <c>--methods</c> (a subset
    /// of shift, shift-attention, shift-attention-shared; conv always runs first), <c>--epochs N</c>
    /// (default 10, quick 1), <c>--temperature T_init,T_final</c> (default the trainer's), <c>--fine-tune N</c> epochs
    /// after hardening (default 0), <c>--train-rows N</c> and <c>--test-rows N</c> (default all, quick 2000 and 1000; a
    /// run on a subset, with another temperature or with fine-tuning writes its own file, e.g.
    /// <c>sal-temperature-0.15-60.json</c>, <c>sal-fine-tune-2.json</c>, <c>sal-subset.json</c>).
    /// <c>--widths 1,1.5,2,3</c> (channel multipliers, <see cref="ImageClassifierTrainer.Options.Width"/>) trains conv, shift and
    /// shift-attention, plus any <c>--methods</c>, at each width with the same seed, recipe and epochs (ratios and speedups
    /// against the conv network of the same width); it writes <c>sal-widths.json</c> (with the same suffixes as above), one row
    /// per model, method and width, and <c>sal-widths.png</c> next to it: test accuracy against stored parameters for every
    /// width in that file with this run's quick-ness and epochs, one line per method. After the table it prints the check
    /// against the width-1 conv network: the accuracy gap of each shift-attention width that stores no more parameters, and
    /// whether shift attention is at least as accurate as the fixed shifts at every width.</remarks>
    internal static class SalScenario
    {
        private const string Conv = "conv", Shift = "shift", Attention = "shift-attention", AttentionShared = "shift-attention-shared";

        private static readonly string[] s_methodOrder = { Conv, Shift, Attention, AttentionShared };

        private sealed class Trained : IDisposable
        {
            public required BenchRow Row { get; init; }
            public required ImageClassificationTransformer Classifier { get; init; }
            public required ModelSummary Summary { get; init; }
            public ModelSummary? Before { get; init; }

            /// <summary>Median wall time of a training epoch.</summary>
            public double EpochSeconds { get; init; }

            public void Dispose() => Classifier.Dispose();
        }

        public static int Run(string[] args)
        {
            bool quick = args.Contains("--quick");
            IReadOnlyList<ImageClassifierArchitecture> architectures = BenchArgs.Models(args, "vgg-small",
                name => $"sal runs vgg-small and resnet20; got '{name}'.", ImageClassifierArchitecture.VggSmall, ImageClassifierArchitecture.ResNet20);
            int epochs = BenchArgs.Option(args, "--epochs", quick ? 1 : 10);
            double[]? temperature = BenchArgs.Option(args, "--temperature")?.Split(',').Select(t => double.Parse(t, CultureInfo.InvariantCulture)).ToArray();
            int fineTune = BenchArgs.Option(args, "--fine-tune", 0);
            int trainRows = BenchArgs.Option(args, "--train-rows", quick ? 2000 : 60000);
            int testRows = BenchArgs.Option(args, "--test-rows", quick ? 1000 : 10000);
            bool subset = !quick && (trainRows < 60000 || testRows < 10000);
            double[]? widths = BenchArgs.Option(args, "--widths")?.Split(',').Select(ParseWidth).Distinct().ToArray();
            // The conv network is always trained first: every ratio and speedup is measured against it in the same run.
            // A widths run always has the per-pair shift attention and the fixed shifts; --methods adds to them there.
            string[]? requested = BenchArgs.Option(args, "--methods")?.Split(',');
            IEnumerable<string> chosen = widths is null
                ? requested ?? new[] { Shift, Attention, AttentionShared }
                : new[] { Shift, Attention }.Concat(requested ?? Array.Empty<string>());
            string[] methods = new[] { Conv }.Concat(chosen
                .Where(m => m != Conv)
                .Select(m => m is Shift or Attention or AttentionShared ? m : throw new ArgumentException(
                    $"unknown method '{m}'; use {Shift}, {Attention}, {AttentionShared} (the {Conv} reference always runs)")))
                .Distinct().OrderBy(m => Array.IndexOf(s_methodOrder, m)).ToArray();

            var rows = new List<BenchRow>();
            var epochSeconds = new Dictionary<BenchRow, double>();
            bool reloadOk = true;
            foreach (ImageClassifierArchitecture architecture in architectures)
            {
                foreach (double? width in widths?.Select(w => (double?)w) ?? new double?[] { null })
                {
                    var trained = new List<Trained>();
                    try
                    {
                        foreach (string method in methods)
                        {
                            string at = width is double w ? FormattableString.Invariant($" at width {w}") : "";
                            Console.WriteLine($"== {Architectures.ShortName(architecture)}: {method}{at}, {epochs} epochs");
                            trained.Add(Train(architecture, method, quick, epochs, temperature, fineTune, trainRows, testRows, width));
                            reloadOk &= trained[^1].Row.ReloadIdentical == true;
                        }
                        Compare(trained, quick);
                        rows.AddRange(trained.Select(t => t.Row));
                        foreach (Trained t in trained)
                            epochSeconds[t.Row] = t.EpochSeconds;
                        foreach (Trained t in trained.Where(t => t.Before is not null && width is null))
                        {
                            Console.WriteLine($"-- {t.Row.Model} {t.Row.Method}: trained network");
                            Console.WriteLine(t.Before);
                            Console.WriteLine($"-- {t.Row.Model} {t.Row.Method}: compact network");
                            Console.WriteLine(t.Summary);
                        }
                    }
                    finally
                    {
                        foreach (Trained t in trained)
                            t.Dispose();
                    }
                }
            }

            // Runs off the defaults write their own file, named after what differs, so they never replace the default
            // run's rows or each other's.
            string output = "sal"
                + (widths is null ? "" : "-widths")
                + (temperature is null ? "" : "-temperature-" + string.Join("-", temperature.Select(t => t.ToString(CultureInfo.InvariantCulture))))
                + (fineTune == 0 ? "" : FormattableString.Invariant($"-fine-tune-{fineTune}"))
                + (subset ? "-subset" : "");
            if (widths is null)
            {
                PrintTable(rows);
                Console.WriteLine("wrote " + BenchOutput.Write(output, rows));
                return reloadOk ? 0 : 1;
            }

            PrintWidthsTable(rows, epochSeconds);
            string json = BenchOutput.Write(output, rows);
            Console.WriteLine("wrote " + json);
            // The check and the plot cover every width stored for these models, quick-ness and epochs, so widths run at
            // different times add up to one curve.
            var stored = BenchOutput.Read(output)
                .Where(r => r.Width is not null && r.Quick == quick && r.Epochs == epochs && rows.Any(n => n.Model == r.Model))
                .ToList();
            PrintWidthsCheck(stored);
            string png = Path.ChangeExtension(json, ".png");
            WidthsPlot.Write(png, stored, FormattableString.Invariant(
                $"Fashion-MNIST, {epochs} epoch{(epochs == 1 ? "" : "s")}{(quick ? ", quick" : "")}: test accuracy against stored parameters"));
            Console.WriteLine("wrote " + png);
            return reloadOk ? 0 : 1;
        }

        private static void PrintTable(IReadOnlyList<BenchRow> rows) => Table.Print(
            new[] { "model", "method", "epochs", "test acc", "params", "MACs", "MACs ratio", "conv-layer params ÷", "conv-layer MACs ÷", "zip bytes", "b1 ms", "b1 speedup", "b256 img/s", "b256 speedup", "reload ok" },
            rows.Select(r => (IReadOnlyList<string>)new[]
            {
                r.Model, r.Method, Table.Format(r.Epochs, "0"), Table.Format(r.Accuracy * 100, "0.00"), Table.Format(r.Params), Table.Format(r.Macs),
                Table.Format(r.MacsRatio, "0.00"), Table.Format(r.ConvertedParamsRatio, "0.00"), Table.Format(r.ConvertedMacsRatio, "0.00"),
                Table.Format(r.ZipBytes), Table.Format(r.LatencyB1Ms, "0.000"), Table.Format(r.SpeedupB1, "0.00"),
                Table.Format(r.ThroughputB256, "0"), Table.Format(r.SpeedupB256, "0.00"), r.ReloadIdentical?.ToString() ?? "-",
            }));

        private static void PrintWidthsTable(IReadOnlyList<BenchRow> rows, IReadOnlyDictionary<BenchRow, double> epochSeconds) => Table.Print(
            new[] { "model", "width", "method", "epochs", "test acc", "params", "MACs", "zip bytes", "b256 img/s", "b256 vs conv", "train img/s", "s/epoch", "reload ok" },
            rows.Select(r => (IReadOnlyList<string>)new[]
            {
                r.Model, Table.Format(r.Width, "0.###"), r.Method, Table.Format(r.Epochs, "0"), Table.Format(r.Accuracy * 100, "0.00"), Table.Format(r.Params),
                Table.Format(r.Macs), Table.Format(r.ZipBytes), Table.Format(r.ThroughputB256, "0"), Table.Format(r.SpeedupB256, "0.00"),
                Table.Format(r.ImagesPerSecond, "0"), Table.Format(epochSeconds.TryGetValue(r, out double s) ? s : null, "0.0"), r.ReloadIdentical?.ToString() ?? "-",
            }));

        /// <summary>
        /// The equal-memory check of each model: shift attention at every width that stores no more parameters than the
        /// width-1 convolution network, its accuracy gap to it, and shift attention against the fixed shifts at each width.
        /// </summary>
        private static void PrintWidthsCheck(IReadOnlyList<BenchRow> rows)
        {
            foreach (var model in rows.GroupBy(r => r.Model))
            {
                BenchRow? Find(string method, double width) => model.FirstOrDefault(r => r.Method == method && r.Width == width);
                double[] widths = model.Select(r => r.Width!.Value).Distinct().OrderBy(w => w).ToArray();
                Console.WriteLine();
                Console.WriteLine($"Check ({model.Key}, widths {string.Join(", ", widths.Select(w => w.ToString("0.###", CultureInfo.InvariantCulture)))}):");
                BenchRow? conv = Find(Conv, 1);
                if (conv is null)
                {
                    Console.WriteLine("  no conv network at width 1: run --widths with 1 for the reference");
                }
                else
                {
                    Console.WriteLine(FormattableString.Invariant($"  conv at width 1: {conv.Accuracy * 100:0.00}% test accuracy, {conv.Params:N0} parameters"));
                    foreach (double width in widths)
                    {
                        if (Find(Attention, width) is not BenchRow attention)
                            continue;
                        double gap = (conv.Accuracy!.Value - attention.Accuracy!.Value) * 100;
                        string versus = gap >= 0 ? FormattableString.Invariant($"{gap:0.00} points below") : FormattableString.Invariant($"{-gap:0.00} points above");
                        Console.WriteLine(attention.Params <= conv.Params
                            ? FormattableString.Invariant($"  shift-attention at width {width:0.###}: {attention.Params:N0} parameters (≤ conv), {attention.Accuracy * 100:0.00}%, {versus} conv at width 1")
                            : FormattableString.Invariant($"  shift-attention at width {width:0.###}: {attention.Params:N0} parameters, more than conv at width 1 (not compared), {attention.Accuracy * 100:0.00}%"));
                    }
                }
                var pairs = widths.Select(w => (Width: w, Attention: Find(Attention, w), Shift: Find(Shift, w)))
                    .Where(p => p.Attention is not null && p.Shift is not null).ToList();
                if (pairs.Count > 0)
                {
                    bool always = pairs.All(p => p.Attention!.Accuracy >= p.Shift!.Accuracy);
                    Console.WriteLine($"  shift-attention ≥ shift at every width: {(always ? "yes" : "no")} ("
                        + string.Join("; ", pairs.Select(p => FormattableString.Invariant(
                            $"{p.Width:0.###}: {p.Attention!.Accuracy * 100:0.00} vs {p.Shift!.Accuracy * 100:0.00}"))) + ")");
                }
            }
        }

        private static Trained Train(ImageClassifierArchitecture architecture, string method, bool quick, int epochs, double[]? temperature, int fineTune,
            int trainRows, int testRows, double? width)
        {
            var ml = new MLContext(seed: 1);
            IDataView train = FashionMnist.LoadTrain(ml, trainRows);
            IDataView test = FashionMnist.LoadTest(ml, testRows);
            ImageClassifierTrainer.Options training = TrainScenario.Recipe(architecture, quick);
            training.Epochs = epochs;
            training.Width = width ?? 1;
            var epochMetrics = new List<TrainingEpochMetrics>();
            training.EpochCompleted = metrics =>
            {
                epochMetrics.Add(metrics);
                Console.WriteLine("  " + metrics);
            };

            IEstimator<ITransformer> estimator;
            ModelSummary? before = null;
            if (method is Conv or Shift)
            {
                training.Convolution = method == Conv ? ConvolutionKind.Convolution : ConvolutionKind.Shift;
                estimator = ml.MulticlassClassification.Trainers.ImageClassifier(training);
            }
            else
            {
                var options = new ShiftAttentionTrainer.Options
                {
                    Training = training,
                    LayerKind = method == Attention ? ConvolutionKind.ShiftAttention : ConvolutionKind.ShiftAttentionShared,
                    FineTuneEpochs = fineTune,
                    AttentionEpochCompleted = metrics => Console.WriteLine("  " + metrics),
                    Compacted = (trained, _) => before = trained,
                };
                if (temperature is { Length: 2 })
                    (options.InitialTemperature, options.FinalTemperature) = (temperature[0], temperature[1]);
                estimator = ml.Transforms.PruneAttention(options);
            }
            var pipeline = ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
                .Append(estimator)
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));

            var clock = Stopwatch.StartNew();
            var model = pipeline.Fit(train);
            double trainSeconds = clock.Elapsed.TotalSeconds;
            ImageClassificationTransformer classifier = model.OfType<ImageClassificationTransformer>().Single();
            try
            {
                IDataView scored = model.Transform(test);
                MulticlassClassificationMetrics metrics = ml.MulticlassClassification.Evaluate(scored);
                string[] predictions = scored.GetColumn<string>("PredictedLabel").ToArray();

                string directory = Path.Combine("artifacts", "bench", "models");
                Directory.CreateDirectory(directory);
                string widthName = width is double w ? FormattableString.Invariant($"-width-{w}") : "";
                string zip = Path.GetFullPath(Path.Combine(directory, $"sal-{Architectures.ShortName(architecture)}-{method}{widthName}{(quick ? "-quick" : "")}.zip"));
                ml.Model.Save(model, train.Schema, zip);
                bool reloadIdentical = ReloadGivesTheSamePredictions(zip, predictions, testRows);
                Console.WriteLine(FormattableString.Invariant($"  test accuracy {metrics.MicroAccuracy:P2}, trained in {trainSeconds:F0} s, reload identical: {reloadIdentical}"));

                ModelSummary summary = classifier.GetSummary();
                return new Trained
                {
                    Classifier = classifier,
                    Summary = summary,
                    Before = before,
                    EpochSeconds = InferenceTiming.Median(epochMetrics.Select(m => m.Elapsed.TotalSeconds).ToArray()),
                    Row = new BenchRow
                    {
                        Scenario = "sal",
                        Model = Architectures.ShortName(architecture),
                        Method = method,
                        Quick = quick,
                        Epochs = epochs,
                        Accuracy = metrics.MicroAccuracy,
                        Params = summary.Parameters,
                        NonZeroParams = summary.NonZeroParameters,
                        Macs = summary.MultiplyAccumulates,
                        ZipBytes = new FileInfo(zip).Length,
                        TrainSeconds = trainSeconds,
                        ImagesPerSecond = InferenceTiming.Median(epochMetrics.Select(m => m.ImagesPerSecond).ToArray()),
                        ReloadIdentical = reloadIdentical,
                        Width = width,
                    },
                };
            }
            catch
            {
                classifier.Dispose();
                throw;
            }
        }

        /// <summary>Fills the ratios against the convolution row and the interleaved timings.</summary>
        private static void Compare(IReadOnlyList<Trained> trained, bool quick)
        {
            Trained conv = trained[0];
            var (latencies, throughputs, speedupsB1, speedupsB256) = TimeInterleaved(trained.Select(t => t.Classifier.Network).ToList(), quick);
            for (int i = 0; i < trained.Count; i++)
            {
                BenchRow row = trained[i].Row;
                row.LatencyB1Ms = latencies[i];
                row.ThroughputB256 = throughputs[i];
                row.SpeedupB1 = speedupsB1[i];
                row.SpeedupB256 = speedupsB256[i];
                row.MacsRatio = (double)conv.Summary.MultiplyAccumulates / trained[i].Summary.MultiplyAccumulates;

                // The layers a method converts: those that are not a convolution any more, each with its batch norm.
                var converted = trained[i].Classifier.Network.Definition.Flatten()
                    .Where(l => l.Layer is ShiftPointwiseConv2dLayer or ShiftConv2dLayer or ShiftAttentionConv2dLayer)
                    .Select(l => l.Path).ToHashSet(StringComparer.Ordinal);
                if (converted.Count > 0)
                {
                    var (convParams, convMacs) = ConvertedCost(conv.Summary, converted);
                    var (ownParams, ownMacs) = ConvertedCost(trained[i].Summary, converted);
                    row.ConvertedParamsRatio = (double)convParams / ownParams;
                    row.ConvertedMacsRatio = (double)convMacs / ownMacs;
                }
            }
        }

        private static (long Parameters, long Macs) ConvertedCost(ModelSummary summary, IReadOnlySet<string> converted)
        {
            // Batch norm follows each converted layer under the matching name (conv2/bn2, body.conv1/body.bn1).
            bool IsBatchNormOf(string path) => converted.Contains(ReplaceLast(path, "bn", "conv"));
            long parameters = summary.Layers.Where(l => converted.Contains(l.Path) || IsBatchNormOf(l.Path)).Sum(l => l.Parameters);
            long macs = summary.Layers.Where(l => converted.Contains(l.Path)).Sum(l => l.MultiplyAccumulates);
            return (parameters, macs);
        }

        private static string ReplaceLast(string path, string from, string to)
        {
            int dot = path.LastIndexOf('.') + 1;
            return path.AsSpan(dot).StartsWith(from, StringComparison.Ordinal) ? path[..dot] + to + path[(dot + from.Length)..] : path;
        }

        /// <summary>
        /// Batch-1 latency (median of many calls) and batch-256 throughput of each network, the networks interleaved in
        /// every repetition; the speedups are per-repetition ratios against the first network, then medians, so the noise
        /// of a shared machine hits all networks alike.
        /// </summary>
        private static (double[] LatencyMs, double[] ImagesPerSecond, double[] SpeedupB1, double[] SpeedupB256) TimeInterleaved(
            IReadOnlyList<ClassifierNetwork> networks, bool quick)
        {
            var (single, batch) = InferenceTiming.Inputs(networks[0].Definition.Input);
            int repetitions = quick ? 3 : 7, latencyCalls = quick ? 30 : 200, throughputCalls = quick ? 2 : 4;
            foreach (ClassifierNetwork network in networks)
            {
                for (int i = 0; i < 10; i++)
                    InferenceTiming.Time(network, single);
                InferenceTiming.Time(network, batch);
            }

            var latency = new double[repetitions][];
            var throughput = new double[repetitions][];
            for (int r = 0; r < repetitions; r++)
            {
                latency[r] = new double[networks.Count];
                throughput[r] = new double[networks.Count];
                for (int n = 0; n < networks.Count; n++)
                {
                    latency[r][n] = InferenceTiming.Median(Enumerable.Range(0, latencyCalls).Select(_ => InferenceTiming.Time(networks[n], single)).ToArray());
                    throughput[r][n] = InferenceTiming.Median(Enumerable.Range(0, throughputCalls).Select(_ => 256 / (InferenceTiming.Time(networks[n], batch) / 1000)).ToArray());
                }
            }
            double[] Median(Func<int, int, double> value) => Enumerable.Range(0, networks.Count)
                .Select(n => InferenceTiming.Median(Enumerable.Range(0, repetitions).Select(r => value(r, n)).ToArray())).ToArray();
            return (Median((r, n) => latency[r][n]), Median((r, n) => throughput[r][n]),
                Median((r, n) => latency[r][0] / latency[r][n]), Median((r, n) => throughput[r][n] / throughput[r][0]));
        }

        /// <summary>Loads the saved zip in a fresh context and compares every predicted label.</summary>
        private static bool ReloadGivesTheSamePredictions(string zip, string[] expected, int testRows)
        {
            var ml = new MLContext(seed: 7);
            ITransformer model = ml.Model.Load(zip, out _);
            try
            {
                string[] actual = model.Transform(FashionMnist.LoadTest(ml, testRows)).GetColumn<string>("PredictedLabel").ToArray();
                return expected.SequenceEqual(actual);
            }
            finally
            {
                ModelCache.DisposeAll(model);
            }
        }

        private static double ParseWidth(string text)
        {
            double width = double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);
            return double.IsFinite(width) && width > 0 ? width : throw new ArgumentException($"--widths takes numbers greater than 0; got '{text}'.");
        }
    }
}
