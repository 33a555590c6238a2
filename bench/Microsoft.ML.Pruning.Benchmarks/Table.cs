// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>A plain-text table for the console.</summary>
    internal static class Table
    {
        public static void Print(IReadOnlyList<string> headers, IEnumerable<IReadOnlyList<string>> rows)
        {
            var all = rows.ToList();
            int[] widths = headers.Select((h, i) => Math.Max(h.Length, all.Count == 0 ? 0 : all.Max(r => r[i].Length))).ToArray();
            Console.WriteLine(string.Join(" | ", headers.Select((h, i) => h.PadRight(widths[i]))));
            Console.WriteLine(string.Join("-|-", widths.Select(w => new string('-', w))));
            foreach (var row in all)
                Console.WriteLine(string.Join(" | ", row.Select((c, i) => c.PadLeft(widths[i]))));
        }

        public static string Format(double? value, string format) => value is double v ? v.ToString(format, CultureInfo.InvariantCulture) : "-";

        public static string Format(long? value) => value is long v ? v.ToString("N0", CultureInfo.InvariantCulture) : "-";
    }
}
