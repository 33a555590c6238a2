// Licensed under the MIT license.

using System;
using System.IO;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Transforms;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using SkiaSharp;

namespace Microsoft.ML.Pruning.Tests.Data
{
    [TestClass]
    public sealed class ImageFolderCatalogTests
    {
        private const int ImageWidth = 12;
        private const int ImageHeight = 10;

        private readonly MLContext _mlContext = new(seed: 1);
        private string _directory = null!;

        [TestInitialize]
        public void CreateDirectory() => _directory = DataTestFiles.CreateTempDirectory();

        [TestCleanup]
        public void DeleteDirectory() => DataTestFiles.DeleteDirectory(_directory);

        [TestMethod]
        public void FolderPipelineProducesKeysAndChannelsFirstPixels()
        {
            for (int i = 0; i < 3; i++)
            {
                WritePng(Path.Combine(_directory, "blocks", $"{i}.png"), (x, y) => BlockColor(i, x, y));
                WritePng(Path.Combine(_directory, "stripes", $"{i}.png"), (x, y) => x / 2 % 2 == 0 ? new SKColor(255, 255, 255) : new SKColor((byte)(60 * i), 0, 0));
            }

            IDataView paths = _mlContext.Data.LoadImagePaths(_directory);
            var pipeline = _mlContext.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
                .Append(_mlContext.Transforms.LoadImages("Image", null, "ImagePath"))
                .Append(_mlContext.Transforms.ResizeImages("Image", 8, 8))
                .Append(_mlContext.Transforms.ExtractPixels("Features", "Image"));
            IDataView data = pipeline.Fit(paths).Transform(paths);

            var features = (VectorDataViewType)data.Schema["Features"].Type;
            CollectionAssert.AreEqual(new[] { 3, 8, 8 }, features.Dimensions.ToArray());
            var label = (KeyDataViewType)data.Schema["Label"].Type;
            Assert.AreEqual(2UL, label.Count);
            VBuffer<ReadOnlyMemory<char>> keyValues = default;
            data.Schema["Label"].GetKeyValues(ref keyValues);
            CollectionAssert.AreEqual(new[] { "blocks", "stripes" }, keyValues.DenseValues().Select(v => v.ToString()).ToArray());
            CollectionAssert.AreEqual(new uint[] { 1, 1, 1, 2, 2, 2 }, data.GetColumn<uint>("Label").ToArray());

            // Row 0 is blocks/0.png; the middle of its top-left quadrant keeps the quadrant's color through the
            // resize. ExtractPixels is planar: all red values, then green, then blue.
            float[] first = data.GetColumn<float[]>("Features").First();
            SKColor topLeft = BlockColor(0, 0, 0);
            int pixel = 1 * 8 + 1;
            Assert.AreEqual(topLeft.Red, first[pixel]);
            Assert.AreEqual(topLeft.Green, first[64 + pixel]);
            Assert.AreEqual(topLeft.Blue, first[128 + pixel]);
        }

        [TestMethod]
        public void ListsImagesSortedByLabelThenPath()
        {
            Touch("zebra", "b.JPG");
            Touch("zebra", "a.png");
            Touch("ant", "nested", "x.jpeg");
            Touch("ant", "y.Bmp");
            Touch("ant", "notes.txt");
            Touch("ant", ".hidden.png");
            Touch("cat", "c.gif");

            IDataView data = _mlContext.Data.LoadImagePaths(_directory);

            CollectionAssert.AreEqual(new[] { "Label", "ImagePath" }, data.Schema.Select(c => c.Name).ToArray());
            Assert.AreEqual(TextDataViewType.Instance, data.Schema["ImagePath"].Type);
            CollectionAssert.AreEqual(new[] { "ant", "nested", "zebra", "zebra" }, data.GetColumn<string>("Label").ToArray());
            CollectionAssert.AreEqual(
                new[] { Path.Combine(_directory, "ant", "y.Bmp"), Path.Combine(_directory, "ant", "nested", "x.jpeg"), Path.Combine(_directory, "zebra", "a.png"), Path.Combine(_directory, "zebra", "b.JPG") },
                data.GetColumn<string>("ImagePath").ToArray());
            Assert.AreEqual(4L, data.GetRowCount());
        }

        [TestMethod]
        public void FileNamePrefixCanBeTheLabel()
        {
            Touch("all", "dog12.png");
            Touch("all", "cat3.jpg");
            Touch("all", "cat10.jpg");

            IDataView data = _mlContext.Data.LoadImagePaths(_directory, useFolderNameAsLabel: false);

            CollectionAssert.AreEqual(new[] { "cat", "cat", "dog" }, data.GetColumn<string>("Label").ToArray());

            Touch("all", "42.png");
            var ex = Assert.ThrowsExactly<ArgumentException>(() => _mlContext.Data.LoadImagePaths(_directory, useFolderNameAsLabel: false));
            StringAssert.Contains(ex.Message, "42.png");
        }

        [TestMethod]
        public void MissingOrEmptyFolderIsReported()
        {
            string missing = Path.Combine(_directory, "missing");
            var notFound = Assert.ThrowsExactly<DirectoryNotFoundException>(() => _mlContext.Data.LoadImagePaths(missing));
            StringAssert.Contains(notFound.Message, missing);

            Touch("empty", "readme.txt");
            var empty = Assert.ThrowsExactly<ArgumentException>(() => _mlContext.Data.LoadImagePaths(_directory));
            StringAssert.Contains(empty.Message, $"Image folder '{_directory}' and its sub-folders hold no image files (.png, .jpg, .jpeg, .bmp)");
        }

        /// <summary>Four 6×5 blocks whose colors depend on the image index.</summary>
        private static SKColor BlockColor(int image, int x, int y)
        {
            int block = (y < ImageHeight / 2 ? 0 : 2) + (x < ImageWidth / 2 ? 0 : 1);
            return new SKColor((byte)(200 - 50 * block), (byte)(40 + 10 * image), (byte)(10 + 60 * block));
        }

        private static void WritePng(string path, Func<int, int, SKColor> color)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            using var bitmap = new SKBitmap(new SKImageInfo(ImageWidth, ImageHeight, SKColorType.Rgba8888, SKAlphaType.Unpremul));
            for (int y = 0; y < ImageHeight; y++)
            {
                for (int x = 0; x < ImageWidth; x++)
                    bitmap.SetPixel(x, y, color(x, y));
            }
            using SKData png = bitmap.Encode(SKEncodedImageFormat.Png, 100);
            File.WriteAllBytes(path, png.ToArray());
        }

        /// <summary>An empty file: listing never opens the images.</summary>
        private void Touch(params string[] parts)
        {
            string path = Path.Combine(new[] { _directory }.Concat(parts).ToArray());
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllBytes(path, Array.Empty<byte>());
        }
    }
}
