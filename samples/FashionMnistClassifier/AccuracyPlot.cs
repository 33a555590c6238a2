// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using ScottPlot;

namespace FashionMnistClassifier
{
    /// <summary>The PNG of test accuracy against model zip size, one labelled point per model.</summary>
    internal static class AccuracyPlot
    {
        public static void Write(string path, IReadOnlyList<ModelResult> results)
        {
            var plot = new Plot();
            plot.Title("Fashion-MNIST: accuracy against model size", size: 15);
            plot.XLabel("model zip (KB)");
            plot.YLabel("test accuracy (%)");

            foreach (ModelResult result in results)
            {
                double x = result.ZipBytes / 1024.0, y = result.Accuracy * 100;
                var point = plot.Add.Scatter(new[] { x }, new[] { y });
                point.LegendText = $"{result.Name}: {result.NonZeroParameters:N0} non-zero parameters";
                point.MarkerSize = 11;
                var label = plot.Add.Text(result.Name, x, y);
                label.LabelFontSize = 13;
                label.LabelFontColor = point.Color;
                label.LabelAlignment = Alignment.LowerLeft;
                label.OffsetX = 7;
                label.OffsetY = -7;
            }

            double right = results.Max(r => r.ZipBytes / 1024.0);
            double bottom = results.Min(r => r.Accuracy * 100), top = results.Max(r => r.Accuracy * 100);
            double pad = Math.Max(0.5, (top - bottom) * 0.2);
            plot.Axes.SetLimits(0, right * 1.25, bottom - pad, top + pad);
            plot.ShowLegend(Alignment.LowerRight);

            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            plot.SavePng(path, 900, 600);
        }
    }
}
