// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using Microsoft.ML.Pruning.Networks;

namespace FashionMnistClassifier
{
    /// <summary>The command line: <c>--architecture NAME --epochs N --kept F --retrain-epochs N --data DIR --output DIR</c>.</summary>
    internal sealed class SampleOptions
    {
        /// <summary>The network to train. Default: LeNet-5.</summary>
        public ImageClassifierArchitecture Architecture { get; private set; } = ImageClassifierArchitecture.LeNet5;

        /// <summary>Passes over the 60,000 training images. Default: 15.</summary>
        public int Epochs { get; private set; } = 15;

        /// <summary>The fraction of the weights each weight-level pruner keeps. Default: 0.1.</summary>
        public double KeptFraction { get; private set; } = 0.1;

        /// <summary>Epochs of retraining with the masks fixed after pruning. Default: 1.</summary>
        public int RetrainEpochs { get; private set; } = 1;

        /// <summary>The Fashion-MNIST directory; null uses FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist.</summary>
        public string? DataDirectory { get; private set; }

        /// <summary>Where to write the model zips and the plot, relative to the current directory.</summary>
        public string OutputDirectory { get; private set; } = Path.Combine("artifacts", "FashionMnistClassifier");

        /// <summary>True when <c>--help</c> was given.</summary>
        public bool ShowHelp { get; private set; }

        private static IEnumerable<ImageClassifierArchitecture> AllArchitectures => Enum.GetValues<ImageClassifierArchitecture>();

        /// <summary>The help text.</summary>
        public static string Usage =>
            $"""
            Usage: dotnet run -c Release --project samples/FashionMnistClassifier -- [options]

              --architecture NAME   {string.Join(" | ", AllArchitectures.Select(Architectures.ShortName))} (default: lenet5)
              --epochs N            training epochs (default: 15)
              --kept F              fraction of the weights the pruners keep, in (0, 1] (default: 0.1)
              --retrain-epochs N    retraining epochs after pruning, 0 for none (default: 1)
              --data DIR            Fashion-MNIST directory (default: $FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist)
              --output DIR          where the model zips and the plot go (default: artifacts/FashionMnistClassifier)
              --help                show this text
            """;

        /// <summary>Parses <paramref name="args"/>; options take their value as the next argument or after '='.</summary>
        /// <exception cref="FormatException">An option is unknown, lacks its value or has an invalid one.</exception>
        public static SampleOptions Parse(IReadOnlyList<string> args)
        {
            var options = new SampleOptions();
            for (int i = 0; i < args.Count; i++)
            {
                string name = args[i];
                string? value = null;
                int equals = name.IndexOf('=', StringComparison.Ordinal);
                if (name.StartsWith("--", StringComparison.Ordinal) && equals > 0)
                {
                    value = name[(equals + 1)..];
                    name = name[..equals];
                }

                switch (name)
                {
                    case "-h":
                    case "-?":
                    case "--help":
                        options.ShowHelp = true;
                        break;
                    case "--architecture":
                        options.Architecture = ParseArchitecture(value ?? NextValue(args, ref i, name));
                        break;
                    case "--epochs":
                        options.Epochs = ParseCount(value ?? NextValue(args, ref i, name), name, minimum: 1);
                        break;
                    case "--data":
                        options.DataDirectory = value ?? NextValue(args, ref i, name);
                        break;
                    case "--kept":
                        options.KeptFraction = ParseKept(value ?? NextValue(args, ref i, name));
                        break;
                    case "--retrain-epochs":
                        options.RetrainEpochs = ParseCount(value ?? NextValue(args, ref i, name), name, minimum: 0);
                        break;
                    case "--output":
                        options.OutputDirectory = value ?? NextValue(args, ref i, name);
                        break;
                    default:
                        throw new FormatException($"Unknown option '{args[i]}'.");
                }
            }
            return options;
        }

        private static string NextValue(IReadOnlyList<string> args, ref int index, string name)
        {
            if (index + 1 >= args.Count || string.IsNullOrWhiteSpace(args[index + 1]))
                throw new FormatException($"Option {name} needs a value.");
            return args[++index];
        }

        private static ImageClassifierArchitecture ParseArchitecture(string value)
        {
            foreach (ImageClassifierArchitecture architecture in AllArchitectures)
            {
                if (string.Equals(value, Architectures.ShortName(architecture), StringComparison.OrdinalIgnoreCase)
                    || string.Equals(value, architecture.ToString(), StringComparison.OrdinalIgnoreCase))
                {
                    return architecture;
                }
            }
            throw new FormatException(
                $"Unknown architecture '{value}'; use one of {string.Join(", ", AllArchitectures.Select(Architectures.ShortName))}.");
        }

        private static int ParseCount(string value, string name, int minimum)
        {
            if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int count) || count < minimum)
                throw new FormatException($"{name} must be a whole number of at least {minimum}; got '{value}'.");
            return count;
        }

        private static double ParseKept(string value)
        {
            if (!double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double kept) || !(kept > 0 && kept <= 1))
                throw new FormatException($"--kept must be a number in (0, 1]; got '{value}'.");
            return kept;
        }
    }
}
