// Licensed under the MIT license.

using System;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.IO;
using System.Linq;
using Microsoft.ML;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Pruned models kept in artifacts/bench/models, so that a rerun with the same settings reuses them instead of pruning
    /// again. Each model zip has a sidecar file, its path with <c>.seconds</c> added, holding the timings of the run that
    /// made it: numbers in the invariant culture separated by single spaces, <c>-</c> for a missing one.
    /// </summary>
    internal static class ModelCache
    {
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
    }
}
