// Licensed under the MIT license.

using System;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Networks.Layers;
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Pruners.ShiftAttention;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Pruners.ShiftAttention
{
    [TestClass]
    public sealed class ShiftLayerTests
    {
        [TestMethod]
        [DataRow(ImageClassifierArchitecture.VggSmall, ConvolutionKind.ShiftAttention, AttentionHardening.ArgMax)]
        [DataRow(ImageClassifierArchitecture.VggSmall, ConvolutionKind.ShiftAttentionShared, AttentionHardening.ArgMax)]
        [DataRow(ImageClassifierArchitecture.VggSmall, ConvolutionKind.ShiftAttention, AttentionHardening.Round)]
        [DataRow(ImageClassifierArchitecture.ResNet20, ConvolutionKind.ShiftAttention, AttentionHardening.ArgMax)]
        [DataRow(ImageClassifierArchitecture.ResNet20, ConvolutionKind.ShiftAttentionShared, AttentionHardening.Round)]
        public void CompactOutputsEqualHardenedDenseOutputs(ImageClassifierArchitecture architecture, ConvolutionKind kind, AttentionHardening hardening)
        {
            torch.random.manual_seed(7);
            var normalization = new NormalizeLayer { Name = "normalize", Mean = new[] { 0.3f }, Std = new[] { 0.4f } };
            using ClassifierNetwork trained = ClassifierNetwork.Create(Architectures.Create(architecture, new ImageShape(1, 12, 12), 4, normalization, kind));
            RandomizeBatchNorm(trained);
            // A low temperature leaves some distributions below 0.5, so rounding drops connections.
            ShiftAttentionCompaction.SetTemperature(ShiftAttentionCompaction.AttentionModules(trained).Select(m => m.Module), 2.5);

            using ClassifierNetwork hardened = ShiftAttentionCompaction.Harden(trained, hardening);
            using ClassifierNetwork compact = ShiftAttentionCompaction.Compact(hardened, foldBatchNorm: true);

            Assert.IsFalse(compact.Definition.Flatten().Any(l => l.Layer is ShiftAttentionConv2dLayer or BatchNorm2dLayer));
            Assert.IsTrue(compact.Definition.Flatten().Any(l => l.Layer is ShiftPointwiseConv2dLayer));
            if (kind == ConvolutionKind.ShiftAttentionShared)
            {
                // Shared shifts are grouped by reordering the channels of the layer that feeds them (all VGG layers, the
                // second layer of each residual body), so the compact layer shifts contiguous blocks.
                var grouped = compact.Definition.Flatten().Where(l => l.Layer is ShiftPointwiseConv2dLayer && (architecture == ImageClassifierArchitecture.VggSmall || l.Path.EndsWith("conv2", StringComparison.Ordinal)));
                foreach (var (path, _) in grouped)
                {
                    byte[] shifts = compact.StateDictionary()[path + ".shift"].data<byte>().ToArray();
                    CollectionAssert.AreEqual(shifts.Order().ToArray(), shifts, path);
                }
            }
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            Tensor images = rand(16, 1, 12, 12);
            hardened.Module.eval();
            compact.Module.eval();
            Tensor expected = hardened.Forward(images), actual = compact.Forward(images);
            double difference = (expected - actual).abs().max().item<float>();
            Assert.IsLessThanOrEqualTo(1e-4, difference, $"max |hardened - compact| = {difference}");
            Assert.IsGreaterThan(0.01, expected.std().item<float>(), "the comparison must not be between constants");

            // Reloading the compact weights into a fresh network (as a model file does) gives the same outputs.
            using var fresh = ClassifierNetwork.Create(compact.Definition);
            using (var stream = new System.IO.MemoryStream())
            {
                using (var writer = new System.IO.BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
                    compact.SaveWeights(writer);
                stream.Position = 0;
                using var reader = new System.IO.BinaryReader(stream);
                fresh.LoadWeights(reader);
            }
            fresh.Module.eval();
            Assert.IsTrue(TensorAssert.Same(actual, fresh.Forward(images)));
        }

        [TestMethod]
        public void ArgMaxHardeningLeavesExactlyOneTapPerPairAndRoundingAtMostOne()
        {
            torch.random.manual_seed(3);
            using ClassifierNetwork trained = ClassifierNetwork.Create(
                Architectures.Create(ImageClassifierArchitecture.VggSmall, new ImageShape(1, 8, 8), 4, convolution: ConvolutionKind.ShiftAttention));
            var modules = ShiftAttentionCompaction.AttentionModules(trained);
            Assert.HasCount(4, modules);
            ShiftAttentionCompaction.SetTemperature(modules.Select(m => m.Module), 1.5);

            using ClassifierNetwork argMax = ShiftAttentionCompaction.Harden(trained, AttentionHardening.ArgMax);
            using ClassifierNetwork rounded = ShiftAttentionCompaction.Harden(trained, AttentionHardening.Round);
            using var scope = NewDisposeScope();
            foreach (var (path, module) in modules)
            {
                Tensor soft = module.Attention();
                Tensor hard = argMax.StateDictionary()[path + ".mask"];
                Assert.IsTrue(hard.eq(0).logical_or(hard.eq(1)).all().item<bool>(), path);
                Assert.IsTrue(hard.sum(2).eq(1).all().item<bool>(), $"{path}: every pair keeps exactly one tap");
                Assert.IsTrue(hard.argmax(2).eq(soft.argmax(2)).all().item<bool>(), $"{path}: the kept tap is the most attended one");

                Tensor round = rounded.StateDictionary()[path + ".mask"];
                Assert.IsTrue(round.sum(2).le(1).all().item<bool>(), path);
                Assert.IsTrue(round.sum(2).eq(soft.amax(new long[] { 2 }).gt(0.5).to_type(ScalarType.Float32)).all().item<bool>(),
                    $"{path}: rounding keeps a tap exactly where its attention exceeds 0.5");
            }
            long dropped = modules.Sum(m => rounded.StateDictionary()[m.Path + ".mask"].sum(2).eq(0).sum().item<long>());
            Assert.IsGreaterThan(0L, dropped, "at a low temperature rounding must drop some connections");

            // The hardened layers train only their weights: the shifts are buffers.
            Assert.IsFalse(argMax.NamedParameters().Any(p => p.Name.EndsWith(".attention", StringComparison.Ordinal) || p.Name.EndsWith(".mask", StringComparison.Ordinal)));
        }

        [TestMethod]
        [DataRow(3, 1, 1, false, false)]
        [DataRow(3, 1, 2, false, false)]
        [DataRow(3, 1, 1, false, true)]
        [DataRow(3, 1, 2, false, true)]
        [DataRow(3, 1, 1, true, false)]
        [DataRow(3, 1, 2, true, false)]
        [DataRow(5, 2, 1, false, true)]
        [DataRow(5, 0, 1, true, false)]
        [DataRow(1, 0, 2, false, false)]
        public void TheShiftPointwiseKernelComputesTheOneHotConvolutionInBothPaths(int kernelSize, int padding, int stride, bool shared, bool fewTaps)
        {
            torch.random.manual_seed(11);
            const int inChannels = 6, outChannels = 12;
            int taps = kernelSize * kernelSize;
            var random = new Random(5);
            // Pairs spread over all taps run as a one-hot convolution; pairs on few taps as shifted copies and a 1×1 convolution.
            byte[] shifts = Enumerable.Range(0, shared ? inChannels : inChannels * outChannels)
                .Select(_ => (byte)(fewTaps ? random.Next(2) * (taps - 1) : random.Next(taps))).ToArray();
            using var kernel = new ShiftPointwiseKernel(inChannels, outChannels, kernelSize, stride, padding, shared, shifts, CPU);
            Assert.AreEqual(!shared && !fewTaps, kernel.UsesOneHotConvolution);
            using var scope = NewDisposeScope();
            Tensor weight = randn(outChannels, inChannels), bias = randn(outChannels);

            // The definition: a k×k convolution whose kernel has weight w[o,i] at tap s(o,i) and zeros elsewhere.
            var dense = new float[outChannels * inChannels * taps];
            float[] w = weight.data<float>().ToArray();
            for (int o = 0; o < outChannels; o++)
            {
                for (int i = 0; i < inChannels; i++)
                    dense[(o * inChannels + i) * taps + shifts[shared ? i : o * inChannels + i]] = w[o * inChannels + i];
            }
            Tensor oneHotKernel = tensor(dense, new long[] { outChannels, inChannels, kernelSize, kernelSize });

            // A small batch runs as convolutions; a large one (on few taps) as shifted copies and a 1×1 convolution.
            foreach (long batch in new long[] { 2, 256 })
            {
                Tensor input = randn(batch, inChannels, 23, 20);
                Tensor expected = nn.functional.conv2d(input, oneHotKernel, bias, new long[] { stride, stride }, new long[] { padding, padding });
                Tensor inference = kernel.Forward(input, weight, bias, training: false);
                Tensor training = kernel.Forward(input, weight, bias, training: true);
                CollectionAssert.AreEqual(expected.shape, inference.shape);
                Assert.IsLessThanOrEqualTo(1e-4, (expected - inference).abs().max().item<float>(), $"batch {batch}");
                Assert.IsLessThanOrEqualTo(1e-4, (expected - training).abs().max().item<float>(), $"batch {batch}");
                Assert.AreEqual(batch > 2 && (shared || fewTaps), kernel.UsesShiftedCopies(batch, 23, 20), $"batch {batch}");
            }
        }

        [TestMethod]
        public void TheFixedShiftLayerSplitsChannelsIntoGroupsWithTheRemainderOnTheIdentity()
        {
            // 20 channels, 9 taps: groups of 2, identity (tap 4) first, the 2 left over also on the identity.
            CollectionAssert.AreEqual(new byte[] { 4, 4, 0, 0, 1, 1, 2, 2, 3, 3, 5, 5, 6, 6, 7, 7, 8, 8, 4, 4 }, ShiftConv2dLayer.GroupedShifts(20, 3));
            CollectionAssert.AreEqual(new byte[] { 4, 0, 1, 2, 3 }, ShiftConv2dLayer.GroupedShifts(5, 3));
            CollectionAssert.AreEqual(new byte[] { 0, 0 }, ShiftConv2dLayer.GroupedShifts(2, 1));
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ShiftConv2dLayer.GroupedShifts(4, 2));

            torch.random.manual_seed(2);
            using ClassifierNetwork network = ClassifierNetwork.Create(
                Architectures.Create(ImageClassifierArchitecture.VggSmall, new ImageShape(1, 8, 8), 4, convolution: ConvolutionKind.Shift));
            Assert.IsFalse(network.StateDictionary().Keys.Any(k => k.EndsWith(".shift", StringComparison.Ordinal)), "fixed shifts are not stored");
            CollectionAssert.AreEqual(new long[] { 32, 32 }, network.StateDictionary()["conv2.weight"].shape);
        }

        [TestMethod]
        public void CountsAreExactAndTheConvertedLayersShrinkAtLeastEightfold()
        {
            var input = new ImageShape(1, 28, 28);
            torch.random.manual_seed(1);
            using ClassifierNetwork conv = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.VggSmall, input, 10));
            using ClassifierNetwork attention = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.VggSmall, input, 10, convolution: ConvolutionKind.ShiftAttention));
            using ClassifierNetwork hardened = ShiftAttentionCompaction.Harden(attention, AttentionHardening.ArgMax);
            using ClassifierNetwork compact = ShiftAttentionCompaction.Compact(hardened, foldBatchNorm: true);
            ModelSummary before = ModelSummary.Create(conv), after = ModelSummary.Create(compact);

            // conv2 is 32->32 at 28x28: 9216 weights and 9216·784 MACs as a 3x3 convolution, 1024 weights + 32 folded biases
            // and 1024·784 MACs as shift + pointwise.
            LayerSummary denseConv2 = before.Layers.Single(l => l.Path == "conv2"), compactConv2 = after.Layers.Single(l => l.Path == "conv2");
            Assert.AreEqual(9216L, denseConv2.Parameters);
            Assert.AreEqual(9216L * 784, denseConv2.MultiplyAccumulates);
            Assert.AreEqual(1024L + 32, compactConv2.Parameters);
            Assert.AreEqual(1024L * 784, compactConv2.MultiplyAccumulates);
            StringAssert.Contains(after.ToString(), "ShiftPW 3x3 32->32");

            string[] converted = { "conv2", "conv3", "conv4", "conv5" };
            long ParametersOf(ModelSummary s) => s.Layers.Where(l => converted.Contains(l.Path) || converted.Contains(l.Path.Replace("bn", "conv", StringComparison.Ordinal))).Sum(l => l.Parameters);
            long MacsOf(ModelSummary s) => s.Layers.Where(l => converted.Contains(l.Path)).Sum(l => l.MultiplyAccumulates);
            Assert.IsGreaterThanOrEqualTo(8.0, (double)ParametersOf(before) / ParametersOf(after));
            Assert.IsGreaterThanOrEqualTo(8.0, (double)MacsOf(before) / MacsOf(after));
            Assert.AreEqual(compact.Definition.MultiplyAccumulates(), after.MultiplyAccumulates);
            // About 8/9 of the converted layers' 4-byte weights disappear; their uint8 shift indices are added.
            Assert.IsGreaterThan(400_000L, before.SerializedBytes - after.SerializedBytes);

            // The training-time layer costs what the convolution costs and holds the attention logits too.
            LayerSummary training = ModelSummary.Create(attention).Layers.Single(l => l.Path == "conv2");
            Assert.AreEqual(9216L * 784, training.MultiplyAccumulates);
            Assert.AreEqual(9216L * 2, training.Parameters);
        }

        [TestMethod]
        public void NewLayerKindsSurviveJson()
        {
            var definition = new NetworkDefinition
            {
                Architecture = "test",
                Input = new ImageShape(4, 6, 6),
                Classes = 3,
                Layers = new LayerDefinition[]
                {
                    new ShiftAttentionConv2dLayer { Name = "a", InChannels = 4, OutChannels = 8, KernelSize = 3, Padding = 1, Shared = true, Hardened = true, Bias = false },
                    new ShiftConv2dLayer { Name = "b", InChannels = 8, OutChannels = 8, KernelSize = 5, Padding = 2, Stride = 2 },
                    new ShiftPointwiseConv2dLayer { Name = "c", InChannels = 8, OutChannels = 3, KernelSize = 3, Padding = 1 },
                    new GlobalAvgPoolLayer { Name = "pool" },
                },
            };
            NetworkDefinition copy = NetworkDefinition.FromJson(definition.ToJson());
            CollectionAssert.AreEqual(definition.Layers.ToArray(), copy.Layers.ToArray());
            StringAssert.Contains(definition.ToJson(), "\"kind\":\"shiftpointwise2d\"");
            // 4·8·9·36 + 8·8·9 (3x3 output) + 8·3·9.
            Assert.AreEqual(4L * 8 * 9 * 36 + 8 * 8 * 9 + 8 * 3 * 9, copy.MultiplyAccumulates());

            var even = definition with { Layers = new LayerDefinition[] { new ShiftPointwiseConv2dLayer { Name = "c", InChannels = 4, OutChannels = 3, KernelSize = 4 }, new GlobalAvgPoolLayer { Name = "pool" } } };
            StringAssert.Contains(Assert.ThrowsExactly<FormatException>(() => NetworkDefinition.FromJson(even.ToJson())).Message, "odd kernel size");
        }

        [TestMethod]
        public void TheTemperatureGrowsGeometricallyAndEndsAtTheFinalValue()
        {
            Assert.AreEqual(20.0, TemperatureSchedule.At(20, 70, 0, 1000));
            Assert.AreEqual(70.0, TemperatureSchedule.At(20, 70, 1000, 1000));
            Assert.AreEqual(Math.Sqrt(20.0 * 70.0), TemperatureSchedule.At(20, 70, 500, 1000), 1e-9);
            double ratio = TemperatureSchedule.At(20, 70, 11, 1000) / TemperatureSchedule.At(20, 70, 10, 1000);
            Assert.AreEqual(Math.Pow(70.0 / 20.0, 1.0 / 1000), ratio, 1e-12, "the same factor every step");
            Assert.AreEqual(5.0, TemperatureSchedule.At(5, 5, 3, 10));
        }

        [TestMethod]
        public void ArchitecturesRejectBadKernelsAndKinds()
        {
            var shape = new ImageShape(1, 8, 8);
            Assert.AreEqual("kernelSize", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Architectures.Create(ImageClassifierArchitecture.VggSmall, shape, 4, kernelSize: 4)).ParamName);
            Assert.AreEqual("kernelSize", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Architectures.Create(ImageClassifierArchitecture.VggSmall, shape, 4, kernelSize: 0)).ParamName);
            Assert.AreEqual("convolution", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Architectures.Create(ImageClassifierArchitecture.VggSmall, shape, 4, convolution: (ConvolutionKind)42)).ParamName);
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(
                () => Architectures.Create(ImageClassifierArchitecture.LeNet300100, shape, 4, convolution: ConvolutionKind.Shift)).Message, "has no 3x3 convolutions");

            NetworkDefinition five = Architectures.Create(ImageClassifierArchitecture.ResNet20, shape, 4, convolution: ConvolutionKind.ShiftAttentionShared, kernelSize: 5);
            var layers = five.Flatten().Select(l => l.Layer).OfType<ShiftAttentionConv2dLayer>().ToList();
            Assert.HasCount(18, layers);
            Assert.IsTrue(layers.All(l => l.KernelSize == 5 && l.Padding == 2 && l.Shared));
            Assert.IsInstanceOfType<Conv2dLayer>(five.Layers[0], "the stem stays a convolution");
        }

        /// <summary>Gives every batch norm non-trivial statistics and affine parameters, so that folding is exercised.</summary>
        private static void RandomizeBatchNorm(ClassifierNetwork network)
        {
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
        }
    }
}
