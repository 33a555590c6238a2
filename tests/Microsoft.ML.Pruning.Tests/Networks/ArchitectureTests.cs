// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static Microsoft.ML.Pruning.Tests.TensorAssert;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Networks
{
    [TestClass]
    public sealed class ArchitectureTests
    {
        private static readonly ImageShape FashionMnist = new(1, 28, 28);

        // Parameters and MACs for 1x28x28 inputs and 10 classes, counted by hand from the layer shapes:
        // LeNet-300-100: 784·300+300 + 300·100+100 + 100·10+10 weights; MACs are the three matrix products.
        // VGG-small: convs 288+9216+18432+36864+73728, BN 2·320, FC 1152·256+256 + 256·10+10.
        // ResNet-20: stem 144+32, stages 14,016 + 51,648 + 205,696 (1x1 projection shortcuts), FC 650.
        [TestMethod]
        [DataRow(ImageClassifierArchitecture.LeNet300100, 266_610L, 266_200L)]
        [DataRow(ImageClassifierArchitecture.LeNet5, 61_706L, 416_520L)]
        [DataRow(ImageClassifierArchitecture.VggSmall, 436_906L, 22_199_296L)]
        [DataRow(ImageClassifierArchitecture.ResNet20, 272_186L, 31_021_952L)]
        public void ParametersAndMultiplyAccumulatesAreExact(ImageClassifierArchitecture architecture, long parameters, long macs)
        {
            torch.random.manual_seed(1);
            using var network = ClassifierNetwork.Create(Architectures.Create(architecture, FashionMnist, 10));
            ModelSummary summary = ModelSummary.Create(network);
            Assert.AreEqual(parameters, summary.Parameters);
            Assert.AreEqual(parameters, network.NamedParameters().Sum(p => p.Parameter.numel()));
            Assert.AreEqual(macs, summary.MultiplyAccumulates);
            Assert.AreEqual(macs, network.Definition.MultiplyAccumulates());

            using var scope = NewDisposeScope();
            using Tensor logits = network.Forward(randn(3, 1, 28, 28));
            CollectionAssert.AreEqual(new long[] { 3, 10 }, logits.shape);
        }

        [TestMethod]
        public void NonZeroMultiplyAccumulatesOfAConvolutionDropWithEachZeroWeightAtEveryOutputPosition()
        {
            torch.random.manual_seed(1);
            using var network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.LeNet5, new ImageShape(1, 28, 28), 10));
            var conv1 = (Conv2dLayer)network.Definition.Flatten().Single(l => l.Path == "conv1").Layer;
            using (no_grad())
                network.StateDictionary()["conv1.weight"].narrow(0, 0, 2).zero_();
            LayerSummary summary = ModelSummary.Create(network).Layers.Single(l => l.Path == "conv1");

            long positions = (long)summary.OutputShape[1] * summary.OutputShape[2];
            long kernel = (long)conv1.InChannels * conv1.KernelSize * conv1.KernelSize;
            Assert.AreEqual(conv1.OutChannels * kernel * positions, summary.MultiplyAccumulates);
            Assert.AreEqual((conv1.OutChannels - 2) * kernel * positions, summary.NonZeroMultiplyAccumulates);
        }

        [TestMethod]
        public void SummaryCountsNonZeroParametersAndTheSerializedSize()
        {
            torch.random.manual_seed(1);
            using var network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.LeNet300100, new ImageShape(1, 8, 8), 4));
            ModelSummary dense = ModelSummary.Create(network);
            using (no_grad())
                network.StateDictionary()["fc1.weight"].narrow(0, 0, 10).zero_();
            ModelSummary zeroed = ModelSummary.Create(network);

            Assert.AreEqual(dense.Parameters, zeroed.Parameters);
            Assert.AreEqual(dense.NonZeroParameters - 10 * 64, zeroed.NonZeroParameters);
            LayerSummary fc1 = zeroed.Layers.Single(l => l.Path == "fc1");
            Assert.AreEqual(64L * 300 + 300, fc1.Parameters);
            Assert.AreEqual(64L * 300, fc1.MultiplyAccumulates);
            Assert.AreEqual(64L * 290, fc1.NonZeroMultiplyAccumulates);
            Assert.AreEqual(dense.MultiplyAccumulates, dense.NonZeroMultiplyAccumulates);
            Assert.AreEqual(dense.MultiplyAccumulates - 10 * 64, zeroed.NonZeroMultiplyAccumulates);
            CollectionAssert.AreEqual(new[] { 300 }, fc1.OutputShape);
            Assert.IsGreaterThan(4 * dense.Parameters, dense.SerializedBytes);
            StringAssert.Contains(zeroed.ToString(), "Linear 64->300");
        }

        [TestMethod]
        public void ResidualBranchesAreListedWithTheirPaths()
        {
            torch.random.manual_seed(1);
            using var network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.ResNet20, FashionMnist, 10));
            var paths = ModelSummary.Create(network).Layers.Select(l => l.Path).ToList();
            CollectionAssert.Contains(paths, "stage2_0.body.conv1");
            CollectionAssert.Contains(paths, "stage2_0.shortcut.conv");
            CollectionAssert.DoesNotContain(paths, "stage1_0.shortcut.conv");
            Assert.IsTrue(network.StateDictionary().ContainsKey("stage2_0.shortcut.conv.weight"));
        }

        [TestMethod]
        public void DefinitionsSurviveJsonAndRejectDamage()
        {
            var normalization = new NormalizeLayer { Name = "normalize", Mean = new[] { 0.25f }, Std = new[] { 0.5f } };
            NetworkDefinition definition = Architectures.Create(ImageClassifierArchitecture.ResNet20, FashionMnist, 10, normalization);
            string json = definition.ToJson();
            NetworkDefinition copy = NetworkDefinition.FromJson(json);
            Assert.AreEqual(json, copy.ToJson());
            Assert.AreEqual(definition.MultiplyAccumulates(), copy.MultiplyAccumulates());

            StringAssert.Contains(Assert.ThrowsExactly<FormatException>(() => NetworkDefinition.FromJson("{ not json")).Message, "not valid");
            string wrongClasses = json.Replace("\"Classes\":10", "\"Classes\":7", StringComparison.Ordinal);
            StringAssert.Contains(Assert.ThrowsExactly<FormatException>(() => NetworkDefinition.FromJson(wrongClasses)).Message, "outputs [10], expected [7]");
        }

        [TestMethod]
        public void WeightsRoundTripAndMismatchesAreNamed()
        {
            torch.random.manual_seed(1);
            using var source = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.LeNet5, FashionMnist, 10));
            using var stream = new MemoryStream();
            using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
                source.SaveWeights(writer);

            torch.random.manual_seed(2);
            using var target = ClassifierNetwork.Create(source.Definition);
            stream.Position = 0;
            using (var reader = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true))
                target.LoadWeights(reader);
            foreach (var (name, value) in source.StateDictionary())
                Assert.IsTrue(Same(value, target.StateDictionary()[name]), name);

            using var other = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.LeNet5, FashionMnist, 4));
            stream.Position = 0;
            using var otherReader = new BinaryReader(stream);
            var ex = Assert.ThrowsExactly<FormatException>(() => other.LoadWeights(otherReader));
            StringAssert.Contains(ex.Message, "Stored 'fc3.weight' has shape [10,84], the network expects [4,84]");
        }

        [TestMethod]
        public void ForwardRejectsImagesOfAnotherShape()
        {
            using var network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.LeNet300100, new ImageShape(1, 8, 8), 4));
            using var wrong = zeros(2, 3, 8, 8);
            var ex = Assert.ThrowsExactly<ArgumentException>(() => network.Forward(wrong));
            StringAssert.Contains(ex.Message, "Expected images of shape [N,1,8,8] or [N,64], got [2,3,8,8]");
        }

        [TestMethod]
        public void InvalidArchitectureArgumentsAreRejected()
        {
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Architectures.Create(ImageClassifierArchitecture.VggSmall, new ImageShape(1, 6, 6), 10)).Message,
                "VggSmall needs images of at least 8x8");
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Architectures.Create(ImageClassifierArchitecture.LeNet5, FashionMnist, 1)).Message,
                "at least 2 classes");
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Architectures.Create(ImageClassifierArchitecture.LeNet5, new ImageShape(0, 28, 28), 10)).Message,
                "must have positive channels");
        }

        private static T Layer<T>(NetworkDefinition definition, string path) where T : LayerDefinition
            => (T)definition.Flatten().Single(l => l.Path == path).Layer;

        // The small VGG on 1x28x28 images, 10 classes, with conv channels c1..c5 (3x3, no bias, each followed by a batch
        // norm of 2c parameters): the three pools leave 3x3 positions, so fc1 reads 9·c5 features into 256 units.
        private static long VggParameters(int c1, int c2, int c3, int c4, int c5)
            => 9L * (1 * c1 + c1 * c2 + c2 * c3 + c3 * c4 + c4 * c5) + 2L * (c1 + c2 + c3 + c4 + c5) + (9L * c5 * 256 + 256) + (256L * 10 + 10);

        // Convolutions at 28x28 (c1, c2), 14x14 (c3, c4) and 7x7 (c5); batch norm counts no multiply-accumulates.
        private static long VggMultiplyAccumulates(int c1, int c2, int c3, int c4, int c5)
            => 9L * (784L * (1 * c1 + c1 * c2) + 196L * (c2 * c3 + c3 * c4) + 49L * c4 * c5) + 9L * c5 * 256 + 256L * 10;

        // ResNet-20 with stage widths a, b, c: a stem 3x3 conv + BN, three blocks of two 3x3 conv + BN per stage, 1x1
        // projection + BN where the width changes (stages 2 and 3), global pooling and fc c→10.
        private static long ResNet20Parameters(int a, int b, int c)
        {
            static long ConvBn(int input, int output, int kernel) => (long)kernel * kernel * input * output + 2L * output;
            long stage1 = 6 * ConvBn(a, a, 3);
            long stage2 = ConvBn(a, b, 3) + ConvBn(b, b, 3) + ConvBn(a, b, 1) + 4 * ConvBn(b, b, 3);
            long stage3 = ConvBn(b, c, 3) + ConvBn(c, c, 3) + ConvBn(b, c, 1) + 4 * ConvBn(c, c, 3);
            return ConvBn(1, a, 3) + stage1 + stage2 + stage3 + 10L * c + 10;
        }

        [TestMethod]
        public void TheFormulasGiveThePublishedCountsAtWidthOne()
        {
            Assert.AreEqual(436_906L, VggParameters(32, 32, 64, 64, 128));
            Assert.AreEqual(22_199_296L, VggMultiplyAccumulates(32, 32, 64, 64, 128));
            Assert.AreEqual(272_186L, ResNet20Parameters(16, 32, 64));
            Assert.AreEqual(436_906L, ModelSummaryOf(Architectures.Create(ImageClassifierArchitecture.VggSmall, FashionMnist, 10, width: 1.0)).Parameters);
        }

        [TestMethod]
        public void WidthTwoQuadruplesAVggConvolutionAndTheWholeNetworkFollowsTheFormula()
        {
            torch.random.manual_seed(1);
            using var network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.VggSmall, FashionMnist, 10, width: 2));
            ModelSummary summary = ModelSummary.Create(network);

            // conv4 is 64→64 at width 1 (3·3·64·64 = 36,864 weights, no bias: batch norm follows) and 128→128 at width 2.
            var conv4 = Layer<Conv2dLayer>(network.Definition, "conv4");
            Assert.AreEqual((128, 128, 3, false), (conv4.InChannels, conv4.OutChannels, conv4.KernelSize, conv4.Bias));
            LayerSummary conv4Summary = summary.Layers.Single(l => l.Path == "conv4");
            Assert.AreEqual(3L * 3 * 128 * 128, conv4Summary.Parameters);
            Assert.AreEqual(147_456L, conv4Summary.Parameters);
            Assert.AreEqual(4 * 3L * 3 * 64 * 64, conv4Summary.Parameters);
            Assert.AreEqual(2L * 128, summary.Layers.Single(l => l.Path == "bn4").Parameters);
            Assert.AreEqual(9L * 256 * 256 + 256, summary.Layers.Single(l => l.Path == "fc1").Parameters, "fc1 reads 256 channels of 3x3 into 256 units");

            long expected = VggParameters(64, 64, 128, 128, 256);
            Assert.AreEqual(1_147_466L, expected);
            Assert.AreEqual(expected, summary.Parameters);
            Assert.AreEqual(expected, network.NamedParameters().Sum(p => p.Parameter.numel()));
            Assert.AreEqual(VggMultiplyAccumulates(64, 64, 128, 128, 256), summary.MultiplyAccumulates);
            Assert.AreEqual(summary.MultiplyAccumulates, network.Definition.MultiplyAccumulates());

            using var scope = NewDisposeScope();
            CollectionAssert.AreEqual(new long[] { 2, 10 }, network.Forward(randn(2, 1, 28, 28)).shape);
        }

        // Math.Round: to the nearest integer, ties to even (32 · 65/64 = 32.5 → 32), and at least one channel.
        [TestMethod]
        [DataRow(1.5, 48, 96, 192)]
        [DataRow(1.3, 42, 83, 166)]
        [DataRow(0.75, 24, 48, 96)]
        [DataRow(65.0 / 64, 32, 65, 130)]
        [DataRow(0.01, 1, 1, 1)]
        public void VggChannelsAreRoundedToTheNearestIntegerAndAtLeastOne(double width, int c32, int c64, int c128)
        {
            NetworkDefinition definition = Architectures.Create(ImageClassifierArchitecture.VggSmall, FashionMnist, 10, width: width);
            int[] outputs = Enumerable.Range(1, 5).Select(i => Layer<Conv2dLayer>(definition, $"conv{i}").OutChannels).ToArray();
            CollectionAssert.AreEqual(new[] { c32, c32, c64, c64, c128 }, outputs);
            CollectionAssert.AreEqual(new[] { 1, c32, c32, c64, c64 }, Enumerable.Range(1, 5).Select(i => Layer<Conv2dLayer>(definition, $"conv{i}").InChannels).ToArray());
            CollectionAssert.AreEqual(new[] { c32, c32, c64, c64, c128 }, Enumerable.Range(1, 5).Select(i => Layer<BatchNorm2dLayer>(definition, $"bn{i}").Channels).ToArray());
            Assert.AreEqual(9 * c128, Layer<LinearLayer>(definition, "fc1").InFeatures);
            Assert.AreEqual(256, Layer<LinearLayer>(definition, "fc1").OutFeatures);
            Assert.AreEqual(VggParameters(c32, c32, c64, c64, c128), ModelSummaryOf(definition).Parameters);
        }

        [TestMethod]
        public void ResNet20AtWidthTwoHasTwiceTheChannelsInEveryStage()
        {
            NetworkDefinition definition = Architectures.Create(ImageClassifierArchitecture.ResNet20, FashionMnist, 10, width: 2);
            Assert.AreEqual(32, Layer<Conv2dLayer>(definition, "conv1").OutChannels);
            Assert.AreEqual(32, Layer<BatchNorm2dLayer>(definition, "bn1").Channels);
            int[] stages = { 32, 64, 128 };
            for (int stage = 0; stage < 3; stage++)
            {
                for (int block = 0; block < 3; block++)
                {
                    string prefix = $"stage{stage + 1}_{block}";
                    int input = block > 0 ? stages[stage] : stage > 0 ? stages[stage - 1] : 32;
                    var conv1 = Layer<Conv2dLayer>(definition, prefix + ".body.conv1");
                    var conv2 = Layer<Conv2dLayer>(definition, prefix + ".body.conv2");
                    Assert.AreEqual((input, stages[stage]), (conv1.InChannels, conv1.OutChannels), prefix);
                    Assert.AreEqual((stages[stage], stages[stage]), (conv2.InChannels, conv2.OutChannels), prefix);
                    Assert.AreEqual(stages[stage], Layer<BatchNorm2dLayer>(definition, prefix + ".body.bn2").Channels, prefix);
                    bool projected = definition.Flatten().Any(l => l.Path == prefix + ".shortcut.conv");
                    Assert.AreEqual(stage > 0 && block == 0, projected, prefix);
                    if (projected)
                    {
                        var shortcut = Layer<Conv2dLayer>(definition, prefix + ".shortcut.conv");
                        Assert.AreEqual((stages[stage - 1], stages[stage], 1, 2), (shortcut.InChannels, shortcut.OutChannels, shortcut.KernelSize, shortcut.Stride), prefix);
                    }
                }
            }
            Assert.AreEqual(128, Layer<LinearLayer>(definition, "fc").InFeatures);
            Assert.AreEqual(ResNet20Parameters(32, 64, 128), ModelSummaryOf(definition).Parameters);
            CollectionAssert.AreEqual(new[] { 24, 48, 96 },
                new[] { "stage1_0", "stage2_0", "stage3_0" }.Select(p => Layer<Conv2dLayer>(Architectures.Create(ImageClassifierArchitecture.ResNet20, FashionMnist, 10, width: 1.5), p + ".body.conv1").OutChannels).ToArray());
        }

        [TestMethod]
        public void InvalidWidthsAreRejectedNamingWidth()
        {
            var ml = new MLContext(seed: 1);
            foreach (double width in new[] { 0, -1, double.NaN, double.PositiveInfinity, double.NegativeInfinity })
            {
                var create = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Architectures.Create(ImageClassifierArchitecture.VggSmall, FashionMnist, 10, width: width));
                Assert.AreEqual("width", create.ParamName);
                Assert.AreEqual(width, create.ActualValue);

                var options = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.ResNet20, Width = width };
                var trainer = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.ImageClassifier(options));
                Assert.AreEqual("Width", trainer.ParamName);
                StringAssert.Contains(trainer.Message, FormattableString.Invariant($"Options.Width must be a finite number greater than 0; got {width}."));

                var attention = new ShiftAttentionTrainer.Options { Training = { Width = width } };
                Assert.AreEqual("Width", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.PruneAttention(attention)).ParamName);
            }
        }

        [TestMethod]
        public void AWidthOtherThanOneOnALeNetIsRejected()
        {
            var create = Assert.ThrowsExactly<ArgumentException>(() => Architectures.Create(ImageClassifierArchitecture.LeNet5, FashionMnist, 10, width: 2));
            Assert.AreEqual("width", create.ParamName);
            StringAssert.Contains(create.Message, "LeNet5 has a fixed shape; a width multiplier (2) applies to VggSmall and ResNet20 only.");
            Assert.ThrowsExactly<ArgumentException>(() => Architectures.Create(ImageClassifierArchitecture.LeNet300100, FashionMnist, 10, width: 0.5));
            Assert.AreEqual(61_706L, ModelSummaryOf(Architectures.Create(ImageClassifierArchitecture.LeNet5, FashionMnist, 10, width: 1)).Parameters);

            var ml = new MLContext(seed: 1);
            var options = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.LeNet5, Width = 2 };
            var ex = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.ImageClassifier(options));
            Assert.AreEqual("Width", ex.ParamName);
            StringAssert.Contains(ex.Message, "Options.Width 2 needs VggSmall or ResNet20; LeNet5 has a fixed shape");
        }

        [TestMethod]
        [DataRow(ImageClassifierArchitecture.VggSmall, ConvolutionKind.Convolution, 1.5)]
        [DataRow(ImageClassifierArchitecture.VggSmall, ConvolutionKind.Shift, 2.0)]
        [DataRow(ImageClassifierArchitecture.VggSmall, ConvolutionKind.ShiftAttention, 0.5)]
        [DataRow(ImageClassifierArchitecture.ResNet20, ConvolutionKind.Convolution, 1.25)]
        [DataRow(ImageClassifierArchitecture.ResNet20, ConvolutionKind.ShiftAttentionShared, 2.0)]
        public void TheSummaryCountsAWidenedNetworkExactly(ImageClassifierArchitecture architecture, ConvolutionKind kind, double width)
        {
            torch.random.manual_seed(1);
            using var network = ClassifierNetwork.Create(Architectures.Create(architecture, FashionMnist, 10, convolution: kind, width: width));
            ModelSummary summary = ModelSummary.Create(network);
            Assert.AreEqual(network.NamedParameters().Sum(p => p.Parameter.numel()), summary.Parameters);
            Assert.AreEqual(network.Definition.MultiplyAccumulates(), summary.MultiplyAccumulates);
            // Layer by layer: each line counts the parameter tensors under its own module path.
            foreach (LayerSummary layer in summary.Layers)
            {
                long tensors = network.NamedParameters().Where(p => p.Name.StartsWith(layer.Path + ".", StringComparison.Ordinal)
                    && p.Name.LastIndexOf('.') == layer.Path.Length).Sum(p => p.Parameter.numel());
                Assert.AreEqual(tensors, layer.Parameters, layer.Path);
            }
        }

        [TestMethod]
        public void AWidenedModelSavesAndLoadsWithItsChannelCounts()
        {
            var ml = new MLContext(seed: 2);
            IDataView train = SyntheticImages.Load(ml, 64, height: 8, width: 8);
            var options = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.VggSmall, Width = 1.5, Epochs = 1, BatchSize = 32 };
            ITransformer model = SyntheticImages.MapLabel(ml).Append(ml.MulticlassClassification.Trainers.ImageClassifier(options)).Fit(train);
            AssertSavesAndLoads(ml, model, train, expectedConv5Channels: 192, expectedLayer: typeof(Conv2dLayer));
        }

        [TestMethod]
        public void ShiftAttentionTrainsAtTheGivenWidthAndItsCompactModelLoads()
        {
            var ml = new MLContext(seed: 2);
            IDataView train = SyntheticImages.Load(ml, 64, height: 8, width: 8);
            var options = new ShiftAttentionTrainer.Options
            {
                Training = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.VggSmall, Width = 0.5, Epochs = 1, BatchSize = 32 },
            };
            ITransformer model = SyntheticImages.MapLabel(ml).Append(ml.Transforms.PruneAttention(options)).Fit(train);
            AssertSavesAndLoads(ml, model, train, expectedConv5Channels: 64, expectedLayer: typeof(ShiftPointwiseConv2dLayer));
        }

        private static void AssertSavesAndLoads(MLContext ml, ITransformer model, IDataView train, int expectedConv5Channels, Type expectedLayer)
        {
            string path = Path.Combine(Path.GetTempPath(), "pruning-width-" + Guid.NewGuid().ToString("N") + ".zip");
            ITransformer? loaded = null;
            try
            {
                ImageClassificationTransformer classifier = ((IEnumerable<ITransformer>)model).OfType<ImageClassificationTransformer>().Single();
                var conv5 = (KernelLayerDefinition)classifier.Network.Definition.Flatten().Single(l => l.Path == "conv5").Layer;
                Assert.IsInstanceOfType(conv5, expectedLayer);
                Assert.AreEqual(expectedConv5Channels, conv5.OutChannels);

                IDataView test = SyntheticImages.Load(ml, 20, height: 8, width: 8, seed: 5);
                float[][] before = model.Transform(test).GetColumn<float[]>("Score").ToArray();
                ml.Model.Save(model, train.Schema, path);
                var fresh = new MLContext(seed: 42);
                loaded = fresh.Model.Load(path, out _);
                ImageClassificationTransformer reloaded = ((IEnumerable<ITransformer>)loaded).OfType<ImageClassificationTransformer>().Single();
                Assert.AreEqual(classifier.Network.Definition.ToJson(), reloaded.Network.Definition.ToJson());
                Assert.AreEqual(ModelSummary.Create(classifier.Network).Parameters, ModelSummary.Create(reloaded.Network).Parameters);
                foreach (var (name, value) in classifier.Network.StateDictionary())
                    Assert.IsTrue(Same(value, reloaded.Network.StateDictionary()[name]), name);
                float[][] after = loaded.Transform(SyntheticImages.Load(fresh, 20, height: 8, width: 8, seed: 5)).GetColumn<float[]>("Score").ToArray();
                for (int i = 0; i < before.Length; i++)
                    CollectionAssert.AreEqual(before[i], after[i], new ToleranceComparer(1e-6f), $"row {i}");
            }
            finally
            {
                File.Delete(path);
                DisposeAll(model);
                if (loaded is not null)
                    DisposeAll(loaded);
            }
        }

        private static ModelSummary ModelSummaryOf(NetworkDefinition definition)
        {
            torch.random.manual_seed(1);
            using var network = ClassifierNetwork.Create(definition);
            return ModelSummary.Create(network);
        }

        private static void DisposeAll(ITransformer model)
        {
            if (model is IEnumerable<ITransformer> chain)
            {
                foreach (var part in chain)
                    (part as IDisposable)?.Dispose();
            }
            (model as IDisposable)?.Dispose();
        }

        private sealed class ToleranceComparer(float tolerance) : System.Collections.IComparer
        {
            public int Compare(object? x, object? y) => Math.Abs((float)x! - (float)y!) <= tolerance ? 0 : 1;
        }
    }

    [TestClass]
    public sealed class AugmentationTests
    {
        [TestMethod]
        public void NoPaddingAndNoFlipIsTheIdentity()
        {
            using var scope = NewDisposeScope();
            using var generator = new Generator(1);
            Tensor images = randn(4, 2, 5, 6);
            Assert.IsTrue(Same(Augmentation.RandomCropAndFlip(images, 0, false, generator), images));
        }

        [TestMethod]
        public void FlipMirrorsSomeImagesAndLeavesTheOthers()
        {
            using var scope = NewDisposeScope();
            using var generator = new Generator(3);
            Tensor images = randn(32, 1, 4, 5);
            Tensor result = Augmentation.RandomCropAndFlip(images, 0, true, generator);
            int flipped = 0;
            for (int i = 0; i < 32; i++)
            {
                Tensor image = images[i], output = result[i];
                bool same = Same(output, image), mirrored = Same(output, image.flip(2));
                Assert.IsTrue(same || mirrored, $"image {i} is neither itself nor its mirror");
                flipped += mirrored ? 1 : 0;
            }
            Assert.IsTrue(flipped is > 4 and < 28, $"{flipped} of 32 flipped");
        }

        [TestMethod]
        public void CropsAreShiftedWindowsOfThePaddedImage()
        {
            using var scope = NewDisposeScope();
            using var generator = new Generator(5);
            Tensor images = arange(1, 1 + 8 * 6 * 6, dtype: ScalarType.Float32).reshape(8, 1, 6, 6);
            Tensor padded = nn.functional.pad(images, new long[] { 2, 2, 2, 2 });
            Tensor result = Augmentation.RandomCropAndFlip(images, 2, false, generator);
            CollectionAssert.AreEqual(new long[] { 8, 1, 6, 6 }, result.shape);
            for (int i = 0; i < 8; i++)
            {
                bool found = false;
                for (int dy = 0; dy <= 4 && !found; dy++)
                    for (int dx = 0; dx <= 4 && !found; dx++)
                        found = Same(padded[i].narrow(1, dy, 6).narrow(2, dx, 6), result[i]);
                Assert.IsTrue(found, $"image {i} is not a window of its padded image");
            }
        }
    }
}
