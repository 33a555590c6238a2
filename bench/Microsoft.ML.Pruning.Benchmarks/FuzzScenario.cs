// Licensed under the MIT license.

using System.Collections.Generic;
using System.Diagnostics;
using System.IO.Compression;
using System.IO;
using System.Linq;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using System.Text;
using System.Threading;
using System;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Benchmarks;
using Microsoft.ML.Pruning.Fuzzing;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners.ShiftAttention;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// <c>fuzz [--files N] [--seed S]</c>: mutated model files (the mutation classes of the test suite's fuzz, plus flips in
    /// ML.NET's own header of Model.key) of three small models — dense LeNet-5, magnitude-pruned LeNet-300-100 (bitmask
    /// weights), compact shift attention VGG — each loaded and scored with a time limit while the process's memory is
    /// watched. Prints the table of mutation classes × outcomes and writes artifacts/bench/fuzz.json.
    /// </summary>
    internal static class FuzzScenario
    {
        private const int Size = 12;

        public static int Run(string[] args)
        {
            int files = IntArg(args, "--files", 10_000), seed = IntArg(args, "--seed", 20261205);
            var timeout = TimeSpan.FromSeconds(20);
            const long memoryBound = 1L << 30;
            var models = new[] { "dense", "sparse", "shift" }.Select(k => (Kind: k, Model: Train(k))).ToArray();
            int classes = new ModelFileFuzzer(models[0].Model.Zip, models[0].Model.Columns).Classes().Count + 1;
            int perClass = Math.Max(1, (int)Math.Ceiling(files / (double)(models.Length * classes)));
            var results = new List<FuzzResult>();
            var watch = System.Diagnostics.Stopwatch.StartNew();
            foreach (var ((kind, (zip, columns, scores, input)), index) in models.Select((m, i) => (m, i)))
            {
                var fuzzer = new ModelFileFuzzer(zip, columns);
                var random = new Random(seed + 1000 + index);
                var cases = fuzzer.Cases(kind, perClass, seed + index).ToList();
                var (name, resealed, make) = fuzzer.MLNetHeaderClass();
                for (int i = 0; i < perClass; i++)
                {
                    var (description, mutated) = make(random);
                    cases.Add(new FuzzCase(kind, name, description, mutated, resealed));
                }
                foreach (FuzzCase c in cases)
                {
                    results.Add(FuzzRunner.Run(c, m => ScoreLoaded(m, input), scores, timeout, memoryBound));
                    if (results.Count % 500 == 0)
                        Console.WriteLine($"{results.Count} files, {watch.Elapsed.TotalSeconds:F0} s");
                }
            }

            var outcomes = Enum.GetValues<FuzzOutcome>();
            Console.WriteLine();
            Console.WriteLine($"| Mutation class | Files | {string.Join(" | ", outcomes.Select(Label))} |");
            Console.WriteLine($"| -- | --: | {string.Join(" | ", outcomes.Select(_ => "--:"))} |");
            var rows = new List<object>();
            foreach (var group in results.GroupBy(r => r.Case.Class))
            {
                var counts = outcomes.ToDictionary(o => o, o => group.Count(r => r.Outcome == o));
                Console.WriteLine($"| {group.Key} | {group.Count()} | {string.Join(" | ", outcomes.Select(o => counts[o]))} |");
                rows.Add(new
                {
                    scenario = "fuzz",
                    mutation_class = group.Key,
                    resealed = group.First().Case.Resealed,
                    files = group.Count(),
                    outcomes = outcomes.ToDictionary(Label, o => counts[o]),
                    max_seconds = group.Max(r => r.Seconds),
                    max_memory_bytes = group.Max(r => r.PeakBytes),
                    examples = group.GroupBy(r => r.Outcome).ToDictionary(g => Label(g.Key),
                        g => g.Take(3).Select(r => $"{r.Case.Model}: {r.Case.Description}: {r.Message}").ToArray()),
                });
            }
            var total = outcomes.ToDictionary(o => o, o => results.Count(r => r.Outcome == o));
            Console.WriteLine($"| total | {results.Count} | {string.Join(" | ", outcomes.Select(o => total[o]))} |");
            Console.WriteLine();
            Console.WriteLine($"{results.Count} files in {watch.Elapsed.TotalMinutes:F1} min; slowest {results.Max(r => r.Seconds):F2} s; largest memory growth {results.Max(r => r.PeakBytes) / 1e6:F0} MB.");
            var silent = results.Where(r => r.Outcome == FuzzOutcome.LoadedDifferent && !r.Case.Resealed).ToList();
            Console.WriteLine($"Unsealed mutations that loaded with other scores: {silent.Count}.");
            foreach (var r in results.Where(r => r.Outcome is FuzzOutcome.UnclearError or FuzzOutcome.Hang or FuzzOutcome.OverMemory
                or FuzzOutcome.NonFiniteScores or FuzzOutcome.FailsAtFirstPrediction).Concat(silent).Take(20))
                Console.WriteLine($"  {r.Outcome} {r.Case.Model} {r.Case.Class} {r.Case.Description}: {r.Message}");

            string path = System.IO.Path.Combine("artifacts", "bench", "fuzz.json");
            Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
            File.WriteAllText(path, JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }));
            Console.WriteLine($"wrote {path}");
            return 0;
        }

        private static string Label(FuzzOutcome outcome) => outcome switch
        {
            FuzzOutcome.LoadedIdentical => "loaded-identical",
            FuzzOutcome.LoadedDifferent => "loaded-different",
            FuzzOutcome.ClearError => "clear error",
            FuzzOutcome.UnclearError => "unclear error",
            FuzzOutcome.Hang => "hang",
            FuzzOutcome.OverMemory => "over memory",
            FuzzOutcome.NonFiniteScores => "non-finite scores",
            _ => "fails at first prediction",
        };

        private static int IntArg(string[] args, string name, int fallback)
        {
            int index = Array.IndexOf(args, name);
            return index >= 0 && index + 1 < args.Length ? int.Parse(args[index + 1], System.Globalization.CultureInfo.InvariantCulture) : fallback;
        }

        private sealed class Row
        {
            public string Label { get; set; } = "";

            public float[] Features { get; set; } = Array.Empty<float>();
        }

        /// <summary>Learnable synthetic images: each of four classes lights one quadrant, plus noise.</summary>
        private static IDataView Images(MLContext ml, int count, ImageShape shape, int seed)
        {
            var random = new Random(seed);
            string[] names = { "ankle", "bag", "coat", "dress" };
            var rows = new List<Row>();
            for (int i = 0; i < count; i++)
            {
                int label = i % names.Length;
                var pixels = new float[shape.Size];
                for (int p = 0; p < pixels.Length; p++)
                    pixels[p] = (float)(random.NextDouble() * 0.3);
                int top = label / 2 * (shape.Height / 2), left = label % 2 * (shape.Width / 2);
                for (int c = 0; c < shape.Channels; c++)
                    for (int y = top; y < top + shape.Height / 2; y++)
                        for (int x = left; x < left + shape.Width / 2; x++)
                            pixels[(c * shape.Height + y) * shape.Width + x] += 0.7f;
                rows.Add(new Row { Label = names[label], Features = pixels });
            }
            SchemaDefinition schema = SchemaDefinition.Create(typeof(Row));
            schema[nameof(Row.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, shape.Channels, shape.Height, shape.Width);
            return ml.Data.LoadFromEnumerable(rows, schema);
        }

        private static (byte[] Zip, string[] Columns, float[][] Scores, ImageShape Input) Train(string kind)
        {
            var ml = new MLContext(seed: 1);
            int size = kind == "shift" ? 8 : Size;
            var shape = new ImageShape(1, size, size);
            IDataView raw = Images(ml, 64, shape, 0);
            IDataView train = ml.Transforms.Conversion.MapValueToKey("Label").Fit(raw).Transform(raw);
            ITransformer model = kind switch
            {
                "dense" => ml.MulticlassClassification.Trainers.ImageClassifier(new ImageClassifierTrainer.Options
                { Architecture = ImageClassifierArchitecture.LeNet5, Epochs = 1, BatchSize = 32 }).Fit(train),
                "sparse" => ml.Transforms.PruneMagnitude(
                    ml.MulticlassClassification.Trainers.ImageClassifier(new ImageClassifierTrainer.Options
                    { Architecture = ImageClassifierArchitecture.LeNet300100, Epochs = 1, BatchSize = 32 }).Fit(train),
                    new MagnitudePruner.Options { KeptFraction = 0.1 }).Fit(train),
                _ => ml.Transforms.PruneAttention(new ShiftAttentionTrainer.Options
                {
                    Training = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.VggSmall, Width = 0.25, Epochs = 1, BatchSize = 32 },
                    LayerKind = ConvolutionKind.ShiftAttention,
                }).Fit(train),
            };
            var classifier = model as ImageClassificationTransformer ?? ((IEnumerable<ITransformer>)model).OfType<ImageClassificationTransformer>().Single();
            string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "pruning-fuzz-" + Guid.NewGuid().ToString("N") + ".zip");
            ml.Model.Save(classifier, null, path);
            byte[] zip = File.ReadAllBytes(path);
            File.Delete(path);
            var result = (zip, new[] { classifier.FeatureColumnName, classifier.ScoreColumnName, classifier.PredictedLabelColumnName, classifier.LabelColumn.Name },
                Score(classifier, shape), shape);
            foreach (var part in model as IEnumerable<ITransformer> ?? new[] { model })
                (part as IDisposable)?.Dispose();
            return result;
        }

        private static float[][] Score(ITransformer model, ImageShape shape)
            => model.Transform(Images(new MLContext(seed: 1), 16, shape, 7)).GetColumn<float[]>("Score").ToArray();

        private static (float[][], bool) ScoreLoaded(ITransformer model, ImageShape original)
        {
            var classifier = model as ImageClassificationTransformer ?? ((IEnumerable<ITransformer>)model).OfType<ImageClassificationTransformer>().Single();
            ImageShape input = classifier.Network.Definition.Input;
            return (Score(model, input), input == original);
        }
    }
}
