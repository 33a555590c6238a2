// Licensed under the MIT license.

using System;
using System.IO;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Transforms;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using SkiaSharp;

namespace Microsoft.ML.Pruning.Tests.Data
{
    /// <summary>The image-folder pipeline of the README: LoadImagePaths → LoadImagePixels → trainer, gray and color.</summary>
    [TestClass]
    public sealed class ImagePixelsPipelineTests
    {
        private const int Side = 20;
        private readonly MLContext _mlContext = new(seed: 1);
        private string _directory = null!;

        [TestInitialize]
        public void CreateImages()
        {
            _directory = DataTestFiles.CreateTempDirectory();
            // Two classes of gray images: a bright top half or a bright bottom half, with some noise.
            var random = new Random(3);
            for (int i = 0; i < 24; i++)
            {
                WritePng(Path.Combine(_directory, "top", $"{i}.png"), (x, y) => Gray(y < Side / 2 ? 220 : 30, random));
                WritePng(Path.Combine(_directory, "bottom", $"{i}.png"), (x, y) => Gray(y >= Side / 2 ? 220 : 30, random));
            }
        }

        [TestCleanup]
        public void DeleteImages() => DataTestFiles.DeleteDirectory(_directory);

        [TestMethod]
        public void GrayscaleFolderTrainsAOneChannelNetworkThatScoresFromTheSameFolder()
        {
            IDataView paths = _mlContext.Data.LoadImagePaths(_directory);
            var pipeline = _mlContext.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
                .Append(_mlContext.Transforms.LoadImagePixels(width: 28, height: 28, grayscale: true))
                .Append(_mlContext.MulticlassClassification.Trainers.ImageClassifier(new ImageClassifierTrainer.Options { Epochs = 6, BatchSize = 8 }))
                .Append(_mlContext.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
            ITransformer model = pipeline.Fit(paths);

            Assert.AreEqual(new ImageShape(1, 28, 28), model.GetImageClassifier().Network.Definition.Input);
            // LeNet-5 at 1x28x28 has 61,706 parameters for 10 classes (README); with 2, fc3 has 84·2+2 instead of 84·10+10.
            Assert.AreEqual(61_706 - 680, model.GetSummary().Parameters);
            IDataView scored = model.Transform(paths);
            float[] pixels = scored.GetColumn<float[]>("Features").First();
            Assert.AreEqual(28 * 28, pixels.Length);
            Assert.IsTrue(pixels.All(p => p >= 0 && p <= 1), "pixels scaled to 0..1");
            string[] predicted = scored.GetColumn<string>("PredictedLabel").ToArray();
            string[] labels = paths.GetColumn<string>("Label").ToArray();
            Assert.IsTrue(predicted.Zip(labels).Count(p => p.First == p.Second) >= 44, "two trivially separable classes");
        }

        [TestMethod]
        public void WithoutGrayscaleTheSameFolderGivesThreeEqualChannels()
        {
            IDataView paths = _mlContext.Data.LoadImagePaths(_directory);
            IDataView pixels = _mlContext.Transforms.LoadImagePixels(width: 8, height: 8, grayscale: false).Fit(paths).Transform(paths);
            var type = (VectorDataViewType)pixels.Schema["Features"].Type;
            CollectionAssert.AreEqual(new[] { 3, 8, 8 }, type.Dimensions.ToArray());
            float[] first = pixels.GetColumn<float[]>("Features").First();
            CollectionAssert.AreEqual(first[..64], first[64..128]);
        }

        [TestMethod]
        public void PixelsForATrainedModelTakeItsChannelsAndSize()
        {
            // A model trained on 1x12x12 synthetic images (as from LoadFromIdx) scores image files through the steps it gets.
            IDataView train = SyntheticImages.Load(_mlContext, 64, channels: 1, height: 12, width: 12);
            ITransformer model = SyntheticImages.MapLabel(_mlContext)
                .Append(_mlContext.MulticlassClassification.Trainers.ImageClassifier(new ImageClassifierTrainer.Options { Epochs = 1, BatchSize = 16 }))
                .Fit(train);

            IDataView paths = _mlContext.Data.LoadImagePaths(_directory);
            IDataView pixels = _mlContext.Transforms.LoadImagePixels(model).Fit(paths).Transform(paths);

            var type = (VectorDataViewType)pixels.Schema["Features"].Type;
            CollectionAssert.AreEqual(new[] { 1, 12, 12 }, type.Dimensions.ToArray());
            float[] scores = model.GetImageClassifier().Transform(pixels).GetColumn<float[]>("Score").First();
            Assert.AreEqual(SyntheticImages.ClassNames.Length, scores.Length);
        }

        [TestMethod]
        public void ColorPixelsForAGrayModelFailNamingTheShapes()
        {
            IDataView train = SyntheticImages.Load(_mlContext, 32, channels: 1, height: 12, width: 12);
            ITransformer model = SyntheticImages.MapLabel(_mlContext)
                .Append(_mlContext.MulticlassClassification.Trainers.ImageClassifier(new ImageClassifierTrainer.Options { Epochs = 1, BatchSize = 16 }))
                .Fit(train);
            IDataView paths = _mlContext.Data.LoadImagePaths(_directory);
            IDataView color = _mlContext.Transforms.LoadImagePixels(width: 12, height: 12, grayscale: false).Fit(paths).Transform(paths);

            var ex = Assert.Throws<ArgumentException>(() => model.GetImageClassifier().Transform(color));
            StringAssert.Contains(ex.Message, "1x12x12");
            StringAssert.Contains(ex.Message, "Vector<Single, 3, 12, 12>");
        }

        [TestMethod]
        public void AModelTakingOtherChannelCountsHasNoImageFileSteps()
        {
            IDataView train = SyntheticImages.Load(_mlContext, 32, channels: 2, height: 12, width: 12);
            ITransformer model = SyntheticImages.MapLabel(_mlContext)
                .Append(_mlContext.MulticlassClassification.Trainers.ImageClassifier(new ImageClassifierTrainer.Options { Epochs = 1, BatchSize = 16 }))
                .Fit(train);

            var ex = Assert.ThrowsExactly<ArgumentException>(() => _mlContext.Transforms.LoadImagePixels(model));
            StringAssert.Contains(ex.Message, "The model takes 2x12x12 images (2 channels); image files give 1 (grayscale) or 3 (red, green, blue) channels.");
        }

        private static SKColor Gray(int level, Random random)
        {
            byte value = (byte)Math.Clamp(level + random.Next(-25, 26), 0, 255);
            return new SKColor(value, value, value);
        }

        private static void WritePng(string path, Func<int, int, SKColor> color)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            using var bitmap = new SKBitmap(new SKImageInfo(Side, Side, SKColorType.Rgba8888, SKAlphaType.Unpremul));
            for (int y = 0; y < Side; y++)
            {
                for (int x = 0; x < Side; x++)
                    bitmap.SetPixel(x, y, color(x, y));
            }
            using SKData png = bitmap.Encode(SKEncodedImageFormat.Png, 100);
            File.WriteAllBytes(path, png.ToArray());
        }
    }
}
