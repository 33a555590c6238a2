// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Persistence
{
    [TestClass]
    public sealed class DefinitionLimitsTests
    {
        private static readonly ImageShape Input = new(1, 12, 12);

        private static IEnumerable<NetworkDefinition> Definitions()
        {
            yield return Architectures.Create(ImageClassifierArchitecture.LeNet300100, Input, 4);
            yield return Architectures.Create(ImageClassifierArchitecture.LeNet5, Input, 4,
                new NormalizeLayer { Name = "normalize", Mean = new[] { 0.1f }, Std = new[] { 0.3f } });
            foreach (ConvolutionKind kind in Enum.GetValues<ConvolutionKind>())
            {
                yield return Architectures.Create(ImageClassifierArchitecture.VggSmall, Input, 4, convolution: kind, width: 0.25);
                yield return Architectures.Create(ImageClassifierArchitecture.ResNet20, Input, 4, convolution: kind, width: 0.25);
            }
            yield return new NetworkDefinition
            {
                Architecture = "shift-layers",
                Input = new ImageShape(4, 6, 6),
                Classes = 3,
                Layers = new LayerDefinition[]
                {
                    new ShiftAttentionConv2dLayer { Name = "a", InChannels = 4, OutChannels = 8, KernelSize = 3, Padding = 1, Hardened = true, Bias = false },
                    new ShiftAttentionConv2dLayer { Name = "b", InChannels = 8, OutChannels = 8, KernelSize = 3, Padding = 1, Shared = true },
                    new ShiftPointwiseConv2dLayer { Name = "c", InChannels = 8, OutChannels = 5, KernelSize = 3, Padding = 1, Shared = true },
                    new ShiftPointwiseConv2dLayer { Name = "d", InChannels = 5, OutChannels = 3, KernelSize = 5, Padding = 2, Stride = 2, Bias = false },
                    new GlobalAvgPoolLayer { Name = "pool" },
                },
            };
        }

        [TestMethod]
        public void TheExpectedTensorsAreExactlyTheNetworksStateDictionary()
        {
            foreach (NetworkDefinition definition in Definitions())
            {
                using var network = ClassifierNetwork.Create(definition);
                var expected = DefinitionLimits.ExpectedTensors(definition)
                    .Select(t => $"{t.Name} {t.Element} {t.ShapeText}").OrderBy(s => s, StringComparer.Ordinal).ToArray();
                var actual = network.StateDictionary()
                    .Select(kv => $"{kv.Key} {Element(kv.Value.dtype)} [{string.Join(",", kv.Value.shape)}]").OrderBy(s => s, StringComparer.Ordinal).ToArray();
                CollectionAssert.AreEqual(actual, expected, definition.Architecture + ": " + string.Join("; ", actual.Except(expected).Concat(expected.Except(actual))));
                DefinitionLimits.Check(definition);
            }
        }

        private static TensorElement Element(ScalarType type) => type switch
        {
            ScalarType.Float32 => TensorElement.Float32,
            ScalarType.Int64 => TensorElement.Int64,
            ScalarType.Byte => TensorElement.UInt8,
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
        };

        [TestMethod]
        public void NonFiniteWeightsAreRefusedAtSave()
        {
            using var network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.LeNet300100, Input, 4));
            using (no_grad())
                network.StateDictionary()["fc2.weight"][3, 7] = tensor(float.PositiveInfinity);
            using var writer = new BinaryWriter(new MemoryStream());
            var ex = Assert.ThrowsExactly<InvalidOperationException>(() => network.SaveWeights(writer));
            Assert.AreEqual("Tensor 'fc2.weight' has value Infinity at index 907; only finite values of magnitude at most 1E+10 can be saved.", ex.Message);
        }

        [TestMethod]
        public void LimitsAreCheckedBeforeShapesAndNameTheField()
        {
            NetworkDefinition lenet = Architectures.Create(ImageClassifierArchitecture.LeNet300100, Input, 4);
            var cases = new (NetworkDefinition Definition, string Expected)[]
            {
                (lenet with { Input = new ImageShape(1, 20_000, 1) }, "Field 'Input.Height' is 20000; it must be between 1 and 16384."),
                (lenet with { Input = new ImageShape(64, 1024, 1024) }, "Field 'Input' (64x1024x1024) has more than 16777216 values per image."),
                (lenet with { Classes = 1 }, "Field 'Classes' is 1; it must be between 2 and 16777216."),
                (lenet with { Layers = null! }, "Field 'Layers' is missing."),
                (lenet with { Layers = new LayerDefinition[] { null! } }, "'Layers[0]' is null."),
                (lenet with { Layers = new LayerDefinition[] { new ReluLayer { Name = new string('x', 300) } } }, "Field 'Name' of 'Layers[0]' has 300 characters; at most 256 are allowed."),
                (lenet with { Layers = new LayerDefinition[] { new ResidualBlock { Name = "r", Body = null! } } }, "Field 'Body' of layer 'r' is missing."),
            };
            foreach (var (definition, expected) in cases)
                Assert.AreEqual(expected, Assert.ThrowsExactly<InvalidOperationException>(() => DefinitionLimits.Check(definition)).Message);
        }
    }
}
