// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Collections.ObjectModel;
using System.Diagnostics.CodeAnalysis;
using System.IO;

namespace Microsoft.ML.Pruning.Data
{
    /// <summary>
    /// The Fashion-MNIST data set (Zalando, MIT license): 28×28 gray images of 10 clothing classes, 60,000 for
    /// training and 10,000 for testing. The files are read from <see cref="DataDirectory"/>; nothing is downloaded.
    /// </summary>
    public static class FashionMnist
    {
        /// <summary>Where the Debian/Ubuntu package <c>dataset-fashion-mnist</c> installs the files.</summary>
        public const string DefaultDirectory = "/usr/share/datasets/fashion-mnist";

        /// <summary>Environment variable that, when set, replaces <see cref="DefaultDirectory"/>.</summary>
        public const string DirectoryVariable = "FASHION_MNIST_DIR";

        /// <summary>File name of the training images.</summary>
        public const string TrainImagesFileName = "train-images-idx3-ubyte.gz";

        /// <summary>File name of the training labels.</summary>
        public const string TrainLabelsFileName = "train-labels-idx1-ubyte.gz";

        /// <summary>File name of the test images.</summary>
        public const string TestImagesFileName = "t10k-images-idx3-ubyte.gz";

        /// <summary>File name of the test labels.</summary>
        public const string TestLabelsFileName = "t10k-labels-idx1-ubyte.gz";

        /// <summary>The 10 official class names, indexed by label value.</summary>
        public static IReadOnlyList<string> ClassNames { get; } = new ReadOnlyCollection<string>(new[]
        {
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        });

        /// <summary>The directory the loaders read: <c>FASHION_MNIST_DIR</c> when set, else <see cref="DefaultDirectory"/>.</summary>
        public static string DataDirectory
        {
            get
            {
                string? configured = Environment.GetEnvironmentVariable(DirectoryVariable);
                return string.IsNullOrWhiteSpace(configured) ? DefaultDirectory : configured;
            }
        }

        /// <summary>Finds the data set: true when <see cref="DataDirectory"/> holds all four files.</summary>
        /// <param name="directory">The full path of <see cref="DataDirectory"/> when found, else null.</param>
        public static bool TryFindDirectory([NotNullWhen(true)] out string? directory)
        {
            string candidate = Path.GetFullPath(DataDirectory);
            foreach (string name in new[] { TrainImagesFileName, TrainLabelsFileName, TestImagesFileName, TestLabelsFileName })
            {
                if (FindFile(candidate, name) is null)
                {
                    directory = null;
                    return false;
                }
            }
            directory = candidate;
            return true;
        }

        /// <summary>Loads the 60,000 training images (columns <c>Label</c>, a class name, and <c>Features</c>, <c>Vector&lt;Single, 1, 28, 28&gt;</c> scaled to 0..1).</summary>
        /// <param name="mlContext">The ML.NET context.</param>
        /// <param name="maxRows">Loads at most this many (the first) rows; null loads all.</param>
        /// <param name="directory">Directory of the files; null uses <see cref="DataDirectory"/>.</param>
        /// <exception cref="FileNotFoundException">The files are missing; the message says how to get them.</exception>
        public static IDataView LoadTrain(MLContext mlContext, int? maxRows = null, string? directory = null)
            => Load(mlContext, TrainImagesFileName, TrainLabelsFileName, maxRows, directory);

        /// <summary>Loads the 10,000 test images (columns <c>Label</c>, a class name, and <c>Features</c>, <c>Vector&lt;Single, 1, 28, 28&gt;</c> scaled to 0..1).</summary>
        /// <param name="mlContext">The ML.NET context.</param>
        /// <param name="maxRows">Loads at most this many (the first) rows; null loads all.</param>
        /// <param name="directory">Directory of the files; null uses <see cref="DataDirectory"/>.</param>
        /// <exception cref="FileNotFoundException">The files are missing; the message says how to get them.</exception>
        public static IDataView LoadTest(MLContext mlContext, int? maxRows = null, string? directory = null)
            => Load(mlContext, TestImagesFileName, TestLabelsFileName, maxRows, directory);

        private static IDataView Load(MLContext mlContext, string imagesName, string labelsName, int? maxRows, string? directory)
        {
            ArgumentNullException.ThrowIfNull(mlContext);
            string fullDirectory = Path.GetFullPath(directory ?? DataDirectory);
            string imagesPath = FindFile(fullDirectory, imagesName) ?? throw Missing(fullDirectory, imagesName, directory is null);
            string labelsPath = FindFile(fullDirectory, labelsName) ?? throw Missing(fullDirectory, labelsName, directory is null);
            return mlContext.Data.LoadFromIdx(imagesPath, labelsPath, ClassNames, maxRows: maxRows);
        }

        /// <summary>The file, or its unpacked form without ".gz" (the reader detects compression from the content).</summary>
        private static string? FindFile(string directory, string name)
        {
            string packed = Path.Combine(directory, name);
            if (File.Exists(packed))
                return packed;
            string unpacked = Path.Combine(directory, Path.GetFileNameWithoutExtension(name));
            return File.Exists(unpacked) ? unpacked : null;
        }

        private static FileNotFoundException Missing(string directory, string name, bool fromEnvironment)
        {
            string source = !fromEnvironment ? "the directory given"
                : string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(DirectoryVariable)) ? "the default directory"
                : "set by " + DirectoryVariable;
            string path = Path.Combine(directory, name);
            return new FileNotFoundException(
                $"Fashion-MNIST file '{name}' was not found in '{directory}' ({source}). "
                + $"Install the data set with 'apt-get install dataset-fashion-mnist' (Debian/Ubuntu; it goes to {DefaultDirectory}), "
                + $"or set {DirectoryVariable} to a directory holding {TrainImagesFileName}, {TrainLabelsFileName}, {TestImagesFileName} and {TestLabelsFileName} "
                + "(from https://github.com/zalandoresearch/fashion-mnist; unpacked copies without .gz work too).",
                path);
        }
    }
}
