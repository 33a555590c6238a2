// Licensed under the MIT license.

using System;
using System.IO;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
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
