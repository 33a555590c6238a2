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
        public static int Run(string[] args)
        {
            int files = BenchArgs.Option(args, "--files", 10_000), seed = BenchArgs.Option(args, "--seed", 20261205);
            string loader = BenchArgs.Option(args, "--loader") ?? "checked";
            if (loader is not ("checked" or "mlnet"))
                throw new ArgumentException($"--loader is '{loader}'; use checked (mlContext.Model.LoadChecked) or mlnet (mlContext.Model.Load)");
            Console.WriteLine($"loader: {(loader == "checked" ? "mlContext.Model.LoadChecked" : "mlContext.Model.Load")}");
            var timeout = TimeSpan.FromSeconds(20);
            const long memoryBound = 1L << 30;
            var models = FuzzModels.Kinds.Select(k => (Kind: k, Model: FuzzModels.Create(k))).ToArray();
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
                    results.Add(FuzzRunner.Run(c, m => FuzzModels.ScoreLoaded(m, input), scores, timeout, memoryBound, checkedLoad: loader == "checked"));
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
    }
}
