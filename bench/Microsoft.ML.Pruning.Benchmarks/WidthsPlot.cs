// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using ScottPlot;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// The PNG of a <c>sal --widths</c> run: test accuracy (%) against stored parameters on a log scale, one line per
    /// method (and model, when there are several), each point labelled with its width, and the width-1 convolution
    /// network's parameter count marked.
    /// </summary>
    internal static class WidthsPlot
    {
        private static readonly string[] s_methodOrder = { "conv", "shift", "shift-attention", "shift-attention-shared" };

        public static void Write(string path, IReadOnlyList<BenchRow> rows, string title)
        {
            var points = rows.Where(r => r.Width is not null && r.Params > 0 && r.Accuracy is not null).ToList();
            if (points.Count == 0)
                throw new ArgumentException("no rows with a width, parameters and accuracy to plot", nameof(rows));
            bool severalModels = points.Select(r => r.Model).Distinct().Count() > 1;

            var plot = new Plot();
            plot.Title(title, size: 15);
            plot.XLabel("stored parameters (log scale)");
            plot.YLabel("test accuracy (%)");

            foreach (var line in points.GroupBy(r => (r.Model, r.Method))
                .OrderBy(g => g.Key.Model, StringComparer.Ordinal).ThenBy(g => Array.IndexOf(s_methodOrder, g.Key.Method)))
            {
                BenchRow[] ordered = line.OrderBy(r => r.Params).ToArray();
                double[] xs = ordered.Select(r => Math.Log10(r.Params!.Value)).ToArray();
                double[] ys = ordered.Select(r => r.Accuracy!.Value * 100).ToArray();
                var scatter = plot.Add.Scatter(xs, ys);
                scatter.LegendText = severalModels ? $"{line.Key.Model} {line.Key.Method}" : line.Key.Method;
                scatter.LineWidth = 2;
                scatter.MarkerSize = 8;
                // The shift methods store almost the same parameters at a width: each labels its points in its own corner.
                (Alignment alignment, float dx, float dy) = line.Key.Method switch
                {
                    "shift" => (Alignment.UpperLeft, 5f, 5f),
                    "shift-attention-shared" => (Alignment.UpperRight, -5f, 5f),
                    _ => (Alignment.LowerLeft, 5f, -5f),
                };
                for (int i = 0; i < ordered.Length; i++)
                {
                    var label = plot.Add.Text("×" + ordered[i].Width!.Value.ToString("0.###", CultureInfo.InvariantCulture), xs[i], ys[i]);
                    label.LabelFontSize = 12;
                    label.LabelFontColor = scatter.Color;
                    label.LabelAlignment = alignment;
                    label.OffsetX = dx;
                    label.OffsetY = dy;
                }
            }

            foreach (BenchRow conv in points.Where(r => r.Method == "conv" && r.Width == 1))
            {
                var budget = plot.Add.VerticalLine(Math.Log10(conv.Params!.Value), width: 1, pattern: LinePattern.Dashed);
                budget.Color = Colors.Gray;
                budget.LegendText = severalModels ? $"{conv.Model} conv at width 1: {conv.Params:N0} params" : $"conv at width 1: {conv.Params:N0} params";
            }

            double low = Math.Log10(points.Min(r => r.Params!.Value)), high = Math.Log10(points.Max(r => r.Params!.Value));
            double margin = Math.Max(0.08, (high - low) * 0.12);
            plot.Axes.Bottom.TickGenerator = LogTicks(low - margin, high + margin);
            plot.Axes.SetLimitsX(low - margin, high + margin);
            double bottom = points.Min(r => r.Accuracy!.Value * 100), top = points.Max(r => r.Accuracy!.Value * 100);
            double pad = Math.Max(0.5, (top - bottom) * 0.15);
            plot.Axes.SetLimitsY(bottom - pad, top + pad);
            plot.ShowLegend(Alignment.LowerRight);

            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            plot.SavePng(path, 1000, 650);
        }

        /// <summary>
        /// Labelled ticks at 1, 2 and 5 times the powers of ten between the two log10 limits (every multiple when they
        /// span less than two decades), labelled 300k, 1M, 2M; minor ticks at the other multiples.
        /// </summary>
        private static ScottPlot.TickGenerators.NumericManual LogTicks(double low, double high)
        {
            var ticks = new ScottPlot.TickGenerators.NumericManual();
            int[] labelled = high - low < 2 ? new[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 } : new[] { 1, 2, 5 };
            for (int power = (int)Math.Floor(low); power <= (int)Math.Ceiling(high); power++)
            {
                foreach (int step in labelled)
                {
                    double value = step * Math.Pow(10, power), position = Math.Log10(value);
                    if (position >= low && position <= high)
                        ticks.AddMajor(position, Format(value));
                }
                foreach (int step in Enumerable.Range(2, 8).Except(labelled))
                {
                    double position = Math.Log10(step * Math.Pow(10, power));
                    if (position >= low && position <= high)
                        ticks.AddMinor(position);
                }
            }
            return ticks;
        }

        private static string Format(double value) => value switch
        {
            >= 1e6 => (value / 1e6).ToString("0.#", CultureInfo.InvariantCulture) + "M",
            >= 1e3 => (value / 1e3).ToString("0.#", CultureInfo.InvariantCulture) + "k",
            _ => value.ToString("0", CultureInfo.InvariantCulture),
        };
    }
}
