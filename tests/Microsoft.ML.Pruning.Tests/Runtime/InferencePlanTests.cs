// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading.Tasks;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Pruners.ShiftAttention;
using Microsoft.ML.Pruning.Runtime;
using Microsoft.ML.Pruning.Runtime.Kernels;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Runtime
{
    [TestClass]
    public sealed unsafe class InferencePlanTests
    {
        private const double Tolerance = 1e-4;

        [TestMethod]
        [DataRow(3, 13, 11, 5, 3, 1, 1, 1, 0.5, DisplayName = "3x3, odd sizes, stride 1")]
        [DataRow(4, 13, 11, 6, 3, 2, 1, 1, 0.5, DisplayName = "3x3, odd sizes, stride 2")]
        [DataRow(2, 9, 9, 3, 5, 2, 2, 1, 0.5, DisplayName = "5x5, stride 2, padding 2")]
        [DataRow(3, 8, 10, 4, 3, 1, 0, 1, 0.5, DisplayName = "3x3, no padding")]
        [DataRow(5, 7, 7, 4, 1, 2, 0, 1, 0.5, DisplayName = "1x1, stride 2")]
        [DataRow(3, 28, 28, 5, 3, 2, 1, 1, 0.5, DisplayName = "3x3, stride 2 on 28x28: rows copied in vectors")]
        [DataRow(4, 29, 31, 6, 1, 2, 0, 1, 1.0, DisplayName = "dense 1x1, stride 2, odd sizes: one phase read")]
        [DataRow(2, 30, 33, 3, 3, 3, 1, 1, 0.5, DisplayName = "3x3, stride 3")]
        [DataRow(3, 12, 10, 7, 3, 1, 1, 2, 0.5, DisplayName = "3x3 with 2x2 pooling")]
        [DataRow(2, 15, 15, 3, 3, 1, 1, 2, 0.5, DisplayName = "odd output pooled (last row and column dropped)")]
        [DataRow(2, 12, 12, 3, 3, 1, 1, 3, 0.5, DisplayName = "3x3 pooling")]
        [DataRow(6, 14, 14, 5, 3, 1, 1, 2, 0.3, DisplayName = "3x3 on 14x14, pooled: the grid's last block half used")]
        [DataRow(1, 28, 28, 32, 3, 1, 1, 1, 0.5, DisplayName = "the VGG stem")]
        [DataRow(1, 28, 28, 6, 5, 1, 2, 2, 1.0, DisplayName = "dense, outputs sharing loads: LeNet-5's first layer")]
        [DataRow(3, 13, 11, 5, 3, 2, 1, 1, 1.0, DisplayName = "dense, outputs sharing loads: 5 outputs, stride 2, odd sizes")]
        [DataRow(4, 15, 15, 7, 3, 1, 1, 2, 1.0, DisplayName = "dense, outputs sharing loads: 7 outputs, odd output pooled")]
        public void TheCompactConvolutionEqualsLibTorchsConvolutionWithReluAndPooling(int inChannels, int height, int width, int outChannels,
            int kernelSize, int stride, int padding, int pool, double keep)
        {
            torch.random.manual_seed(3);
            using var scope = NewDisposeScope();
            // A kept fraction of the weights, as pruning leaves them; values near ±1 so borders matter.
            Tensor weight = randn(outChannels, inChannels, kernelSize, kernelSize) * (rand(outChannels, inChannels, kernelSize, kernelSize) < keep);
            Tensor bias = randn(outChannels);
            float[] w = weight.data<float>().ToArray();
            var terms = new List<ConvolutionTerm>();
            for (int o = 0; o < outChannels; o++)
                for (int i = 0; i < inChannels; i++)
                    for (int ky = 0; ky < kernelSize; ky++)
                        for (int kx = 0; kx < kernelSize; kx++)
                            terms.Add(new ConvolutionTerm(o, i, ky, kx, w[((o * inChannels + i) * kernelSize + ky) * kernelSize + kx]));
            var kernel = new CompactConvolution(inChannels, height, width, outChannels, kernelSize, stride, padding, terms,
                bias.data<float>().ToArray(), relu: true, pool);
            Assert.AreEqual(keep == 1.0 && outChannels >= 4, kernel.SharesLoads, "dense layers share loads between groups of four outputs");

            foreach (int batch in new[] { 1, 3, 40 })
            {
                Tensor images = randn(batch, inChannels, height, width);
                Tensor expected = nn.functional.conv2d(images, weight, bias, new long[] { stride, stride }, new long[] { padding, padding }).relu();
                if (pool > 1)
                    expected = nn.functional.max_pool2d(expected, pool, pool);
                CollectionAssert.AreEqual(expected.shape.Skip(1).Select(d => (int)d).ToArray(), kernel.OutputShape);

                float[] input = images.data<float>().ToArray();
                var output = new float[batch * kernel.OutputSize];
                fixed (float* x = input)
                fixed (float* y = output)
                    kernel.Run(x, y, batch);
                AssertClose(expected.data<float>().ToArray(), output, $"batch {batch}");
            }
        }

        [TestMethod]
        public void TheSparseLinearLayerEqualsTheDenseProductAtEveryBatchSize()
        {
            torch.random.manual_seed(5);
            using var scope = NewDisposeScope();
            const int inFeatures = 77, outFeatures = 33;
            Tensor weight = randn(outFeatures, inFeatures) * (rand(outFeatures, inFeatures) > 0.9);
            Tensor bias = randn(outFeatures);
            foreach (bool relu in new[] { false, true })
            {
                var kernel = new CompactLinear(weight.data<float>().ToArray(), inFeatures, outFeatures, bias.data<float>().ToArray(), relu);
                Assert.AreEqual((int)weight.count_nonzero().item<long>(), kernel.Terms);
                // Below, at and above the blocked batch size, and a last block that is not full.
                foreach (int batch in new[] { 1, CompactLinear.BlockedBatch - 1, CompactLinear.BlockedBatch, 65, 200 })
                {
                    Tensor input = randn(batch, inFeatures);
                    Tensor expected = nn.functional.linear(input, weight, bias);
                    if (relu)
                        expected = expected.relu();
                    float[] x = input.data<float>().ToArray();
                    var y = new float[batch * outFeatures];
                    fixed (float* xp = x)
                    fixed (float* yp = y)
                        kernel.Run(xp, yp, batch);
                    AssertClose(expected.data<float>().ToArray(), y, $"batch {batch}, relu {relu}");
                }
            }
        }

        [TestMethod]
        [DataRow(ImageClassifierArchitecture.VggSmall, ConvolutionKind.ShiftAttention, 1.0)]
        [DataRow(ImageClassifierArchitecture.VggSmall, ConvolutionKind.ShiftAttentionShared, 1.0)]
        [DataRow(ImageClassifierArchitecture.ResNet20, ConvolutionKind.ShiftAttention, 1.0)]
        public void CompactShiftNetworksScoreAsTheirLibTorchModules(ImageClassifierArchitecture architecture, ConvolutionKind kind, double width)
        {
            torch.random.manual_seed(11);
            var normalization = new NormalizeLayer { Name = "normalize", Mean = new[] { 0.3f }, Std = new[] { 0.4f } };
            using ClassifierNetwork trained = ClassifierNetwork.Create(Architectures.Create(architecture, new ImageShape(1, 12, 12), 5, normalization, kind, width: width));
            RandomizeBatchNorm(trained);
            using ClassifierNetwork hardened = ShiftAttentionCompaction.Harden(trained, AttentionHardening.ArgMax);
            using ClassifierNetwork compact = ShiftAttentionCompaction.Compact(hardened, foldBatchNorm: true);

            InferencePlan plan = compact.CompiledForm()!;
            var shiftSteps = plan.Steps.Where(s => s.Kind == "shift-pointwise").ToList();
            if (architecture == ImageClassifierArchitecture.VggSmall)
            {
                // conv2..conv5 become shift-pointwise steps with ReLU (and the pools after conv2, conv4, conv5) fused.
                CollectionAssert.AreEqual(new[] { "conv2+relu2+pool1", "conv3+relu3", "conv4+relu4+pool2", "conv5+relu5+pool3" },
                    shiftSteps.Select(s => s.Layers).ToArray());
                Assert.IsFalse(plan.Steps.Any(s => s.UsesLibTorch && s.Kind != "libtorch linear"), plan.ToString());
            }
            AssertPlanMatchesLibTorch(compact, 12 * 12);
        }

        [TestMethod]
        public void DenseBatchNormNetworksFoldTheNormIntoTheConvolution()
        {
            torch.random.manual_seed(13);
            using ClassifierNetwork network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.VggSmall, new ImageShape(1, 16, 16), 3));
            RandomizeBatchNorm(network);
            InferencePlan plan = network.CompiledForm()!;
            Assert.IsFalse(plan.Steps.Any(s => s.Kind.StartsWith("batchnorm", StringComparison.Ordinal)), plan.ToString());
            // The stem is small enough for the managed kernel; the dense 3x3 convolutions stay on libtorch for batches, and
            // those of up to 80,000 weights run on the managed kernel for a single image.
            Assert.AreEqual("sparse conv2d", plan.Steps[0].Kind, plan.ToString());
            Assert.AreEqual("conv1+bn1+relu1", plan.Steps[0].Layers);
            Assert.AreEqual("libtorch conv2d, managed at batch 1", plan.Steps[1].Kind);
            Assert.AreEqual("conv2+bn2+relu2", plan.Steps[1].Layers);
            Assert.AreEqual("libtorch conv2d, managed at batch 1", plan.Steps.Single(s => s.Layers.StartsWith("conv5", StringComparison.Ordinal)).Kind, "73,728 weights");
            AssertPlanMatchesLibTorch(network, 16 * 16);

            // At width 1.5 conv5 has 165,888 weights: libtorch at every batch size.
            using ClassifierNetwork wide = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.VggSmall, new ImageShape(1, 16, 16), 3, width: 1.5));
            RandomizeBatchNorm(wide);
            InferencePlan widePlan = wide.CompiledForm()!;
            Assert.AreEqual("libtorch conv2d", widePlan.Steps.Single(s => s.Layers.StartsWith("conv5", StringComparison.Ordinal)).Kind, widePlan.ToString());
            AssertPlanMatchesLibTorch(wide, 16 * 16);
        }

        [TestMethod]
        public void ConvolutionsWhoseChannelsLibTorchWouldPadRunOnTheManagedKernelAtEveryBatchSize()
        {
            torch.random.manual_seed(23);
            // Width 0.75: 24, 24, 48, 48 and 96 channels, as channel pruning leaves them.
            // 28×28 images, so that conv4's 4.6 million multiply-accumulates of a single image are split between the cores.
            using ClassifierNetwork network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.VggSmall, new ImageShape(1, 28, 28), 3, width: 0.75));
            RandomizeBatchNorm(network);
            InferencePlan plan = network.CompiledForm()!;
            // conv2 and conv3 read 24 channels, which libtorch would run as 32: the managed kernel, pooling fused.
            Assert.AreEqual("sparse conv2d", plan.Steps.Single(s => s.Layers.StartsWith("conv2", StringComparison.Ordinal)).Kind, plan.ToString());
            Assert.AreEqual("conv3+bn3+relu3", plan.Steps.Single(s => s.Layers.StartsWith("conv3", StringComparison.Ordinal)).Layers, plan.ToString());
            Assert.AreEqual("sparse conv2d", plan.Steps.Single(s => s.Layers.StartsWith("conv3", StringComparison.Ordinal)).Kind, plan.ToString());
            // conv4 reads 48 channels, a count libtorch runs as it is: libtorch for batches.
            Assert.AreEqual("libtorch conv2d, managed at batch 1", plan.Steps.Single(s => s.Layers.StartsWith("conv4", StringComparison.Ordinal)).Kind, plan.ToString());
            AssertPlanMatchesLibTorch(network, 28 * 28);
        }

        [TestMethod]
        public void PrunedFullyConnectedLayersRunAsSparseRows()
        {
            torch.random.manual_seed(17);
            using ClassifierNetwork network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.LeNet300100, new ImageShape(1, 28, 28), 10));
            ZeroMostWeights(network, keep: 0.07);
            InferencePlan plan = network.CompiledForm()!;
            CollectionAssert.AreEqual(new[] { "fc1+relu1", "fc2+relu2", "fc3" }, plan.Steps.Select(s => s.Layers).ToArray());
            Assert.IsTrue(plan.Steps.All(s => s.Kind == "sparse linear"), plan.ToString());
            long stored = plan.Steps.OfType<CompactLinearStep>().Sum(s => (long)s.Kernel.Terms);
            long nonZero = network.NamedParameters().Where(p => p.Name.EndsWith(".weight", StringComparison.Ordinal)).Sum(p => p.Parameter.count_nonzero().item<long>());
            Assert.AreEqual(nonZero, stored);
            AssertPlanMatchesLibTorch(network, 28 * 28);

            // A dense network keeps its large layers on libtorch.
            using ClassifierNetwork dense = ClassifierNetwork.Create(network.Definition);
            CollectionAssert.AreEqual(new[] { "libtorch linear", "libtorch linear", "sparse linear" }, dense.CompiledForm()!.Steps.Select(s => s.Kind).ToArray());
        }

        [TestMethod]
        public void SparseConvolutionsOfAPrunedLeNet5ScoreAsTheModule()
        {
            torch.random.manual_seed(19);
            using ClassifierNetwork network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.LeNet5, new ImageShape(1, 28, 28), 10));
            ZeroMostWeights(network, keep: 0.2);
            InferencePlan plan = network.CompiledForm()!;
            CollectionAssert.AreEqual(new[] { "conv1+relu1+pool1", "conv2+relu2+pool2" }, plan.Steps.Where(s => s.Kind == "sparse conv2d").Select(s => s.Layers).ToArray());
            AssertPlanMatchesLibTorch(network, 28 * 28);
        }

        [TestMethod]
        public void OnePlanScoresFromManyThreadsAtOnce()
        {
            torch.random.manual_seed(23);
            using ClassifierNetwork network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.VggSmall, new ImageShape(1, 12, 12), 4, convolution: ConvolutionKind.Shift));
            float[] images = RandomImages(9, 144, seed: 1);
            var expected = new float[9 * 4];
            network.Predict(images, expected);
            var results = new float[8][];
            Parallel.For(0, results.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 }, t =>
            {
                var mine = new float[9 * 4];
                for (int repeat = 0; repeat < 5; repeat++)
                    network.Predict(images, mine);
                results[t] = mine;
            });
            foreach (float[] result in results)
                CollectionAssert.AreEqual(expected, result);
        }

        [TestMethod]
        public void ChangedWeightsAreScoredAfterTheCompiledFormIsReset()
        {
            torch.random.manual_seed(29);
            using ClassifierNetwork network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.LeNet300100, new ImageShape(1, 4, 4), 3));
            float[] images = RandomImages(2, 16, seed: 2);
            var before = new float[6];
            network.Predict(images, before);
            using (no_grad())
            {
                foreach (var (_, parameter) in network.NamedParameters())
                    parameter.mul_(2);
            }
            network.ResetCompiledForm();
            var after = new float[6];
            network.Predict(images, after);
            network.Backend = InferenceBackend.LibTorch;
            var reference = new float[6];
            network.Predict(images, reference);
            CollectionAssert.AreNotEqual(before, after);
            AssertClose(reference, after, "after the reset");
        }

        [TestMethod]
        public void BadInputIsRejectedWithItsPosition()
        {
            using ClassifierNetwork network = ClassifierNetwork.Create(Architectures.Create(ImageClassifierArchitecture.LeNet300100, new ImageShape(1, 4, 4), 3));
            float[] images = RandomImages(3, 16, seed: 3);
            images[16 + 5] = float.NaN;
            var probabilities = new float[9];
            var nan = Assert.ThrowsExactly<ArgumentException>(() => network.Predict(images, probabilities));
            StringAssert.Contains(nan.Message, "Image 1 has a non-finite value (NaN) at position 5");
            images[16 + 5] = 0;
            images[47] = float.PositiveInfinity;
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => network.Predict(images, probabilities)).Message, "Image 2");
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => network.Predict(new float[17], new float[3])).Message, "not a whole number");
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => network.Predict(new float[32], new float[3])).Message, "2 images need 6 probabilities");
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => network.Backend = (InferenceBackend)7);
        }

        /// <summary>The plan and the TorchSharp modules give the same probabilities at batch 1, at a small batch and at more
        /// than one pass of the plan.</summary>
        private static void AssertPlanMatchesLibTorch(ClassifierNetwork network, int imageSize)
        {
            int classes = network.Definition.Classes;
            foreach (int batch in new[] { 1, 5, InferencePlan.MaxPassImages + 3 })
            {
                float[] images = RandomImages(batch, imageSize, seed: batch);
                var compact = new float[batch * classes];
                var reference = new float[batch * classes];
                network.Backend = InferenceBackend.Compact;
                network.Predict(images, compact);
                network.Backend = InferenceBackend.LibTorch;
                network.Predict(images, reference);
                network.Backend = InferenceBackend.Compact;
                AssertClose(reference, compact, $"batch {batch}");
                Assert.IsGreaterThan(0.01, StandardDeviation(reference), "the comparison must not be between constants");
            }
        }

        private static void AssertClose(float[] expected, float[] actual, string what)
        {
            Assert.HasCount(expected.Length, actual, what);
            double worst = expected.Zip(actual, (e, a) => Math.Abs(e - a) / Math.Max(1, Math.Abs(e))).Max();
            Assert.IsLessThanOrEqualTo(Tolerance, worst, $"{what}: largest difference {worst}");
        }

        private static double StandardDeviation(float[] values)
        {
            double mean = values.Average();
            return Math.Sqrt(values.Average(v => (v - mean) * (v - mean)));
        }

        private static float[] RandomImages(int count, int size, int seed)
        {
            var random = new Random(seed);
            return Enumerable.Range(0, count * size).Select(_ => (float)random.NextDouble()).ToArray();
        }

        /// <summary>Zeroes all but a random <paramref name="keep"/> fraction of every weight matrix and kernel, scaling the
        /// rest up so that the outputs keep their spread.</summary>
        private static void ZeroMostWeights(ClassifierNetwork network, double keep)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            foreach (var (name, parameter) in network.NamedParameters())
            {
                if (name.EndsWith(".weight", StringComparison.Ordinal))
                    parameter.mul_((rand_like(parameter) < keep).to_type(ScalarType.Float32) * (2 / keep));
            }
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
