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
            string[] header = { "Model", "Accuracy", "Params ≠ 0", "MACs ≠ 0", "Zip", "÷ dense", "Batch 1", "Batch 256", "Reloaded" };
            var rows = results.Select(r => new[]
            {
                r.Name,
                r.Accuracy.ToString("P2", CultureInfo.InvariantCulture),
                r.NonZeroParameters.ToString("N0", CultureInfo.InvariantCulture),
                r.NonZeroMacs.ToString("N0", CultureInfo.InvariantCulture),
                r.ZipBytes.ToString("N0", CultureInfo.InvariantCulture) + " B",
                ((double)r.ZipBytes / dense.ZipBytes).ToString("F3", CultureInfo.InvariantCulture),
                r.LatencyMs.ToString("F3", CultureInfo.InvariantCulture) + " ms",
                r.ImagesPerSecond.ToString("N0", CultureInfo.InvariantCulture) + " img/s",
                r.ReloadIdentical ? "same" : "DIFFERS",
            }).ToList();

            int[] widths = header.Select((h, i) => rows.Select(r => r[i].Length).Append(h.Length).Max()).ToArray();
            var text = new StringBuilder();
            void Line(IReadOnlyList<string> cells) => text.AppendLine(string.Join("  ",
                cells.Select((c, i) => i == 0 || i == cells.Count - 1 ? c.PadRight(widths[i]) : c.PadLeft(widths[i]))).TrimEnd());
            Line(header);
            Line(widths.Select(w => new string('-', w)).ToArray());
            rows.ForEach(Line);
            text.AppendLine(CultureInfo.InvariantCulture,
                $"Accuracy on the 10,000 test images. Params ≠ 0 of {dense.Parameters:N0}; MACs ≠ 0: multiply-accumulates per image with a non-zero weight.");
            text.AppendLine("Zip: the saved model, ÷ dense its size against the dense one's. Batch 1 and batch 256: medians of");
            text.Append("ClassifierNetwork.Predict on this machine. Reloaded: the zip loaded in a new MLContext predicts the same.");
            return text.ToString();
        }
    }
}
