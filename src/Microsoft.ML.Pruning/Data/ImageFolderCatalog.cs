// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Pruning.Data
{
    /// <summary>
    /// Lists labelled image files laid out as Model Builder expects, one sub-folder per class
    /// (<c>flowers/daisy/1.jpg</c>, <c>flowers/rose/2.png</c>, …), for an ImageAnalytics pipeline
    /// (<c>LoadImages</c> → <c>ResizeImages</c> → <c>ExtractPixels</c>), and that pipeline with the channel count the
    /// network needs.
    /// </summary>
    public static class ImageFolderCatalog
    {
        /// <summary>Name of the text label column.</summary>
        public const string LabelColumnName = "Label";

        /// <summary>Name of the text column holding each image's absolute path.</summary>
        public const string ImagePathColumnName = "ImagePath";

        /// <summary>The file extensions taken as images (compared case-insensitively).</summary>
        public static IReadOnlyList<string> ImageExtensions { get; } = Array.AsReadOnly(new[] { ".png", ".jpg", ".jpeg", ".bmp" });

        private static readonly HashSet<string> _extensions = new(ImageExtensions, StringComparer.OrdinalIgnoreCase);

        /// <summary>
        /// Lists the image files under <paramref name="folder"/> and its sub-folders as an <see cref="IDataView"/> with
        /// text columns <c>Label</c> and <c>ImagePath</c> (absolute), sorted by label, then path. Hidden files are skipped.
        /// </summary>
        /// <param name="catalog">The data catalog, <c>mlContext.Data</c>.</param>
        /// <param name="folder">The root folder.</param>
        /// <param name="useFolderNameAsLabel">
        /// True: the label is the name of the folder directly holding the file (files directly in <paramref name="folder"/>
        /// get its own name). False: the label is the file name's leading letters (<c>cat042.jpg</c> → <c>cat</c>),
        /// as in ML.NET's image classification samples.
        /// </param>
        /// <exception cref="DirectoryNotFoundException"><paramref name="folder"/> does not exist.</exception>
        /// <exception cref="ArgumentException">The folder holds no image files, or a file name yields no label.</exception>
        public static IDataView LoadImagePaths(this DataOperationsCatalog catalog, string folder, bool useFolderNameAsLabel = true)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            ArgumentException.ThrowIfNullOrEmpty(folder);
            string root = Path.GetFullPath(folder);
            if (!Directory.Exists(root))
                throw new DirectoryNotFoundException($"Image folder '{root}' does not exist.");

            // The default options skip hidden and system files (.DS_Store, Thumbs.db) and sub-folders.
            var options = new EnumerationOptions { RecurseSubdirectories = true, MatchType = MatchType.Simple };
            var images = Directory.EnumerateFiles(root, "*", options)
                .Where(path => _extensions.Contains(Path.GetExtension(path)))
                .Select(path => (Label: GetLabel(path, useFolderNameAsLabel), Path: path))
                .OrderBy(image => image.Label, StringComparer.Ordinal)
                .ThenBy(image => image.Path, StringComparer.Ordinal)
                .ToArray();
            if (images.Length == 0)
                throw new ArgumentException($"Image folder '{root}' and its sub-folders hold no image files ({string.Join(", ", ImageExtensions)}).", nameof(folder));

            ReadOnlyMemory<char>[] labels = images.Select(image => image.Label.AsMemory()).ToArray();
            ReadOnlyMemory<char>[] paths = images.Select(image => image.Path.AsMemory()).ToArray();
            return new InMemoryDataView(images.Length,
                InMemoryDataView.Create(LabelColumnName, TextDataViewType.Instance, (int row, ref ReadOnlyMemory<char> value) => value = labels[row]),
                InMemoryDataView.Create(ImagePathColumnName, TextDataViewType.Instance, (int row, ref ReadOnlyMemory<char> value) => value = paths[row]));
        }

        /// <summary>
        /// The image-reading steps in front of the trainer: <c>LoadImages</c> (from the <c>ImagePath</c> column of
        /// <see cref="LoadImagePaths"/>) → <c>ResizeImages</c> → (grayscale: <c>ConvertToGrayscale</c>) → <c>ExtractPixels</c>,
        /// giving a <c>Vector&lt;Single, C, H, W&gt;</c> column with pixels scaled to 0..1, as <c>LoadFromIdx</c> gives.
        /// </summary>
        /// <remarks>
        /// ImageAnalytics' <c>ExtractPixels</c> extracts red, green and blue by default, so without
        /// <paramref name="grayscale"/> a gray data set trains a network on three equal channels. With it the column has one
        /// channel (the gray image's red plane), which is what the built-in architectures (1×28×28) and models trained on
        /// Fashion-MNIST take.
        /// </remarks>
        /// <param name="catalog">The transforms catalog, <c>mlContext.Transforms</c>.</param>
        /// <param name="width">The width every image is resized to.</param>
        /// <param name="height">The height every image is resized to.</param>
        /// <param name="grayscale">True: one gray channel. False: three channels, red, green, blue.</param>
        /// <param name="outputColumnName">The pixel column. Default: <c>Features</c>, the trainer's default.</param>
        /// <param name="imagePathColumnName">The column of image paths. Default: <c>ImagePath</c>.</param>
        /// <exception cref="ArgumentOutOfRangeException"><paramref name="width"/> or <paramref name="height"/> is not positive.</exception>
        public static IEstimator<ITransformer> LoadImagePixels(this TransformsCatalog catalog, int width, int height, bool grayscale,
            string outputColumnName = "Features", string imagePathColumnName = ImagePathColumnName)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
            ArgumentException.ThrowIfNullOrEmpty(outputColumnName);
            ArgumentException.ThrowIfNullOrEmpty(imagePathColumnName);
            const string imageColumn = "Image";
            IEstimator<ITransformer> steps = catalog.LoadImages(imageColumn, imageFolder: null, imagePathColumnName)
                .Append(catalog.ResizeImages(imageColumn, width, height));
            if (grayscale)
                steps = steps.Append(catalog.ConvertToGrayscale(imageColumn));
            return steps.Append(catalog.ExtractPixels(outputColumnName, imageColumn,
                colorsToExtract: grayscale ? ImagePixelExtractingEstimator.ColorBits.Red : ImagePixelExtractingEstimator.ColorBits.Rgb,
                scaleImage: 1f / 255));
        }

        /// <summary>
        /// The image-reading steps of <see cref="LoadImagePixels(TransformsCatalog, int, int, bool, string, string)"/> that
        /// fit <paramref name="trainedModel"/>: its input's width, height and channel count (1: grayscale, 3: red, green,
        /// blue), to score image files with a model trained on other data (e.g. Fashion-MNIST).
        /// </summary>
        /// <param name="catalog">The transforms catalog, <c>mlContext.Transforms</c>.</param>
        /// <param name="trainedModel">A model that contains one image classifier of this library.</param>
        /// <param name="imagePathColumnName">The column of image paths. Default: <c>ImagePath</c>.</param>
        /// <exception cref="ArgumentException">The model has no image classifier, or takes images of a channel count that
        /// image files do not give (other than 1 or 3).</exception>
        public static IEstimator<ITransformer> LoadImagePixels(this TransformsCatalog catalog, ITransformer trainedModel,
            string imagePathColumnName = ImagePathColumnName)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            ImageClassificationTransformer classifier = ClassifierInModel.Find(trainedModel, nameof(trainedModel)).Classifier;
            ImageShape input = classifier.Network.Definition.Input;
            if (input.Channels is not (1 or 3))
            {
                throw new ArgumentException(
                    $"The model takes {input} images ({input.Channels} channels); image files give 1 (grayscale) or 3 (red, green, blue) channels.",
                    nameof(trainedModel));
            }
            return LoadImagePixels(catalog, input.Width, input.Height, grayscale: input.Channels == 1, classifier.FeatureColumnName, imagePathColumnName);
        }

        private static string GetLabel(string path, bool useFolderNameAsLabel)
        {
            if (useFolderNameAsLabel)
                return Path.GetFileName(Path.GetDirectoryName(path))!;
            string name = Path.GetFileName(path);
            int letters = 0;
            while (letters < name.Length && char.IsLetter(name[letters]))
                letters++;
            // An empty label would become ValueToKey's missing key and silently drop out of training.
            if (letters == 0)
                throw new ArgumentException($"Cannot take a label from '{path}': the file name does not start with a letter. Put the images in one sub-folder per label and use useFolderNameAsLabel: true.");
            return name[..letters];
        }
    }
}
