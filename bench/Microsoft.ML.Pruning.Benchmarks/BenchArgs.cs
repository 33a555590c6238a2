// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using Microsoft.ML.Pruning.Networks;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// The scenarios' command-line options: <c>--name value</c> pairs anywhere after the scenario's name. An option given
    /// as the last argument, with no value after it, counts as absent; numbers are read in the invariant culture.
    /// </summary>
    internal static class BenchArgs
    {
        /// <summary>The value after option <paramref name="name"/>, or <see langword="null"/> when it is not given.</summary>
        /// <param name="args">The command line.</param>
        /// <param name="name">The option, such as <c>--train-rows</c>.</param>
        public static string? Option(string[] args, string name)
        {
            int index = Array.IndexOf(args, name);
            return index >= 0 && index + 1 < args.Length ? args[index + 1] : null;
        }

        /// <summary>The integer after option <paramref name="name"/>, or <paramref name="fallback"/> when it is not given.</summary>
        /// <param name="args">The command line.</param>
        /// <param name="name">The option, such as <c>--train-rows</c>.</param>
        /// <param name="fallback">The value when the option is not given.</param>
        /// <exception cref="FormatException">The option's value is not an integer.</exception>
        public static int Option(string[] args, string name, int fallback)
            => Option(args, name) is string value ? int.Parse(value, CultureInfo.InvariantCulture) : fallback;

        /// <summary>
        /// The comma-separated values after option <paramref name="name"/>, or those of <paramref name="fallback"/> when it
        /// is not given; never empty (an empty text is one empty value).
        /// </summary>
        /// <param name="args">The command line.</param>
        /// <param name="name">The option, such as <c>--models</c>.</param>
        /// <param name="fallback">The comma-separated values when the option is not given.</param>
        public static string[] List(string[] args, string name, string fallback) => (Option(args, name) ?? fallback).Split(',');

        /// <summary>
        /// The architectures named by <c>--models</c> (comma-separated short names, <see cref="Architectures.ShortName"/>),
        /// or those of <paramref name="fallback"/> when it is not given, in the order named.
        /// </summary>
        /// <param name="args">The command line.</param>
        /// <param name="fallback">The comma-separated short names when <c>--models</c> is not given.</param>
        /// <param name="unknown">The message of the error for a name that is not one of <paramref name="allowed"/>, given that name.</param>
        /// <param name="allowed">The architectures the scenario runs.</param>
        /// <exception cref="ArgumentException">A name is not the short name of one of <paramref name="allowed"/>.</exception>
        public static IReadOnlyList<ImageClassifierArchitecture> Models(string[] args, string fallback, Func<string, string> unknown,
            params ImageClassifierArchitecture[] allowed)
            => List(args, "--models", fallback).Select(name =>
            {
                foreach (ImageClassifierArchitecture architecture in allowed)
                {
                    if (Architectures.ShortName(architecture) == name)
                        return architecture;
                }
                throw new ArgumentException(unknown(name));
            }).ToArray();
    }
}
