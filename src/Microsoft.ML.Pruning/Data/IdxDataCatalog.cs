// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using Microsoft.ML.Data;

namespace Microsoft.ML.Pruning.Data
{
    /// <summary>Loads IDX image/label file pairs (MNIST, Fashion-MNIST) into ML.NET.</summary>
    public static class IdxDataCatalog
    {
        /// <summary>Name of the text label column.</summary>
        public const string LabelColumnName = "Label";

        /// <summary>Name of the image column, a <c>Vector&lt;Single, 1, H, W&gt;</c>.</summary>
        public const string FeaturesColumnName = "Features";

        /// <summary>
        /// Loads an IDX image file and its label file as an <see cref="IDataView"/> with a text column
        /// <c>Label</c> and a <c>Features</c> column of type <c>Vector&lt;Single, 1, H, W&gt;</c> (channels, height,
        /// width: the layout of <c>ExtractPixels</c>), holding pixel × <paramref name="scale"/>.
        /// The data is read into memory once; the view knows its row count and can be shuffled.
        /// </summary>
        /// <param name="catalog">The data catalog, <c>mlContext.Data</c>.</param>
        /// <param name="imagesPath">The image file (magic <c>0x00000803</c>), gzip-compressed or raw.</param>
        /// <param name="labelsPath">The label file (magic <c>0x00000801</c>), gzip-compressed or raw.</param>
        /// <param name="labelNames">Class names indexed by label value; null uses the label value itself ("7").</param>
        /// <param name="scale">Factor applied to each pixel byte; the default maps 0..255 to 0..1.</param>
        /// <param name="maxRows">Loads at most this many (the first) rows; null loads all.</param>
        /// <exception cref="FileNotFoundException">A file does not exist.</exception>
        /// <exception cref="InvalidDataException">
        /// A file is not a valid IDX file of its kind, the two files hold different numbers of items, or a label
        /// has no name in <paramref name="labelNames"/>.
        /// </exception>
        public static IDataView LoadFromIdx(this DataOperationsCatalog catalog, string imagesPath, string labelsPath,
            IReadOnlyList<string>? labelNames = null, float scale = 1f / 255, int? maxRows = null)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            ArgumentException.ThrowIfNullOrEmpty(imagesPath);
            ArgumentException.ThrowIfNullOrEmpty(labelsPath);
            if (!float.IsFinite(scale))
                throw new ArgumentOutOfRangeException(nameof(scale), scale, "The pixel scale must be a finite number.");
            if (maxRows is int max)
                ArgumentOutOfRangeException.ThrowIfNegative(max, nameof(maxRows));
            ReadOnlyMemory<char>[] labelTexts = CreateLabelTexts(labelNames);

            // Labels first: they are small, and a mismatched pair then fails before the images are decompressed.
            byte[] labels = IdxReader.ReadLabels(labelsPath, maxRows, out int labelCount);
            IdxImages images = IdxReader.ReadImages(imagesPath, maxRows, out int imageCount);
            // Compare the declared counts, so that a mismatched pair fails even when maxRows hides the difference.
            if (imageCount != labelCount)
                throw new InvalidDataException($"Image file '{Path.GetFullPath(imagesPath)}' holds {imageCount} images but label file '{Path.GetFullPath(labelsPath)}' holds {labelCount} labels; they must be the two halves of one IDX data set.");
            if (labelNames is not null)
                CheckLabels(labels, labelNames.Count, labelsPath);

            return Create(images, labels, labelTexts, scale);
        }

        private static IDataView Create(IdxImages images, byte[] labels, ReadOnlyMemory<char>[] labelTexts, float scale)
        {
            // 256 possible bytes: a lookup table is exact and cheaper than converting and multiplying.
            var values = new float[256];
            for (int i = 0; i < values.Length; i++)
                values[i] = i * scale;
            byte[] pixels = images.Pixels;
            int size = images.PixelsPerImage;

            return new InMemoryDataView(images.Count,
                InMemoryDataView.Create(LabelColumnName, TextDataViewType.Instance,
                    (int row, ref ReadOnlyMemory<char> value) => value = labelTexts[labels[row]]),
                InMemoryDataView.Create(FeaturesColumnName, new VectorDataViewType(NumberDataViewType.Single, 1, images.Height, images.Width),
                    (int row, ref VBuffer<float> value) =>
                    {
                        var editor = VBufferEditor.Create(ref value, size);
                        Span<float> destination = editor.Values;
                        ReadOnlySpan<byte> source = pixels.AsSpan(row * size, size);
                        for (int i = 0; i < source.Length; i++)
                            destination[i] = values[source[i]];
                        value = editor.Commit();
                    }));
        }

        /// <summary>The text of each label value: its name, or the number itself when there are no names.</summary>
        private static ReadOnlyMemory<char>[] CreateLabelTexts(IReadOnlyList<string>? labelNames)
        {
            if (labelNames is null)
            {
                var numbers = new ReadOnlyMemory<char>[256];
                for (int i = 0; i < numbers.Length; i++)
                    numbers[i] = i.ToString(CultureInfo.InvariantCulture).AsMemory();
                return numbers;
            }

            if (labelNames.Count == 0)
                throw new ArgumentException("labelNames is empty; pass null to use the label values as names.", nameof(labelNames));
            var texts = new ReadOnlyMemory<char>[labelNames.Count];
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < texts.Length; i++)
            {
                string name = labelNames[i];
                // ValueToKey maps empty text to the missing key, and duplicates would merge two classes.
                if (string.IsNullOrWhiteSpace(name))
                    throw new ArgumentException($"labelNames[{i}] is null or blank; every class needs a name.", nameof(labelNames));
                if (!seen.Add(name))
                    throw new ArgumentException($"labelNames contains '{name}' more than once.", nameof(labelNames));
                texts[i] = name.AsMemory();
            }
            return texts;
        }

        private static void CheckLabels(byte[] labels, int nameCount, string labelsPath)
        {
            for (int i = 0; i < labels.Length; i++)
            {
                if (labels[i] >= nameCount)
                    throw new InvalidDataException($"{Path.GetFullPath(labelsPath)}: label {labels[i]} at index {i} has no name; {nameCount} label names were given (values 0 to {nameCount - 1}).");
            }
        }
    }
}
