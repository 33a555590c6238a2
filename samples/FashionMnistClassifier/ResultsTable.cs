// Licensed under the MIT license.

using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text;

namespace FashionMnistClassifier
{
    /// <summary>The dense and pruned models side by side, as plain text (readable in a terminal and in a log).</summary>
    internal static class ResultsTable
    {
        public static string Format(IReadOnlyList<ModelResult> results)
        {
            ModelResult dense = results[0];
            string[] header = { "Model", "Accuracy", "Non-zero params", "Non-zero MACs", "Zip", "Zip ÷ dense", "Batch 1", "Batch 256", "Reload" };
            var rows = results.Select(r => new[]
            {
                r.Name,
                r.Accuracy.ToString("P2", CultureInfo.InvariantCulture),
                $"{r.NonZeroParameters.ToString("N0", CultureInfo.InvariantCulture)} / {r.Parameters.ToString("N0", CultureInfo.InvariantCulture)}",
                r.NonZeroMacs.ToString("N0", CultureInfo.InvariantCulture),
                r.ZipBytes.ToString("N0", CultureInfo.InvariantCulture) + " B",
                ((double)r.ZipBytes / dense.ZipBytes).ToString("F3", CultureInfo.InvariantCulture),
                r.LatencyMs.ToString("F3", CultureInfo.InvariantCulture) + " ms",
                r.ImagesPerSecond.ToString("N0", CultureInfo.InvariantCulture) + " img/s",
                r.ReloadIdentical ? "identical" : "DIFFERS",
            }).ToList();

            int[] widths = header.Select((h, i) => rows.Select(r => r[i].Length).Append(h.Length).Max()).ToArray();
            var text = new StringBuilder();
            void Line(IReadOnlyList<string> cells) => text.AppendLine(string.Join("  ",
                cells.Select((c, i) => i == 0 || i == cells.Count - 1 ? c.PadRight(widths[i]) : c.PadLeft(widths[i]))).TrimEnd());
            Line(header);
            Line(widths.Select(w => new string('-', w)).ToArray());
            rows.ForEach(Line);
            text.Append(CultureInfo.InvariantCulture,
                $"Accuracy on the {"10,000"} test images; batch 1 and batch 256 are medians of ClassifierNetwork.Predict on this machine.");
            return text.ToString();
        }
    }
}
