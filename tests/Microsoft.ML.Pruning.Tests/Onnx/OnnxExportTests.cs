// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Pruners.ShiftAttention;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Onnx
{
    /// <summary>
    /// <c>mlContext.Model.ConvertToOnnx</c> on the library's classifiers: every kind of model it makes, scored by ONNX Runtime
    /// and by ML.NET's <c>ApplyOnnxModel</c>, gives the library's own scores (to 1e-4) and labels.
    /// </summary>
    [TestClass]
    public sealed class OnnxExportTests
    {
        private const double Tolerance = 1e-4;
        private const int Images = 24;

        public enum Kind
        {
            Dense,
            DenseBatchNorm,
            WeightSparse,
            Shift,
            ShiftAttention,
            ShiftAttentionUnfolded,
            ShiftAttentionShared,
        }

        [TestMethod]
        [DataRow(ImageClassifierArchitecture.LeNet300100, Kind.Dense, DisplayName = "LeNet-300-100, dense")]
        [DataRow(ImageClassifierArchitecture.LeNet5, Kind.WeightSparse, DisplayName = "LeNet-5, 10% of the weights kept")]
        [DataRow(ImageClassifierArchitecture.VggSmall, Kind.DenseBatchNorm, DisplayName = "small VGG, dense, batch norm")]
        [DataRow(ImageClassifierArchitecture.VggSmall, Kind.Shift, DisplayName = "small VGG, fixed grouped shifts")]
        [DataRow(ImageClassifierArchitecture.VggSmall, Kind.ShiftAttention, DisplayName = "small VGG, shift attention compacted")]
        [DataRow(ImageClassifierArchitecture.VggSmall, Kind.ShiftAttentionUnfolded, DisplayName = "small VGG, shift attention compacted, batch norm kept")]
        [DataRow(ImageClassifierArchitecture.VggSmall, Kind.ShiftAttentionShared, DisplayName = "small VGG, shared shift attention compacted")]
        [DataRow(ImageClassifierArchitecture.ResNet20, Kind.DenseBatchNorm, DisplayName = "ResNet-20, dense")]
        [DataRow(ImageClassifierArchitecture.ResNet20, Kind.ShiftAttention, DisplayName = "ResNet-20, shift attention compacted")]
        public void ExportedModelsScoreAsTheLibraryInOnnxRuntimeAndInMLNet(ImageClassifierArchitecture architecture, Kind kind)
        {
            var ml = new MLContext(seed: 1);
            ImageShape shape = architecture == ImageClassifierArchitecture.LeNet5 ? new ImageShape(1, 28, 28) : new ImageShape(1, 12, 12);
            using ImageClassificationTransformer classifier = Classifier(ml, Network(architecture, kind, shape));
            float[][] images = TestImages(shape, Images);
            AssertExportScoresAsTheLibrary(ml, classifier, images, shape);
        }

        [TestMethod]
        [DataRow(ImageClassifierArchitecture.VggSmall, "conv2", 32, DisplayName = "small VGG")]
        [DataRow(ImageClassifierArchitecture.ResNet20, "stage1_0.body.conv1", 16, DisplayName = "ResNet-20, residual widths too")]
        public void ChannelPrunedModelsExportTheirSmallerConvolutions(ImageClassifierArchitecture architecture, string layer, int denseChannels)
        {
            var ml = new MLContext(seed: 1);
            var shape = new ImageShape(1, 12, 12);
            using ImageClassificationTransformer dense = Classifier(ml, Network(architecture, Kind.DenseBatchNorm, shape));
            IDataView calibration = ImagesView(ml, TestImages(shape, 64), shape);
            var options = new ChannelPruner.Options { MacsReduction = 2, PruneResidualWidth = true };
            var pruned = (ImageClassificationTransformer)ml.Transforms.PruneChannels(dense, options).Fit(calibration);
            using (pruned)
            {
                var conv = (Conv2dLayer)pruned.Network.Definition.Flatten().Single(l => l.Path == layer).Layer;
                Assert.IsLessThan(denseChannels, conv.OutChannels, "the pruner removed channels");
                AssertExportScoresAsTheLibrary(ml, pruned, TestImages(shape, Images), shape);
            }
        }

        [TestMethod]
        public void AChainWithTheLabelMappingExportsThePredictedClassNameAlsoAfterLoading()
        {
            // The whole pipeline as an application builds it: MapValueToKey, the classifier pruned by magnitude, MapKeyToValue;
            // then the same model loaded from its zip.
            var ml = new MLContext(seed: 1);
            IDataView train = ml.Data.Cache(SyntheticImages.Load(ml, 96));
            ITransformer model = Pruners.PrunerTestModels.Train(ml, train, ImageClassifierArchitecture.LeNet300100, epochs: 2);
            ITransformer pruned = ml.Transforms.PruneMagnitude(model, keptFraction: 0.1).Fit(train);
            string path = TempFile(), zip = Pruners.PrunerTestModels.TempZip();
            try
            {
                using (var file = File.Create(path))
                    ml.Model.ConvertToOnnx(pruned, train, file);
                using var onnx = ml.Transforms.ApplyOnnxModel(path).Fit(train);
                IDataView scored = onnx.Transform(train);
                IDataView expected = pruned.Transform(train);
                string[] names = scored.GetColumn<string[]>("PredictedLabel").Select(v => v.Single()).ToArray();
                CollectionAssert.AreEqual(expected.GetColumn<string>("PredictedLabel").ToArray(), names);
                AssertClose(expected.GetColumn<float[]>("Score").ToArray(), scored.GetColumn<float[]>("Score").ToArray(), "ApplyOnnxModel");
                CollectionAssert.IsSubsetOf(names.Distinct().ToArray(), SyntheticImages.ClassNames);

                // The same model saved and loaded in another context exports to the same file.
                ml.Model.Save(pruned, train.Schema, zip);
                var other = new MLContext(seed: 2);
                ITransformer loaded = other.Model.Load(zip, out _);
                try
                {
                    CollectionAssert.AreEqual(File.ReadAllBytes(path), Export(other, loaded, train));
                }
                finally
                {
                    Pruners.PrunerTestModels.DisposeAll(loaded);
                }
            }
            finally
            {
                File.Delete(path);
                File.Delete(zip);
                Pruners.PrunerTestModels.DisposeAll(pruned);
                Pruners.PrunerTestModels.DisposeAll(model);
            }
        }

        [TestMethod]
        public void FashionMnistImagesScoreAlikeWhenTheDataSetIsInstalled()
        {
            // Only where the dataset-fashion-mnist package is installed; unit tests must not need it.
            if (!File.Exists(Path.Combine(FashionMnist.DefaultDirectory, FashionMnist.TestImagesFileName)))
                return;
            var ml = new MLContext(seed: 1);
            var shape = new ImageShape(1, 28, 28);
            float[][] images = FashionMnist.LoadTest(ml, maxRows: 200, directory: FashionMnist.DefaultDirectory).GetColumn<float[]>("Features").ToArray();
            foreach (Kind kind in new[] { Kind.Dense, Kind.WeightSparse })
            {
                using ImageClassificationTransformer classifier = Classifier(ml, Network(ImageClassifierArchitecture.LeNet5, kind, shape));
                AssertExportScoresAsTheLibrary(ml, classifier, images, shape);
            }
        }

        [TestMethod]
        public void ShiftNetworksStayCompactInTheFile()
        {
            var ml = new MLContext(seed: 1);
            var shape = new ImageShape(1, 12, 12);
            IDataView data = ImagesView(ml, TestImages(shape, 4), shape);
            long Size(Kind kind)
            {
                using ImageClassificationTransformer classifier = Classifier(ml, Network(ImageClassifierArchitecture.ResNet20, kind, shape));
                return Export(ml, classifier, data).Length;
            }
            long convolutions = Size(Kind.DenseBatchNorm), shifts = Size(Kind.ShiftAttention);
            // 272,186 parameters against 33,834 and a byte of shift per pair: the file holds the pointwise weights, not k×k
            // kernels (one-hot kernels would take as much as the convolutions).
            Assert.IsGreaterThan(1_000_000L, convolutions);
            Assert.IsLessThan(convolutions / 4, shifts, $"convolutions {convolutions} B, shifts {shifts} B");
        }

        [TestMethod]
        public void ShiftAttentionLayersInTrainingFormAreRefusedNamingTheLayer()
        {
            var ml = new MLContext(seed: 1);
            var shape = new ImageShape(1, 12, 12);
            torch.random.manual_seed(5);
            using ImageClassificationTransformer classifier = Classifier(ml,
                ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.VggSmall, shape, 4, convolution: ConvolutionKind.ShiftAttention)));
            using var stream = new MemoryStream();
            var error = Assert.ThrowsExactly<NotSupportedException>(() => ml.Model.ConvertToOnnx(classifier, ImagesView(ml, TestImages(shape, 2), shape), stream));
            StringAssert.Contains(error.Message, "Layer 'conv2' (ShiftAttentionConv2dLayer) cannot be exported to ONNX");
            StringAssert.Contains(error.Message, "PruneAttention");
            Assert.AreEqual(0L, stream.Length, "nothing is written");
        }

        [TestMethod]
        public void AnOpsetOlderThan11IsRefused()
        {
            var ml = new MLContext(seed: 1);
            var shape = new ImageShape(1, 12, 12);
            torch.random.manual_seed(5);
            using ImageClassificationTransformer classifier = Classifier(ml, Network(ImageClassifierArchitecture.LeNet300100, Kind.Dense, shape));
            using var stream = new MemoryStream();
            var error = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Model.ConvertToOnnx(classifier, ImagesView(ml, TestImages(shape, 2), shape), 10, stream));
            StringAssert.Contains(error.Message, "Requested OpSet version 10 is lower than Pruning Image Classifier's minimum OpSet version requirement: 11");
            Assert.AreEqual(0L, stream.Length);
            Assert.IsGreaterThan(0, Export(ml, classifier, ImagesView(ml, TestImages(shape, 2), shape), opset: 11).Length);
        }

        /// <summary>Exports <paramref name="classifier"/>, then scores <paramref name="images"/> with ONNX Runtime (batch 1 and the whole
        /// batch) and with ML.NET's <c>ApplyOnnxModel</c>, and compares both with the library's scores and labels.</summary>
        private static void AssertExportScoresAsTheLibrary(MLContext ml, ImageClassificationTransformer classifier, float[][] images, ImageShape shape)
        {
            IDataView data = ImagesView(ml, images, shape);
            IDataView scored = classifier.Transform(data);
            float[][] expected = scored.GetColumn<float[]>("Score").ToArray();
            uint[] expectedLabels = scored.GetColumn<uint>("PredictedLabel").ToArray();
            Assert.IsGreaterThan(0.01, StandardDeviation(expected.SelectMany(s => s).ToArray()), "the comparison must not be between constants");

            byte[] model = Export(ml, classifier, data);

            using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL })
            using (var session = new InferenceSession(model, options))
            {
                var (scores, labels) = RunOnnxRuntime(session, images, shape);
                AssertClose(expected, scores, "ONNX Runtime, one batch");
                CollectionAssert.AreEqual(expectedLabels, labels, "ONNX Runtime labels");
                var (single, singleLabels) = RunOnnxRuntime(session, images.Take(1).ToArray(), shape);
                AssertClose(expected.Take(1).ToArray(), single, "ONNX Runtime, one image");
                Assert.AreEqual(expectedLabels[0], singleLabels[0]);
            }

            string path = TempFile();
            try
            {
                File.WriteAllBytes(path, model);
                // ApplyOnnxModel names the columns as the exported pipeline did: Score.output is Score again.
                using var onnx = ml.Transforms.ApplyOnnxModel(path).Fit(data);
                IDataView applied = onnx.Transform(data);
                AssertClose(expected, applied.GetColumn<float[]>("Score").ToArray(), "ApplyOnnxModel");
                CollectionAssert.AreEqual(expectedLabels, applied.GetColumn<uint[]>("PredictedLabel").Select(v => v.Single()).ToArray(), "ApplyOnnxModel labels");
            }
            finally
            {
                File.Delete(path);
            }
        }

        private static (float[][] Scores, uint[] Labels) RunOnnxRuntime(InferenceSession session, float[][] images, ImageShape shape)
        {
            NodeMetadata input = session.InputMetadata["Features"];
            Assert.IsTrue(input.Dimensions.Skip(1).Aggregate(1L, (a, b) => a * b) == shape.Size, $"input dimensions [{string.Join(",", input.Dimensions)}]");
            int[] dimensions = input.Dimensions.ToArray();
            dimensions[0] = images.Length;
            var tensor = new DenseTensor<float>(images.SelectMany(i => i).ToArray(), dimensions);
            using var results = session.Run(new[] { NamedOnnxValue.CreateFromTensor("Features", tensor) });
            Tensor<float> scores = results.Single(r => r.Name == "Score.output").AsTensor<float>();
            Tensor<uint> labels = results.Single(r => r.Name == "PredictedLabel.output").AsTensor<uint>();
            CollectionAssert.AreEqual(new[] { images.Length, 4 }, scores.Dimensions.ToArray());
            CollectionAssert.AreEqual(new[] { images.Length, 1 }, labels.Dimensions.ToArray());
            float[] flat = scores.ToArray();
            return (Enumerable.Range(0, images.Length).Select(i => flat.AsSpan(i * 4, 4).ToArray()).ToArray(), labels.ToArray());
        }

        private static byte[] Export(MLContext ml, ITransformer model, IDataView data, int? opset = null)
        {
            using var stream = new MemoryStream();
            if (opset is int version)
                ml.Model.ConvertToOnnx(model, data, version, stream);
            else
                ml.Model.ConvertToOnnx(model, data, stream);
            return stream.ToArray();
        }

        /// <summary>A network of <paramref name="kind"/> with weights that spread the scores: random batch-norm statistics, and
        /// for the shift kinds, random attention hardened and compacted as <c>PruneAttention</c> does.</summary>
        private static ClassifierNetwork Network(ImageClassifierArchitecture architecture, Kind kind, ImageShape shape)
        {
            torch.random.manual_seed(7);
            var normalization = new NormalizeLayer { Name = "normalize", Mean = new[] { 0.3f }, Std = new[] { 0.4f } };
            ConvolutionKind convolution = kind switch
            {
                Kind.Shift => ConvolutionKind.Shift,
                Kind.ShiftAttention or Kind.ShiftAttentionUnfolded => ConvolutionKind.ShiftAttention,
                Kind.ShiftAttentionShared => ConvolutionKind.ShiftAttentionShared,
                _ => ConvolutionKind.Convolution,
            };
            ClassifierNetwork network = ClassifierNetwork.Create(Architectures.Create(architecture, shape, 4, normalization, convolution));
            RandomizeBatchNorm(network);
            if (kind == Kind.WeightSparse)
                ZeroMostWeights(network, keep: 0.1);
            if (convolution is ConvolutionKind.ShiftAttention or ConvolutionKind.ShiftAttentionShared)
            {
                using (network)
                {
                    RandomizeAttention(network);
                    using ClassifierNetwork hardened = ShiftAttentionCompaction.Harden(network, AttentionHardening.ArgMax);
                    return ShiftAttentionCompaction.Compact(hardened, foldBatchNorm: kind != Kind.ShiftAttentionUnfolded);
                }
            }
            return network;
        }

        /// <summary>The classifier of <paramref name="network"/> (which it then owns), predicting the synthetic class names.</summary>
        private static ImageClassificationTransformer Classifier(MLContext ml, ClassifierNetwork network)
        {
            var rows = SyntheticImages.ClassNames.Select(name => new ImageRow { Label = name, Features = new float[1] });
            IDataView labels = ml.Data.LoadFromEnumerable(rows);
            DataViewSchema.Column label = SyntheticImages.MapLabel(ml).Fit(labels).Transform(labels).Schema["Label"];
            return new ImageClassificationTransformer(ml, network, "Features", "Score", "PredictedLabel", new DataViewSchema.DetachedColumn(label));
        }

        /// <summary>The synthetic images, with more noise, so that the classes' scores differ from image to image.</summary>
        private static float[][] TestImages(ImageShape shape, int count)
        {
            var random = new Random(3);
            return SyntheticImages.Rows(count, shape.Channels, shape.Height, shape.Width, seed: 2)
                .Select(r => r.Features.Select(v => v + (float)random.NextDouble() * 0.5f).ToArray()).ToArray();
        }

        private sealed class FeaturesRow
        {
            public float[] Features { get; set; } = Array.Empty<float>();
        }

        private static IDataView ImagesView(MLContext ml, float[][] images, ImageShape shape)
        {
            SchemaDefinition schema = SchemaDefinition.Create(typeof(FeaturesRow));
            schema[nameof(FeaturesRow.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, shape.Channels, shape.Height, shape.Width);
            return ml.Data.LoadFromEnumerable(images.Select(i => new FeaturesRow { Features = i }), schema);
        }

        private static void AssertClose(float[][] expected, float[][] actual, string what)
        {
            Assert.HasCount(expected.Length, actual, what);
            for (int i = 0; i < expected.Length; i++)
            {
                Assert.HasCount(expected[i].Length, actual[i], what);
                double worst = expected[i].Zip(actual[i], (e, a) => Math.Abs(e - a)).Max();
                Assert.IsLessThanOrEqualTo(Tolerance, worst, $"{what}, image {i}: largest difference {worst}");
            }
        }

        private static double StandardDeviation(float[] values)
        {
            double mean = values.Average();
            return Math.Sqrt(values.Average(v => (v - mean) * (v - mean)));
        }

        private static string TempFile() => Path.Combine(Path.GetTempPath(), "pruning-" + Guid.NewGuid().ToString("N") + ".onnx");

        private static void ZeroMostWeights(ClassifierNetwork network, double keep)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            foreach (var (name, parameter) in network.NamedParameters())
            {
                if (name.EndsWith(".weight", StringComparison.Ordinal))
                    parameter.mul_((rand_like(parameter) < keep).to_type(ScalarType.Float32) * (2 / keep));
            }
            network.ResetCompiledForm();
        }

        private static void RandomizeBatchNorm(ClassifierNetwork network)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            foreach (var (name, value) in network.StateDictionary())
            {
                if (!name.Contains("bn", StringComparison.Ordinal) || value.dtype != ScalarType.Float32)
                    continue;
                if (name.EndsWith("running_var", StringComparison.Ordinal))
                    value.copy_(rand_like(value) + 0.5);
                else
                    value.copy_(randn_like(value) * 0.3 + (name.EndsWith(".weight", StringComparison.Ordinal) ? 1 : 0));
            }
            network.ResetCompiledForm();
        }

        /// <summary>Spreads the attention logits, so that hardening picks a different shift for different pairs.</summary>
        private static void RandomizeAttention(ClassifierNetwork network)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            foreach (var (name, parameter) in network.NamedParameters())
            {
                if (name.EndsWith(".attention", StringComparison.Ordinal))
                    parameter.copy_(randn_like(parameter));
            }
        }
    }
}
