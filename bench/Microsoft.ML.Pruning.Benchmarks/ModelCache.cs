// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Pruning.Pruners;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Pruned models kept in artifacts/bench/models, so that a rerun with the same settings reuses them instead of pruning
    /// again. Each model zip has a sidecar file, its path with <c>.seconds</c> added, holding the timings of the run that
    /// made it: numbers in the invariant culture separated by single spaces, <c>-</c> for a missing one.
    /// </summary>
    internal static class ModelCache
    {
        /// <summary>Disposes every part of <paramref name="model"/> (a chain's transformers, or the model itself) that holds native memory.</summary>
        public static void DisposeAll(ITransformer model)
        {
            foreach (ITransformer part in model as IEnumerable<ITransformer> ?? new[] { model })
                (part as IDisposable)?.Dispose();
        }

        /// <summary>
        /// Loads the model at <paramref name="path"/> and the timings of its sidecar when both files exist, and prints
        /// <c>  loaded {path}</c>.
        /// </summary>
        /// <param name="ml">The context to load with.</param>
        /// <param name="path">The model zip.</param>
        /// <param name="model">The loaded model.</param>
        /// <param name="seconds">The sidecar's timings, in the order saved; <see langword="null"/> for a missing one.</param>
        /// <returns>Whether the model and its sidecar were there.</returns>
        public static bool TryLoad(MLContext ml, string path, [NotNullWhen(true)] out ITransformer? model, out double?[] seconds)
        {
            if (!File.Exists(path) || !File.Exists(path + ".seconds"))
            {
                model = null;
                seconds = Array.Empty<double?>();
                return false;
            }
            model = ml.Model.Load(path, out _);
            seconds = File.ReadAllText(path + ".seconds").Split(' ')
                .Select(s => s == "-" ? (double?)null : double.Parse(s, CultureInfo.InvariantCulture)).ToArray();
            Console.WriteLine($"  loaded {path}");
            return true;
        }

        /// <summary>Saves <paramref name="model"/> to <paramref name="path"/> and <paramref name="seconds"/> to its sidecar.</summary>
        /// <param name="ml">The context to save with.</param>
        /// <param name="model">The pruned model.</param>
        /// <param name="schema">The schema of the data the model was fitted on.</param>
        /// <param name="path">The model zip.</param>
        /// <param name="seconds">The timings to keep with it; <see langword="null"/> for a missing one.</param>
        public static void Save(MLContext ml, ITransformer model, DataViewSchema schema, string path, params double?[] seconds)
        {
            ml.Model.Save(model, schema, path);
            File.WriteAllText(path + ".seconds",
                string.Join(" ", seconds.Select(s => s is double value ? value.ToString(CultureInfo.InvariantCulture) : "-")));
        }

        /// <summary>
        /// The pruned model cached at <paramref name="path"/> with its pruning report (only the pruning time is known for a
        /// cached one) and the seconds of its whole <c>Fit</c>; or, when there is none, the model that
        /// <paramref name="pruner"/> fits on <paramref name="train"/>, saved there with its two times. <paramref name="pruner"/>
        /// takes the callback to pass as the options' <c>PruningCompleted</c>.
        /// </summary>
        public static (ITransformer Model, PruningReport Report, double Seconds) LoadOrPrune(MLContext ml, string path, string name, IDataView train,
            Func<Action<PruningReport>, IEstimator<ITransformer>> pruner)
        {
            if (TryLoad(ml, path, out ITransformer? cached, out double?[] times))
            {
                var loaded = new PruningReport(name, Array.Empty<LayerPruningResult>(), TimeSpan.FromSeconds(times[0]!.Value), 0, 0, TimeSpan.Zero);
                return (cached, loaded, times[1]!.Value);
            }
            PruningReport? report = null;
            var clock = Stopwatch.StartNew();
            ITransformer model = pruner(r => report = r).Fit(train);
            double seconds = clock.Elapsed.TotalSeconds;
            if (report is null)
                throw new InvalidOperationException($"The pruner of {path} reported nothing.");
            Save(ml, model, train.Schema, path, report.PruningTime.TotalSeconds, seconds);
            return (model, report, seconds);
        }
    }
}
